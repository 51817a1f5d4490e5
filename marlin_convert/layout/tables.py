"""Constant permutation tables of the Marlin int4 layout, built once at import (the dimensions: `dims`).

The tables follow IST-DASLab marlin `_get_perms()` (also vLLM `get_weight_perm(4)` and
optimum-quanto `_get_perm()`): the mma.m16n8k16 fragment layout of one warp, four 16x16
tiles per 16x64 block, and the `[0, 2, 4, 6, 1, 3, 5, 7]` interleave for the half2 dequant.
"""
from __future__ import annotations

import torch

from .dims import BLOCK_N, INTERLEAVE, MIN_K, SUPPORTED_GROUP_SIZES, TILE

__all__ = [
    "TILE",
    "BLOCK_N",
    "MIN_K",
    "SUPPORTED_GROUP_SIZES",
    "INTERLEAVE",
    "WEIGHT_PERM",
    "SCALE_PERM",
    "SCALE_PERM_SINGLE",
    "SCALE_PERM_INV",
    "SCALE_PERM_SINGLE_INV",
    "ZERO_PERM",
    "ZERO_PERM_INV",
]


def _build_weight_perm() -> list[int]:
    perm: list[int] = []
    for thread in range(32):
        col = thread // 4
        frag: list[int] = []
        for block in (0, 1):
            base_row = 2 * (thread % 4)
            for row in (base_row, base_row + 1, base_row + 8, base_row + 9):
                frag.append(16 * row + col + 8 * block)
        for j in range(4):
            perm.extend(p + 256 * j for p in frag)
    return [perm[8 * i + j] for i in range(len(perm) // 8) for j in INTERLEAVE]


def _inverse(perm: torch.Tensor) -> torch.Tensor:
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), dtype=perm.dtype)
    return inv


def _frozen(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


WEIGHT_PERM = _frozen(_build_weight_perm())
"""1024 entries: position i of a permuted 1024-run takes tile-ordered value WEIGHT_PERM[i]."""

SCALE_PERM = _frozen([i + 8 * j for i in range(8) for j in range(8)])
"""64 entries, applied to each run of 64 scales when the layer is grouped."""
SCALE_PERM_SINGLE = _frozen([2 * i + j for i in range(4) for j in (0, 1, 8, 9, 16, 17, 24, 25)])
"""32 entries, applied to each run of 32 scales when one group spans K."""
SCALE_PERM_INV = _inverse(SCALE_PERM)
SCALE_PERM_SINGLE_INV = _inverse(SCALE_PERM_SINGLE)

ZERO_PERM = _frozen(
    [int(SCALE_PERM[8 * i + j]) for i in range(8) for j in INTERLEAVE]
)
"""64 entries: the grouped scale permutation followed by the 8-way interleave (vLLM `marlin_zero_points`)."""
ZERO_PERM_INV = _inverse(ZERO_PERM)

assert sorted(WEIGHT_PERM.tolist()) == list(range(1024))
