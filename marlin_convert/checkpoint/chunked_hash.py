"""sha256 of a whole file or of a byte range of one, read in chunks into one reused buffer per thread."""
from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from ..errors import CheckpointError
from ..stage_timers import add as add_time, enabled as timers_on

__all__ = ["CHUNK", "hash_file", "hash_range", "release_buffer"]

CHUNK = 8 << 20
"""Bytes read per step, into one buffer per thread, reused for every file it hashes (fresh pages are dear on a
VM: `host_buffers`). Bigger than 1 MiB because pack hashes the source while torch is being imported, and each
step needs the GIL back twice (after the read, after the update): in a trial on the 2-core VM, 2 GB in 16 MiB
steps was hashed by the end of the import, 1 MiB steps took 0.4-1.1 s longer; 8 MiB keeps the per-thread
buffer at half of that."""
_buffers = threading.local()


def _hash_from(fd: int, start: int, nbytes: int | None, where: Path | str, cancel: threading.Event | None) -> tuple[str, int]:
    """(sha256, bytes) of `nbytes` bytes at `start` (None: up to the end of the file)."""
    buf = getattr(_buffers, "buf", None)
    if buf is None:
        buf = _buffers.buf = bytearray(CHUNK)
    view = memoryview(buf)
    digest = hashlib.sha256()
    done = 0
    while nbytes is None or done < nbytes:
        if cancel is not None and cancel.is_set():
            raise CheckpointError(f"{where}: hashing cancelled")
        want = CHUNK if nbytes is None else min(CHUNK, nbytes - done)
        got = os.preadv(fd, [view[:want]], start + done)
        if got <= 0:
            if nbytes is None:
                break
            raise CheckpointError(f"{where}: file truncated while reading")
        digest.update(view[:got])
        done += got
    return digest.hexdigest(), done


def release_buffer() -> None:
    """Drop this thread's buffer (a thread that hashes no more, e.g. a pass that has finished, gives its
    CHUNK bytes back before the command's peak)."""
    _buffers.__dict__.pop("buf", None)


def hash_file(path: Path) -> tuple[str, int]:
    """(sha256, size) of a whole file (bounded memory)."""
    t0 = time.perf_counter()
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            sha, size = _hash_from(fd, 0, None, path, None)
        finally:
            os.close(fd)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    if timers_on():
        add_time("sha256 whole files (+read)", time.perf_counter() - t0, size)
    return sha, size


def hash_range(fd: int, start: int, nbytes: int, where: str, *, cancel: threading.Event | None = None) -> str:
    """sha256 of `nbytes` bytes of an open file at `start` (`where` names it in errors); stops early, with a
    CheckpointError, once `cancel` is set (a run that failed or was interrupted does not wait for the hash)."""
    t0 = time.perf_counter()
    try:
        sha, _ = _hash_from(fd, start, nbytes, where, cancel)
    except OSError as e:
        raise CheckpointError(f"{where}: cannot read ({e.strerror or e})") from None
    if timers_on():
        add_time("sha256 tensors (pass ahead)", time.perf_counter() - t0, nbytes)
    return sha
