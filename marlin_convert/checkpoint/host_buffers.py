"""Host memory for tensor reads, reused within the process instead of freed and faulted in again.

Why: memory the process frees goes back to the kernel, and on a VM with free page reporting (virtio-balloon,
as on this project's 2-core CI machine) back to the host within about a second; touching it again then costs
the host's first touch, measured at 2.0-3.6 s of system time per GiB (`np.empty(1 GiB)` filled: 3.6 s the
first time, 0.1 s when the same memory is filled again at once, 2.3-3.2 s after a 1-10 s pause). A pack of
2 GB read every tensor into fresh memory: 2.5 s of system time and 524k page faults. Reads therefore go into
buffers from a process-wide pool; a buffer comes back to the pool when the last object over it (array,
tensor, memoryview) is gone, and the next read of that size reuses the warm pages.

Memory bound: the pool holds no more than the most bytes that were ever lent at once (idle buffers of other
sizes are freed first), so its peak is the peak the reads had without it.
"""
from __future__ import annotations

import ctypes
import threading
import weakref
from typing import Any

__all__ = ["ALIGN", "BufferPool", "take_buffer"]

ALIGN = 4096
"""Every buffer starts at this alignment; it is also direct_file's alignment of O_DIRECT offsets and lengths
(a multiple of any common logical block size)."""
_GRAIN = 1 << 16
"""Buffer sizes are rounded up to this, so sizes within 64 KiB share buffers."""


class BufferPool:
    """Aligned uint8 buffers, lent out and taken back when every view of them is gone; thread-safe."""

    def __init__(self) -> None:
        self._idle: dict[int, list[Any]] = {}
        self._idle_bytes = 0
        self._lent_bytes = 0
        self._most_lent = 0
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> memoryview:
        """A writable, `ALIGN`-aligned memoryview of `nbytes` bytes (contents undefined)."""
        import numpy as np

        if nbytes <= 0:
            return memoryview(bytearray(0))
        size = -(-nbytes // _GRAIN) * _GRAIN
        with self._lock:
            free = self._idle.get(size)
            chunk = free.pop() if free else None
            if chunk is not None:
                self._idle_bytes -= size
            self._lent_bytes += size
            self._most_lent = max(self._most_lent, self._lent_bytes)
            self._trim()
        if chunk is None:
            raw = np.empty(size + ALIGN, dtype=np.uint8)
            shift = -raw.ctypes.data % ALIGN
            chunk = raw[shift : shift + size]
        # The lease is a new object over the chunk's memory that every derived view keeps alive (numpy and torch
        # keep a reference to the exporting object), so its finalizer runs only when the last view is gone.
        lease = (ctypes.c_ubyte * nbytes).from_buffer(chunk)
        weakref.finalize(lease, self._give_back, chunk, size)
        return memoryview(lease).cast("B")

    def _give_back(self, chunk: Any, size: int) -> None:
        with self._lock:
            self._lent_bytes -= size
            self._idle.setdefault(size, []).append(chunk)
            self._idle_bytes += size
            self._trim()

    def _trim(self) -> None:
        """Free idle buffers (largest first) while lent + idle exceeds the most ever lent at once."""
        while self._idle_bytes and self._lent_bytes + self._idle_bytes > self._most_lent:
            size = max(s for s, chunks in self._idle.items() if chunks)
            self._idle[size].pop()
            self._idle_bytes -= size

    def stats(self) -> dict[str, int]:
        """Bytes lent now, idle in the pool, and the most ever lent at once."""
        with self._lock:
            return {"lent": self._lent_bytes, "idle": self._idle_bytes, "most_lent": self._most_lent}


_POOL = BufferPool()


def take_buffer(nbytes: int) -> memoryview:
    """A buffer from the process-wide pool (see `BufferPool.take`)."""
    return _POOL.take(nbytes)
