"""Marlin permutations of per-group scales (and float shifts) and of zero points."""
from __future__ import annotations

import torch

from ..errors import ShapeError
from .nibbles import pack_nibbles, unpack_nibbles
from .tables import (
    SCALE_PERM,
    SCALE_PERM_INV,
    SCALE_PERM_SINGLE,
    SCALE_PERM_SINGLE_INV,
    ZERO_PERM,
    ZERO_PERM_INV,
)

__all__ = ["uses_single_scale_perm", "permute_scales", "unpermute_scales", "pack_zeros", "unpack_zeros"]


def uses_single_scale_perm(*, group_size: int, k: int) -> bool:
    """True when one group spans K (group_size -1 or >= k): Marlin then uses the 32-entry permutation."""
    return group_size == -1 or group_size >= k


_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _permute_runs(t: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    if t.dim() != 2 or t.shape[1] % perm.numel():
        raise ShapeError(f"scales must be 2-D [G, N] with N a multiple of {perm.numel()}, got {tuple(t.shape)}")
    runs = t.reshape(-1, perm.numel())
    bits = _SAME_SIZE_INT.get(t.element_size())
    if t.device.type != "cpu" or bits is None:
        return runs.index_select(1, perm.to(t.device)).reshape(t.shape)
    # On the CPU, numpy's take on the bits (numpy has no bfloat16): 0.8 ms for a [64, 28672] fp16 tensor against
    # 4.1 ms for torch's index_select on one thread, and py-spy had found that one at 0.5 s of an unpack of 2 GB.
    import numpy as np

    moved = np.take(runs.contiguous().view(bits).numpy(), perm.numpy(), axis=1)
    return torch.from_numpy(moved).view(t.dtype).reshape(t.shape)


def permute_scales(scales: torch.Tensor, *, group_size: int, k: int) -> torch.Tensor:
    """Marlin order of scales `[G, N]` (any dtype): each run of 64 (32 if one group spans K) is permuted."""
    single = uses_single_scale_perm(group_size=group_size, k=k)
    return _permute_runs(scales, SCALE_PERM_SINGLE if single else SCALE_PERM)


def unpermute_scales(scales: torch.Tensor, *, group_size: int, k: int) -> torch.Tensor:
    """Undo `permute_scales`."""
    single = uses_single_scale_perm(group_size=group_size, k=k)
    return _permute_runs(scales, SCALE_PERM_SINGLE_INV if single else SCALE_PERM_INV)


def pack_zeros(zeros: torch.Tensor) -> torch.Tensor:
    """Marlin zero points: uint8 `[G, N]` true zeros -> int32 `[G, N / 8]` (vLLM `marlin_zero_points`)."""
    if zeros.dtype != torch.uint8:
        raise ShapeError(f"zero points must be uint8, got {zeros.dtype}")
    return pack_nibbles(_permute_runs(zeros, ZERO_PERM))


def unpack_zeros(packed: torch.Tensor) -> torch.Tensor:
    """Undo `pack_zeros`: int32 `[G, N / 8]` -> uint8 `[G, N]`."""
    return _permute_runs(unpack_nibbles(packed), ZERO_PERM_INV)
