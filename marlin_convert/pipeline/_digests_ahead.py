"""A pass over a checkpoint's layer tensors, hashing them ahead of the command that reads them (pack: the
source's; verify: the output's and the source's), from the moment the checkpoint is open.

While torch is imported (1.3-2.5 s on one core of the 2-core CI machine) the other core would be idle; this
pass hashes the tensors there and on, in file order, one shard a thread. It takes only tensors that are in the
page cache: for one that is not, a second read from the disk would cost more than hashing it from the
command's own read. A tensor the pass has not reached by the time the command reads it is claimed by the
command, which hashes it from that read as before, and the pass skips it.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable

from ..checkpoint import Checkpoint
from ..checkpoint.chunked_hash import release_buffer

__all__ = ["DigestsAhead"]

MAX_WORKERS = 4
"""Shards hashed at once, at most (one per core below that)."""


class DigestsAhead:
    """`claim(name)`: the pass's Future for a tensor it has taken, else None, and the pass will not take it then.
    On leaving the block (an error, an interruption), the pass stops at its next chunk rather than being waited for."""

    def __init__(self, ckpt: Checkpoint, names: Iterable[str], *, workers: int = MAX_WORKERS):
        self._ckpt = ckpt
        self._lock = threading.Lock()
        self._taken: dict[str, Future[str] | None] = {}  # None: claimed by the command (hashed from its read)
        self._cancel = threading.Event()
        by_shard: dict[str, list[str]] = {}
        for name in sorted(names, key=lambda n: ckpt.info(n).start):
            by_shard.setdefault(ckpt.location[name][0], []).append(name)
        workers = max(1, min(workers, os.cpu_count() or 1, len(by_shard)))
        self._shards = deque(by_shard.values())
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="marlin-convert-sha-ahead")
        for _ in range(workers):
            self._pool.submit(self._work)

    def _work(self) -> None:
        """Shards one after another until none is left; then the thread's hashing buffer (`CHUNK` bytes) goes
        back rather than being held to the command's end (verify SRC OUT with both checkpoints cached peaks after
        its passes: 16 MiB less there). Once a thread, not once a shard: fresh pages are dear (`host_buffers`)."""
        try:
            while True:
                try:
                    names = self._shards.popleft()
                except IndexError:
                    return
                self._pass(names)
        finally:
            release_buffer()

    def _pass(self, names: list[str]) -> None:
        for name in names:
            if self._cancel.is_set():
                return
            if not self._ckpt.is_cached(name):
                continue
            with self._lock:
                if name in self._taken:
                    continue
                done: Future[str] = Future()
                self._taken[name] = done
            try:
                done.set_result(self._ckpt.hash_stored(name, cancel=self._cancel))
            except BaseException as e:  # raised where the digest is used
                done.set_exception(e)

    def claim(self, name: str) -> Future[str] | None:
        with self._lock:
            return self._taken.setdefault(name, None)

    def __enter__(self) -> DigestsAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
