"""Files written front to back, and big tensors read, past the page cache (O_DIRECT) where the filesystem allows it.

Why: copying into fresh page-cache pages was the largest single cost of `pack` on the 2-core VM we measure
on (buffered `pwrite` at 0.26-0.7 GB/s and 3-6 s of system time per 2 GB, depending on how recently the VM
had touched the memory), while O_DIRECT writes of aligned 8 MiB chunks ran at ~1.5 GB/s with almost no CPU
(BENCHMARKS.md, issue #15). Bytes are gathered in page-aligned 4 MiB buffers; each full one is written on a
background thread while the next fills (`IN_FLIGHT` writes at once, so the disk sees more than one request
and the writer does not wait on each); the last chunk is padded to the alignment and the file cut back to
its length. Where O_DIRECT is refused (tmpfs and some network or FUSE filesystems: EINVAL when opening or at
a write), the file goes through the page cache from that chunk on, with the same bytes.
`MARLIN_CONVERT_DIRECT_IO=0` turns it off, for reads too. A tensor of at least `DIRECT_READ_MIN` bytes whose
middle page is not cached (`in_page_cache`) is read the same way (`read_direct`): after an O_DIRECT pack, `verify` and `unpack`
read the output from the disk, and the page cache would cost them what it no longer costs pack.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import mmap
import os
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from ..stage_timers import stage
from .host_buffers import ALIGN, take_buffer

__all__ = ["SequentialFile", "ALIGN", "CHUNK", "IN_FLIGHT", "DIRECT_READ_MIN", "direct_io_enabled", "in_page_cache",
           "pwrite_all", "read_direct", "read_direct_hashed", "HASHED_READ_STEP", "ReadAsUsed", "read_direct_as_used",
           "hash_as_read"]

# ALIGN (from host_buffers, whose buffers start at it): offset, length and memory alignment of every O_DIRECT
# read and write, a multiple of any common logical block size.
CHUNK = 4 << 20
"""Bytes gathered before each O_DIRECT write (IN_FLIGHT + 1 buffers of it: 12 MiB)."""
IN_FLIGHT = 2
"""O_DIRECT writes under way at once (each from its own buffer; one more buffer fills meanwhile)."""
_GB = 1 << 30


def direct_io_enabled() -> bool:
    return hasattr(os, "O_DIRECT") and os.environ.get("MARLIN_CONVERT_DIRECT_IO", "1") != "0"


def _copy(dst: memoryview, src: memoryview) -> None:
    """dst[:] = src with the GIL released (numpy's copy loop; a memoryview assignment holds it)."""
    import numpy as np

    np.copyto(np.frombuffer(dst, dtype=np.uint8), np.frombuffer(src, dtype=np.uint8))


def pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    """All of `view` at `offset` (positioned writes of at most 1 GiB, as many as it takes)."""
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done : done + _GB], offset + done)


