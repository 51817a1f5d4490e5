"""Whole files hashed on threads of their own while the command goes on (source shards in pack, restored
shards in unpack), so that the whole-file sha256 costs no wall time of its own."""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..checkpoint.file_records import hash_file

__all__ = ["FileHashes"]


MAX_WORKERS = 4
"""Files hashed at once, at most: on one thread the source files' sha256 (about 1 GB/s with the reads) was
the longest chain of a GPU pack (4.7 s of a 5.4 s write for 4.9 GB on the H200's host, 2026-12-02)."""


def default_workers() -> int:
    """One per core, at most `MAX_WORKERS` (sha256 releases the GIL)."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


class FileHashes:
    """`add(path)` queues a file (or takes its (sha256, size) when already `known`, e.g. hashed as it was
    written); `result(path)` is its (sha256, size). On leaving the block with an error or an interruption,
    hashing stops at the next chunk rather than being waited for."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._pool = ThreadPoolExecutor(default_workers(), thread_name_prefix="marlin-convert-hash")
        self._futures: dict[Path, Future[tuple[str, int]]] = {}

    def add(self, path: Path, known: tuple[str, int] | None = None) -> None:
        if known is not None:
            done: Future[tuple[str, int]] = Future()
            self._futures[path] = done
            done.set_result(known)
            return
        self._futures[path] = self._pool.submit(hash_file, path, cancel=self._cancel)

    def result(self, path: Path) -> tuple[str, int]:
        return self._futures[path].result()

    def __enter__(self) -> FileHashes:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
