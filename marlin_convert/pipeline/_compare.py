"""Byte comparisons for verify: a tensor, or a tensor made as row blocks, against the bytes it must equal."""
from __future__ import annotations

import hashlib
from typing import Any, Iterable

import numpy as np
import torch

from ..checkpoint.hashed import BlocksAhead, tensor_bytes
from ..formats import QuantizedLinear, trivial_g_idx
from ..stage_timers import stage, timed_iter

__all__ = ["same_bytes", "made_equals", "sha256_of", "same_dequant_inputs"]


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (a numpy compare on 8-byte lanes: ~10x `torch.equal` on big tensors)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    x, y = tensor_bytes(a), tensor_bytes(b)
    with stage("compare bytes", x.nbytes):
        if x.nbytes % 8 == 0:
            x, y = x.view(np.uint64), y.view(np.uint64)
        return bool(np.array_equal(x, y))


def made_equals(made: torch.Tensor | Iterable[torch.Tensor] | Any, expected: torch.Tensor) -> bool:
    """`made` (a whole tensor, or consecutive row blocks of one, as a streamed kernel gives them) has exactly
    the dtype, shape and bytes of `expected`; row blocks are compared as they come, so no whole copy is held."""
    if isinstance(made, torch.Tensor):
        return same_bytes(made, expected)
    row = 0
    for block in timed_iter("layout (streamed blocks)", made):
        rows = block.shape[0] if block.dim() else 0
        if block.dim() != expected.dim() or row + rows > expected.shape[0] or not same_bytes(block, expected[row : row + rows]):
            return False
        row += rows
    return row == expected.shape[0]


def sha256_of(made: torch.Tensor | Iterable[torch.Tensor]) -> str:
    """sha256 of a whole tensor or of consecutive row blocks of one, hashed here as a thread of their own
    makes them (`BlocksAhead`): the streamed kernel and the hash run on two cores instead of one after the
    other (verify OUT: one layer in hand at a time, which was all one core's work)."""
    digest = hashlib.sha256()
    blocks = None if isinstance(made, torch.Tensor) else BlocksAhead(iter(made))
    try:
        for block in [made] if blocks is None else blocks:
            raw = tensor_bytes(block)
            with stage("sha256 made tensors", raw.nbytes):
                digest.update(raw)
    finally:
        if blocks is not None:
            blocks.close()
    return digest.hexdigest()


def _float_bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().float().contiguous()


def _int_values(t: torch.Tensor | None, like: torch.Tensor | None, fill: int) -> torch.Tensor | None:
    if t is not None:
        return t.detach().cpu().to(torch.int64).contiguous()
    return None if like is None else torch.full(like.shape, fill, dtype=torch.int64)


def same_dequant_inputs(a: QuantizedLinear, b: QuantizedLinear) -> bool:
    """Two records of the same layer give bit-equal `dequantize` results when
    their codes are equal and every other input of `dequantize` is equal as it is read there: scales and
    shift as float32 bits, zero points (None: 8) and the group of each input row (None: k // group_size) as
    integers. The codes are not compared here: verify proves them equal from the bytes (ARCHITECTURE.md)."""
    if (a.n, a.k, a.group_size) != (b.n, b.k, b.group_size) or (a.shift is None) != (b.shift is None):
        return False
    ga = a.g_idx if a.g_idx is not None else trivial_g_idx(a.k, a.group_size)
    gb = b.g_idx if b.g_idx is not None else trivial_g_idx(b.k, b.group_size)
    pairs = [(_float_bits(a.scales), _float_bits(b.scales)), (_int_values(ga, None, 0), _int_values(gb, None, 0)),
             (_int_values(a.zeros, b.zeros, 8), _int_values(b.zeros, a.zeros, 8))]
    if a.shift is not None:
        pairs.append((_float_bits(a.shift), _float_bits(b.shift)))
    return all((x is None and y is None) or (x is not None and y is not None and same_bytes(x, y)) for x, y in pairs)
