"""Pure tensor math of the Marlin int4 layout: no files, no formats.

`pack`/`unpack` pick the fastest available backend for the tensor's device; every backend gives
the same bytes as the reference in `pack_cpu`.
"""
from __future__ import annotations

import torch

from .nibbles import pack_nibbles, unpack_nibbles
from .pack_cpu import check_shape, pack_codes, unpack_codes
from .scales import pack_zeros, permute_scales, unpack_zeros, unpermute_scales, uses_single_scale_perm
from .tables import BLOCK_N, MIN_K, SUPPORTED_GROUP_SIZES, TILE

__all__ = [
    "pack",
    "unpack",
    "check_shape",
    "pack_codes",
    "pack_nibbles",
    "unpack_nibbles",
    "unpack_codes",
    "permute_scales",
    "unpermute_scales",
    "pack_zeros",
    "unpack_zeros",
    "uses_single_scale_perm",
    "TILE",
    "BLOCK_N",
    "MIN_K",
    "SUPPORTED_GROUP_SIZES",
]


def pack(codes: torch.Tensor) -> torch.Tensor:
    """Pack uint8 int4 codes `[n, k]` into Marlin int32 `[k / 16, 2n]` on `codes.device`. See `pack_codes`."""
    return pack_codes(codes)


def unpack(packed: torch.Tensor, *, n: int, k: int) -> torch.Tensor:
    """Marlin int32 `[k / 16, 2n]` back to uint8 codes `[n, k]`. See `unpack_codes`."""
    return unpack_codes(packed, n=n, k=k)
