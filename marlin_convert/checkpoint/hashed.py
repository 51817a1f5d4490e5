"""Tensors made on other threads for the shard writer: whole ones with their sha256 already computed, big ones as
row blocks made ahead.

`Hashed` is a whole tensor hashed where it was made (a worker thread). `BlocksAhead` is a big tensor made
as row blocks (a streamed layout kernel): from the moment it is made (on a worker, for a layer read ahead), a
thread of its own makes the blocks ahead of the writer, which hashes them as it writes, so kernel and
hash + write run on two cores instead of one after the other, and the next layer's kernel runs while this
one is written; no more than `depth` blocks wait in memory per tensor.
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

__all__ = ["Hashed", "BlocksAhead", "tensor_bytes"]


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


class BlocksAhead:
    """Row blocks of one tensor, made on a thread of their own, at most `depth` ahead of the reader. Iterate
    once. An error in the maker is raised in the reader; a reader that goes away (an error elsewhere) stops
    the maker at its next block."""

    def __init__(self, blocks: Iterator[torch.Tensor], *, depth: int = 2):
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        weakref.finalize(self, self._stop.set)
        self._maker = threading.Thread(target=_make, args=(blocks, self._queue, self._stop),
                                       daemon=True, name="marlin-convert-blocks")
        self._maker.start()

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


def _make(blocks: Iterator[torch.Tensor], out: queue.Queue[Any], stop: threading.Event) -> None:
    """The maker thread (holds no reference to its BlocksAhead, so that one can be collected)."""

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
            if not put(block.contiguous()):
                return
        put(_DONE)
    except BaseException as e:  # handed to the reader, which raises it
        put(e)
