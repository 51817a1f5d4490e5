"""A file written front to back that bypasses the page cache (O_DIRECT) where the filesystem allows it.

Why: copying into fresh page-cache pages was the largest single cost of `pack` on the 2-core VM we measure
on (buffered `pwrite` at 0.26-0.7 GB/s and 3-6 s of system time per 2 GB, depending on how recently the VM
had touched the memory), while O_DIRECT writes of aligned 8 MiB chunks ran at ~1.5 GB/s with almost no CPU
(BENCHMARKS.md, issue #15). Bytes are gathered in one page-aligned staging buffer and written a chunk at a
time; the last chunk is padded to the alignment and the file cut back to its length. Where O_DIRECT is
refused (tmpfs and some network or FUSE filesystems: EINVAL when opening or at a write), the file goes
through the page cache from that offset on, with the same bytes. `MARLIN_CONVERT_DIRECT_IO=0` turns it off.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
from pathlib import Path
from typing import Any

from ..stage_timers import stage

__all__ = ["SequentialFile", "ALIGN", "CHUNK", "direct_io_enabled"]

ALIGN = 4096
"""Offset, length and memory alignment of every O_DIRECT write (a multiple of any common logical block size)."""
CHUNK = 8 << 20
"""Bytes gathered before each O_DIRECT write."""
_GB = 1 << 30


def direct_io_enabled() -> bool:
    return hasattr(os, "O_DIRECT") and os.environ.get("MARLIN_CONVERT_DIRECT_IO", "1") != "0"


def _copy(dst: memoryview, src: memoryview) -> None:
    """dst[:] = src with the GIL released (numpy's copy loop; a memoryview assignment holds it)."""
    import numpy as np

    np.copyto(np.frombuffer(dst, dtype=np.uint8), np.frombuffer(src, dtype=np.uint8))


class SequentialFile:
    """A new file (truncated if it exists) written front to back with `write`; `finish` writes what is
    still gathered, `fsync` and `close` as for a plain file. `direct` says whether O_DIRECT is in use.
    With `hashed`, the whole file's sha256 is computed from the bytes as they are written (`digest()`
    after `finish`), so a file written past the page cache need not be read back from the disk to be hashed."""

    def __init__(self, path: Path, *, direct: bool | None = None, hashed: bool = False):
        self.path = path
        self._sha = hashlib.sha256() if hashed else None
        self._size = 0
        self.direct = direct_io_enabled() if direct is None else direct
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        self._fd = -1
        if self.direct:
            try:
                self._fd = os.open(path, flags | os.O_DIRECT, 0o666)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self.direct = False
        if self._fd < 0:
            self._fd = os.open(path, flags, 0o666)
        self._offset = 0  # file offset of the staging buffer's first byte (or of the next buffered write)
        self._fill = 0
        self._buffer = mmap.mmap(-1, CHUNK) if self.direct else None
        self._view = memoryview(self._buffer) if self._buffer is not None else None

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        return self._fd

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        if self._sha is not None:
            with stage("sha256 whole files (as written)", len(view)):
                self._sha.update(view)
        self._size += len(view)
        done = 0
        while done < len(view):
            if self._view is None:
                self._pwrite_all(view[done:], self._offset)
                self._offset += len(view) - done
                return
            n = min(CHUNK - self._fill, len(view) - done)
            _copy(self._view[self._fill : self._fill + n], view[done : done + n])
            self._fill += n
            done += n
            if self._fill == CHUNK:
                self._flush(CHUNK)

    def finish(self) -> None:
        """Write whatever is gathered (padded to the alignment, then the file cut back to its length)."""
        if self._view is None or self._fill == 0:
            self._release()
            return
        length = self._offset + self._fill
        padded = -(-self._fill // ALIGN) * ALIGN
        self._view[self._fill : padded] = bytes(padded - self._fill)
        if self._flush(padded, real=self._fill):
            os.ftruncate(self._fd, length)
        self._release()

    def digest(self) -> tuple[str, int]:
        """(sha256, size) of everything written (only with `hashed`)."""
        if self._sha is None:
            raise RuntimeError("internal: SequentialFile made without hashed=True")
        return self._sha.hexdigest(), self._size

    def fsync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        self._release()
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _flush(self, length: int, *, real: int | None = None) -> bool:
        """Write the first `length` gathered bytes at `_offset` with O_DIRECT; if that is refused, the first
        `real` (default `length`) through the page cache. True when the O_DIRECT write went through."""
        assert self._view is not None
        real = length if real is None else real
        try:
            done = os.pwrite(self._fd, self._view[:length], self._offset)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            done = 0
        if done < length:  # refused or cut short: the rest, and every later write, go through the page cache
            self._to_buffered()
            if done < real:
                self._pwrite_all(self._view[done:real], self._offset + done)
            self._offset += real
            self._fill = 0
            self._release()
            return False
        self._offset += real
        self._fill = 0
        return True

    def _to_buffered(self) -> None:
        fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        self.direct = False

    def _pwrite_all(self, view: memoryview, offset: int) -> None:
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done : done + _GB], offset + done)

    def _release(self) -> None:
        """Give the staging buffer back (what is still gathered is dropped: `finish` has written it, or the
        file is being abandoned); later writes, if any, go through the page cache."""
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._buffer is not None:
            buffer, self._buffer = self._buffer, None
            try:
                buffer.close()
            except BufferError:  # a view of it is still alive (an error's traceback): freed with that
                pass
