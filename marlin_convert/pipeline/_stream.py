"""The layer thread pool: layers are read and converted ahead on worker threads while one is written."""
from __future__ import annotations

import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable

import torch

from ..checkpoint import Hashed, ShardPlan
from ..checkpoint.hashed import BlocksAhead
from ..stage_timers import stage
from .plan import LayerTensor

__all__ = ["LayerStream", "layer_order", "read_ahead_budget", "hash_whole"]


class LayerStream:
    """Hands out the tensors of each layer, part by part, in write order.

    With `jobs > 1`, the next layers are read and converted on worker threads while the current
    one is written (torch, hashing and file reads release the GIL), so reading, converting and
    writing overlap. Read-ahead stops while the layers in hand would exceed `budget` bytes of
    source tensors (the current layer always proceeds), which bounds memory whatever the
    checkpoint size. The order of the output never depends on `jobs`.
    """

    def __init__(self, make: Callable[[str], dict[str, Any]], order: list[str], jobs: int,
                 sizes: dict[str, int] | None = None, budget: int | None = None):
        self._make = make
        self._order = order
        self._sizes = sizes or {}
        self._budget = budget
        self._position = {prefix: i for i, prefix in enumerate(order)}
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="marlin-convert") if jobs > 1 else None
        self._ahead = max(jobs, 1)
        self._submitted = 0
        self._futures: dict[str, Future[dict[str, torch.Tensor]]] = {}
        self._ready: dict[str, dict[str, torch.Tensor]] = {}
        self._makers: weakref.WeakSet[BlocksAhead] = weakref.WeakSet()  # stopped and waited for on close
        self._makers_lock = threading.Lock()

    def _made(self, prefix: str) -> dict[str, Any]:
        tensors = self._make(prefix)
        with self._makers_lock:
            self._makers.update(t for t in tensors.values() if isinstance(t, BlocksAhead))
        return tensors

    def take(self, prefix: str, part: str) -> torch.Tensor:
        tensors = self._ready.get(prefix)
        if tensors is None:
            tensors = self._ready[prefix] = self._produce(prefix)
        tensor = tensors.pop(part)
        if not tensors:
            del self._ready[prefix]
        return tensor

    def _produce(self, prefix: str) -> dict[str, torch.Tensor]:
        if self._pool is None:
            return self._made(prefix)
        here = self._position[prefix]
        limit = min(here + self._ahead, len(self._order))
        while self._submitted < limit:
            name = self._order[self._submitted]
            if self._submitted > here and self._budget is not None:
                in_hand = sum(self._sizes.get(p, 0) for p in self._order[here : self._submitted + 1])
                if in_hand > self._budget:
                    break
            self._futures[name] = self._pool.submit(self._made, name)
            self._submitted += 1
        with stage("wait: layer from workers"):
            return self._futures.pop(prefix).result()

    def close(self) -> None:
        """Stop the workers, then every block maker a layer started (handed out or still in hand: they start
        as soon as their layer is made), so that no thread is left running a kernel."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        with self._makers_lock:
            makers = list(self._makers)
        for maker in makers:
            maker.close()

    def __enter__(self) -> LayerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hash_whole(outs: dict[str, Any]) -> dict[str, Any]:
    """Hash whole output tensors where they are made (a worker thread), so the writer only writes them;
    streamed row blocks are made on a thread of their own, a few blocks ahead of the writer, which hashes
    them as it writes (the maker's chain, kernel then hash, was the longest of a CPU pack; split this way the
    kernel and the hash run on the two cores: 2 GB at 28672x8192, 5.44-5.96 s against 5.81-5.94 s
    alternating on the 2-core VM)."""
    return {k: Hashed.of(v) if isinstance(v, torch.Tensor) else BlocksAhead(v) for k, v in outs.items()}


def layer_order(shards: list[ShardPlan]) -> list[str]:
    """Layer prefixes in the order their first tensor is written."""
    return list(dict.fromkeys(e.key.prefix for s in shards for e in s.entries if isinstance(e.key, LayerTensor)))


READ_AHEAD_FLOOR = 64 << 20
"""Read-ahead never stops below this many bytes of layer tensors in hand: with small layers (a 4096 x 4096
layer's sources are 8.4 MB) a budget of 1.5x the largest tensor held one layer at a time, so reading, kernel
and writing ran one after the other (issue #15: 2 GB packed in 8.0-9.3 s with it, 6.2-6.9 s with 32 MiB), and
verify, which holds a layer's Marlin and source tensors (16.8 MB), still ran one layer at a time at 32 MiB
(one core busy: `verify SRC OUT` of 2 GB 13.1-13.6 s, 11.3-11.8 s at 64 MiB)."""


def read_ahead_budget(tensor_sizes: Iterable[int]) -> int:
    """Bytes of layer sources in hand at once: 1.5x the largest tensor, so that with the streamed
    output blocks peak memory stays under 2x the largest tensor above the interpreter's, but at least
    `READ_AHEAD_FLOOR`, a fixed cost that only layers smaller than ~43 MB reach."""
    return max(int(1.5 * max(tensor_sizes, default=0)), READ_AHEAD_FLOOR)
