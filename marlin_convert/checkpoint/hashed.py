"""Tensors that come with their sha256 already computed, so that the shard writer only writes.

`Hashed` is a whole tensor hashed where it was made (a worker thread). `HashedBlocks` is a big tensor made
as row blocks (a streamed layout kernel): from the moment it is made (on a worker, for a layer read ahead), a
thread of its own makes and hashes the blocks ahead of the writer, so kernel, hash and write overlap instead
of running one after the other on the writer's thread, and the next layer's kernel runs while this one is
written; no more than `depth` blocks wait in memory per tensor.
"""
from __future__ import annotations

import hashlib
import queue
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from ..stage_timers import stage, timed_iter

if TYPE_CHECKING:
    import torch

__all__ = ["Hashed", "HashedBlocks", "tensor_bytes"]


def tensor_bytes(tensor: torch.Tensor) -> Any:
    """The bytes of a CPU tensor as a numpy view (no copy when it is contiguous)."""
    import torch

    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


@dataclass(frozen=True)
class Hashed:
    """A whole tensor with its sha256 already computed (e.g. on a worker thread), so the writer only writes."""

    tensor: torch.Tensor
    sha256: str

    @staticmethod
    def of(tensor: torch.Tensor) -> Hashed:
        tensor = tensor.contiguous()
        with stage("sha256 made tensors", tensor.nbytes):
            return Hashed(tensor, hashlib.sha256(tensor_bytes(tensor)).hexdigest())


_DONE = object()


class HashedBlocks:
    """Row blocks of one tensor, made and hashed on a thread of their own, at most `depth` ahead of the
    reader. Iterate once; `sha256` is known after the last block (unless `hashed` is off). An error in the maker is raised in the
    reader; a reader that goes away (an error elsewhere) stops the maker at its next block."""

    def __init__(self, blocks: Iterator[torch.Tensor], *, depth: int = 2, hashed: bool = True):
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._digest: list[str] = []
        self.hashed = hashed
        weakref.finalize(self, self._stop.set)
        self._maker = threading.Thread(target=_make, args=(blocks, self._queue, self._stop, self._digest, hashed),
                                       daemon=True, name="marlin-convert-blocks")
        self._maker.start()

    @property
    def sha256(self) -> str:
        if not self._digest:
            raise RuntimeError("internal: HashedBlocks read before its last block")
        return self._digest[0]

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            with stage("wait: streamed blocks"):
                item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop the maker after its current block and wait for it: a maker still running torch or numpy code
        when the interpreter exits (a daemon thread) can abort the process ("terminate called without an
        active exception"), which a disk-full pack once did with layers read ahead."""
        self._stop.set()
        if self._maker.is_alive() and self._maker is not threading.current_thread():
            self._maker.join()


def _make(blocks: Iterator[torch.Tensor], out: queue.Queue[Any], stop: threading.Event, digest: list[str],
          hashed: bool) -> None:
    """The maker thread (holds no reference to its HashedBlocks, so that one can be collected)."""
    sha = hashlib.sha256()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    try:
        for block in timed_iter("layout (streamed blocks)", blocks):
            block = block.contiguous()
            if hashed:
                with stage("sha256 made tensors", block.nbytes):
                    sha.update(tensor_bytes(block))
            if not put(block):
                return
        digest.append(sha.hexdigest())
        put(_DONE)
    except BaseException as e:  # handed to the reader, which raises it
        put(e)