class SequentialFile:
    """A new file (truncated if it exists) written front to back with `write`; `finish` writes what is
    still gathered and waits for every write, `fsync` and `close` as for a plain file. `direct` says whether
    O_DIRECT is (still) in use; `direct=False` asks for the page cache (None and True: O_DIRECT unless the
    environment turns it off)."""

    def __init__(self, path: Path, *, direct: bool | None = None):
        self.path = path
        self.direct = direct_io_enabled() and direct is not False
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
        self._offset = 0  # file offset of the current buffer's first byte (or of the next buffered write)
        self._fill = 0
        self._buffers: list[mmap.mmap] = []
        self._pending: list[Future[None] | None] = []
        self._current = 0
        self._pool: ThreadPoolExecutor | None = None
        self._fallback = threading.Lock()
        if self.direct:
            self._buffers = [mmap.mmap(-1, CHUNK) for _ in range(IN_FLIGHT + 1)]
            self._pending = [None] * len(self._buffers)
            self._pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="marlin-convert-write")

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        return self._fd

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        if self._pool is None:
            pwrite_all(self._fd, view, self._offset)
            self._offset += len(view)
            return
        done = 0
        while done < len(view):
            n = min(CHUNK - self._fill, len(view) - done)
            with memoryview(self._buffers[self._current]) as buffer:
                _copy(buffer[self._fill : self._fill + n], view[done : done + n])
            self._fill += n
            done += n
            if self._fill == CHUNK:
                self._submit(CHUNK, CHUNK)

    def finish(self) -> None:
        """Write whatever is gathered (padded to the alignment; the file is then cut back to its length) and
        wait until every write is done; a write's error is raised here (or at a later `write`)."""
        if self._pool is None:
            return
        length = self._offset + self._fill
        if self._fill:
            padded = -(-self._fill // ALIGN) * ALIGN
            self._buffers[self._current][self._fill : padded] = bytes(padded - self._fill)
            self._submit(padded, self._fill)
        self._drain()
        os.ftruncate(self._fd, length)  # drop the padding (a no-op when the last chunk went through the cache)
        self._release()

    def fsync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file; writes still under way (a file being abandoned after an error) are waited for
        first, their errors dropped."""
        if self._pool is not None:
            try:
                self._drain()
            except OSError:
                pass
            self._release()
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _submit(self, length: int, real: int) -> None:
        """Write the current buffer's first `length` bytes at `_offset` on the pool, then move on to the next
        buffer (waiting for its previous write, if still under way)."""
        assert self._pool is not None
        index = self._current
        self._pending[index] = self._pool.submit(self._write_chunk, index, length, real, self._offset)
        self._offset += real
        self._fill = 0
        self._current = (index + 1) % len(self._buffers)
        waiting = self._pending[self._current]
        if waiting is not None:
            self._pending[self._current] = None
            waiting.result()

    def _write_chunk(self, index: int, length: int, real: int, offset: int) -> None:
        """On the pool: buffer `index` with O_DIRECT; if that is refused or cut short, its first `real` bytes
        (the rest of them) through the page cache, and every later chunk too (the flag is cleared on the file)."""
        with memoryview(self._buffers[index]) as view:
            done = 0
            if self.direct:
                try:
                    done = os.pwrite(self._fd, view[:length], offset)
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                if done >= length:
                    return
                self._stop_direct()
            if done < real:
                pwrite_all(self._fd, view[done:real], offset + done)

    def _stop_direct(self) -> None:
        """Clear O_DIRECT on the file, then `direct`, in that order and once: a chunk written beside this one
        that sees `direct` off goes through the page cache and must find the flag already cleared (with it
        still set, its unaligned tail was refused with EINVAL)."""
        with self._fallback:
            if self.direct:
                fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                self.direct = False

    def _drain(self) -> None:
        """Wait for every write under way; the first error is raised after all have finished."""
        error: BaseException | None = None
        for i, future in enumerate(self._pending):
            if future is not None:
                self._pending[i] = None
                try:
                    future.result()
                except BaseException as e:  # noqa: BLE001 - re-raised below, once all are done
                    error = error or e
        if error is not None:
            raise error

    def _release(self) -> None:
        """Give the buffers and the pool back (every write has finished: `_drain` came first)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for buffer in self._buffers:
            try:
                buffer.close()
            except BufferError:  # a view of it is still alive (an error's traceback): freed with that
                pass
        self._buffers = []


DIRECT_READ_MIN = 1 << 20
"""Tensors at least this large are read with O_DIRECT when their first page is not in the page cache."""


def in_page_cache(fd: int, offset: int) -> bool:
    """Whether the page holding byte `offset` of a file is in the page cache, asked with mincore(2) on a mapping
    of that one page, which reads nothing. (A one-byte RWF_NOWAIT read, used before, starts the kernel's
    read-ahead when it misses: up to read_ahead_kb, 8 MiB on the VM, brought into the page cache per probe,
    i.e. all of a 4096x4096 layer's tensor read twice.) True where that cannot be asked (not Linux, no libc)."""
    libc = _libc()
    if libc is None:
        return True
    page = mmap.PAGESIZE
    start = offset - offset % page
    addr = libc.mmap(None, page, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
    if addr is None or addr == _MAP_FAILED:
        return True
    try:
        vec = (ctypes.c_ubyte * 1)()
        if libc.mincore(ctypes.c_void_p(addr), page, vec) != 0:
            return True
        return bool(vec[0] & 1)
    finally:
        libc.munmap(ctypes.c_void_p(addr), page)


_MAP_FAILED = ctypes.c_void_p(-1).value


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    """The C library with mmap, mincore and munmap typed, or None where there is none to load."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def read_direct(fd: int, start: int, nbytes: int) -> memoryview | None:
    """`nbytes` at `start` of a file opened with O_DIRECT, read past the page cache into an aligned buffer of the
    process's pool (`host_buffers`): for data not cached, this spares the VM a fresh page-cache page and a copy per page
    (a cold 2 GB read: 0.1 s of system time against 1.3-2.3 s, BENCHMARKS.md). None when the read is refused
    (EINVAL) or comes back short of an alignment boundary: the caller reads through the page cache instead."""
    first, end, view = _direct_span(start, nbytes)
    with stage("read tensors (O_DIRECT)", nbytes):
        if not _read_into(fd, view, first, end, len(view), lambda done: None):
            return None
    return view[start - first : end - first]


HASHED_READ_STEP = 16 << 20
"""Bytes per O_DIRECT read of `read_direct_hashed` (each one is hashed while the next is read) and of
`read_direct_as_used` (each one handed out as it lands): 16 MiB reads ran as fast as one whole read, about
2.6 GB/s cold on the 2-core VM."""


def read_direct_hashed(fd: int, start: int, nbytes: int) -> tuple[memoryview, str] | None:
    """`read_direct` and the sha256 of the bytes, hashed here while a thread reads on, `HASHED_READ_STEP` bytes
    at a time: the hash costs little more than the read (a cold 117 MB tensor: 0.11-0.12 s against 0.18-0.20 s
    read, then hashed; BENCHMARKS.md). None as for `read_direct`."""
    import hashlib
    import queue

    first, end, view = _direct_span(start, nbytes)
    ready: queue.Queue[int | BaseException | None] = queue.Queue()

    def read() -> None:
        try:
            ready.put(None if not _read_into(fd, view, first, end, HASHED_READ_STEP, ready.put) else end - first)
        except BaseException as e:  # raised in the caller
            ready.put(e)

    digest = hashlib.sha256()
    hashed = lo = start - first
    with stage("read tensors (O_DIRECT, hashed as read)", nbytes):
        reader = threading.Thread(target=read, name="marlin-convert-direct-read", daemon=True)
        reader.start()
        while True:
            done = ready.get()
            if done is None or isinstance(done, BaseException):
                reader.join()
                if done is None:
                    return None
                raise done
            upto = min(done, end - first)
            if upto > hashed:
                digest.update(view[hashed:upto])
                hashed = upto
            if hashed == end - first:
                reader.join()
                return view[lo : end - first], digest.hexdigest()


class ReadAsUsed:
    """A tensor's bytes being read into their buffer on a thread, front to back: `wait(upto)` returns once its
    first `upto` bytes are there (and raises what the read raised)."""

    def __init__(self) -> None:
        self._done = 0
        self._error: BaseException | None = None
        self._changed = threading.Condition()

    def wait(self, upto: int) -> None:
        with self._changed:
            while self._done < upto and self._error is None:
                self._changed.wait()
            if self._error is not None:
                raise self._error

    def _set(self, done: int = 0, error: BaseException | None = None) -> None:
        with self._changed:
            self._done, self._error = max(self._done, done), error
            self._changed.notify_all()


def read_direct_as_used(fd: int, start: int, nbytes: int,
                        fallback: Callable[[memoryview], Any]) -> tuple[memoryview, ReadAsUsed]:
    """`read_direct`, with the caller going on at once: the bytes come back in their buffer, still being read
    (`HASHED_READ_STEP` at a time) on a thread, and `ReadAsUsed.wait` tells when a prefix is there, so a
    kernel that goes through the tensor front to back runs beside its read instead of after it. A refused
    read is done again through the page cache by `fallback(view)` (e.g. `read_bytes(..., into=view)`), the
    same bytes again where part of them had come already."""
    first, end, view = _direct_span(start, nbytes)
    lo = start - first
    progress = ReadAsUsed()

    def read() -> None:
        try:
            with stage("read tensors (O_DIRECT, as used)", nbytes):
                if not _read_into(fd, view, first, end, HASHED_READ_STEP, lambda done: progress._set(done - lo)):
                    fallback(view[lo : end - first])
            progress._set(nbytes)
        except BaseException as e:  # raised in whoever waits
            progress._set(error=e)

    _as_used_pool().submit(read)
    return view[lo : end - first], progress


def hash_as_read(view: memoryview, progress: ReadAsUsed) -> Future[str]:
    """The sha256 of `view` (from `read_direct_as_used`), computed on a thread of its own as its bytes land,
    `HASHED_READ_STEP` at a time: the hash, the read and whatever uses the bytes run side by side."""
    import hashlib

    def digest() -> str:
        sha = hashlib.sha256()
        with stage("sha256 read tensors (as read)", len(view)):
            for lo in range(0, len(view), HASHED_READ_STEP):
                hi = min(lo + HASHED_READ_STEP, len(view))
                progress.wait(hi)
                sha.update(view[lo:hi])
        return sha.hexdigest()

    return _as_used_pool("hash").submit(digest)


@functools.lru_cache(maxsize=None)
def _as_used_pool(job: str = "read") -> ThreadPoolExecutor:
    """One thread for the reads as used, one for their hashes (one big tensor at a time is what they serve)."""
    return ThreadPoolExecutor(1, thread_name_prefix=f"marlin-convert-{job}-as-used")


def _direct_span(start: int, nbytes: int) -> tuple[int, int, memoryview]:
    """(aligned first offset, end offset, a pool buffer from the one to the aligned end)."""
    first = start - start % ALIGN
    end = start + nbytes
    return first, end, take_buffer(-(-end // ALIGN) * ALIGN - first)


def _read_into(fd: int, view: memoryview, first: int, end: int, step: int, progress: Any) -> bool:
    """O_DIRECT reads into `view` from `first` on, `step` bytes at most each, until `end` is covered; `progress`
    gets the bytes done after each. False when refused (EINVAL) or short of an alignment boundary."""
    done = 0
    while first + done < end:
        try:
            got = os.preadv(fd, [view[done : done + step]], first + done)
        except OSError as e:
            if e.errno == errno.EINVAL:
                return False
            raise
        if got <= 0:
            return False  # the file ends early: the buffered read reports it
        done += got
        if done % ALIGN and first + done < end:
            return False
        progress(done)
    return True
