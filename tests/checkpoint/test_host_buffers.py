"""The pool of reused read buffers: a buffer is lent again only once nothing can see it any more."""
from __future__ import annotations

import gc

import numpy as np
import torch

from marlin_convert.checkpoint.host_buffers import ALIGN, BufferPool


def _address(view: memoryview) -> int:
    return np.frombuffer(view, dtype=np.uint8).ctypes.data


def test_buffer_is_aligned_writable_and_of_the_asked_size():
    pool = BufferPool()
    for n in (1, 4095, 4096, 100_000, 3 << 20):
        view = pool.take(n)
        assert len(view) == n and not view.readonly
        assert _address(view) % ALIGN == 0
        view[-1] = 7
        assert view[-1] == 7


def test_a_buffer_seen_by_a_tensor_is_not_lent_again_until_the_tensor_is_gone():
    pool = BufferPool()
    view = pool.take(1 << 20)
    first = _address(view)
    tensor = torch.frombuffer(view[16:], dtype=torch.int32)  # a view of a view, then a tensor of it
    tensor.fill_(0x12345678)
    del view
    gc.collect()
    other = pool.take(1 << 20)
    second = _address(other)
    assert second != first  # still in use by `tensor`
    other[:] = b"\x00" * len(other)
    assert int(tensor[0]) == 0x12345678 and int(tensor[-1]) == 0x12345678
    del tensor, other
    gc.collect()
    again = pool.take(1 << 20)
    assert _address(again) in {first, second}  # reused, not fresh
    assert pool.stats()["lent"] == len(again)


def test_a_released_buffer_is_reused_for_the_same_size():
    pool = BufferPool()
    view = pool.take(5 << 20)
    first = _address(view)
    del view
    gc.collect()
    assert _address(pool.take(5 << 20)) == first


def test_idle_buffers_never_exceed_the_most_lent_at_once():
    pool = BufferPool()
    sizes = [1 << 20, 3 << 20, 2 << 20, 5 << 20, 1 << 20]
    for i, n in enumerate(sizes):  # one at a time: at most the largest so far is ever lent
        view = pool.take(n)
        del view
        gc.collect()
        stats = pool.stats()
        assert stats["lent"] == 0
        assert stats["idle"] <= stats["most_lent"] == max(sizes[: i + 1])
