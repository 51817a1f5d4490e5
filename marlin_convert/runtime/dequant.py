"""Dense weights from a layer's Marlin tensors (DESIGN §5), with the public layout functions only.

`W[n, k] = (code - zero) * s` (zero 8, or `z`), or `code * s - shift` for optimum-quanto layers, computed
in float32 with the same float operations as `formats.dequantize`, so the result is bit-equal to the
source checkpoint's dequantized weights (every producer's formula is one multiply, or one multiply and one
subtract, of exactly representable values).
"""
from __future__ import annotations

import torch

from ..layout import unpack, unpack_zeros, unpermute_scales

__all__ = ["dequantize_marlin"]


def dequantize_marlin(B: torch.Tensor, s: torch.Tensor, *, n: int, k: int, group_size: int,
                      z: torch.Tensor | None = None, shift: torch.Tensor | None = None,
                      perm: torch.Tensor | None = None, g_idx: torch.Tensor | None = None) -> torch.Tensor:
    """Float32 `[n, k]` weights in the source's row order, on `B.device`.

    Args:
        B: int32 `[k/16, 2n]`; s: `[g, n]` Marlin-permuted scales; z: int32 `[g, n/8]` zero points;
        shift: `[g, n]` Marlin-permuted float shifts; perm, g_idx: int32 `[k]` (act-order layers).
    """
    codes = unpack(B.contiguous(), n=n, k=k)  # [n, k], columns in Marlin row order (perm order when act-order)
    scales = unpermute_scales(s, group_size=group_size, k=k).float()  # [g, n]
    if g_idx is not None:
        groups = g_idx.to(device=B.device, dtype=torch.int64)
    elif group_size == -1 or group_size >= k:
        groups = torch.zeros(k, dtype=torch.int64, device=B.device)
    else:
        groups = torch.arange(k, device=B.device) // group_size
    if perm is not None:  # put the columns back in the source's order
        natural = torch.empty_like(codes)
        natural[:, perm.to(device=B.device, dtype=torch.int64)] = codes
        codes = natural
    s_nk = scales.t().index_select(1, groups)
    q = codes.float()
    if shift is not None:
        return s_nk * q - unpermute_scales(shift, group_size=group_size, k=k).float().t().index_select(1, groups)
    zero = unpack_zeros(z).float().t().index_select(1, groups) if z is not None else 8.0
    return (q - zero) * s_nk
