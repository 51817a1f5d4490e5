"""AutoGPTQ's int32 word packing, restated (numpy loops, or the same steps as torch ops for the GPU benchmark)."""
from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

__all__ = ["pack_rows", "pack_cols"]

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def pack_rows(q: Array) -> Array:
    """AutoGPTQ qweight: 4-bit values `[R, C]` -> int32 `[R/8, C]`, 8 consecutive rows per word, row `8r + i`
    in bits `4i .. 4i+3` of row r. For a weight's codes `[N, K]`, pass `codes.T`. Numpy in, numpy out; a torch
    tensor (any device) in, a torch tensor out."""
    if isinstance(q, torch.Tensor):
        wide = q.to(torch.int64)
        words = torch.zeros((q.shape[0] // 8, q.shape[1]), dtype=torch.int64, device=q.device)
        for i in range(8):
            words |= wide[i::8] << (4 * i)
        return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    out = np.zeros((q.shape[0] // 8, q.shape[1]), dtype=np.uint32)
    for i in range(8):
        out |= q[i::8, :].astype(np.uint32) << (4 * i)
    return out.view(np.int32)


def pack_cols(z: np.ndarray) -> np.ndarray:
    """AutoGPTQ qzeros: 4-bit values `[G, N]` -> int32 `[G, ceil(N/8)]`, 8 consecutive columns per word."""
    g, n = z.shape
    pad = (-n) % 8
    z = np.pad(z, ((0, 0), (0, pad)))
    out = np.zeros((g, z.shape[1] // 8), dtype=np.uint32)
    for i in range(8):
        out |= (z[:, i::8].astype(np.uint32) & 0xF) << (4 * i)
    return out.view(np.int32)
