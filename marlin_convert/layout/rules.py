"""The rules a layer must meet for the Marlin int4 layout, each written once.

Every rule has a reason form (`marlin_ineligibility`: why not, or None; formats use it to decide
what to copy) and a raising form (`check_*`: ShapeError with the same words; the backends use it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ShapeError
from .dims import BLOCK_N, MIN_K, SUPPORTED_GROUP_SIZES, TILE

if TYPE_CHECKING:
    import torch

__all__ = ["marlin_ineligibility", "check_shape", "check_codes", "check_words", "check_packed", "check_perm"]


def _dimension_problem(n: int, k: int, *, positive: bool) -> str | None:
    if positive and (n <= 0 or k <= 0):
        return f"empty layer (N={n}, K={k})"
    if n % BLOCK_N or (positive and n <= 0):
        return f"N={n} not a multiple of {BLOCK_N}"
    if k % MIN_K or (positive and k <= 0):
        return f"K={k} not a multiple of {MIN_K}"
    return None


def marlin_ineligibility(n: int, k: int, group_size: int = -1) -> str | None:
    """Why an `[n, k]` int4 layer with this group size cannot take the Marlin layout, or None if it can."""
    reason = _dimension_problem(n, k, positive=True)  # an empty layer is copied as it is
    if reason is not None:
        return reason
    if group_size not in SUPPORTED_GROUP_SIZES:
        return f"group size {group_size} not supported by Marlin (supported: {list(SUPPORTED_GROUP_SIZES)})"
    if group_size > 0 and k % group_size:
        return f"group size {group_size} does not divide K={k}"
    return None


def check_shape(n: int, k: int) -> None:
    """Raise `ShapeError` unless an `[n, k]` weight fits Marlin's tiles (n % 64 == 0, k % 128 == 0, both > 0)."""
    reason = _dimension_problem(n, k, positive=True)
    if reason is not None:
        raise ShapeError(reason)


def check_codes(codes: torch.Tensor) -> tuple[int, int]:
    """`(n, k)` of uint8 codes `[n, k]` of a Marlin-eligible shape, else ShapeError."""
    import torch

    if codes.dtype != torch.uint8 or codes.dim() != 2:
        raise ShapeError(f"codes must be a 2-D uint8 tensor, got {codes.dtype} {tuple(codes.shape)}")
    n, k = int(codes.shape[0]), int(codes.shape[1])
    check_shape(n, k)
    return n, k


def check_words(words: torch.Tensor) -> tuple[int, int]:
    """`(n, k)` of GPTQ-style k-packed words int32 `[k / 8, n]` of a Marlin-eligible shape, else ShapeError."""
    import torch

    if words.dtype != torch.int32 or words.dim() != 2:
        raise ShapeError(f"k-packed words must be a 2-D int32 tensor, got {words.dtype} {tuple(words.shape)}")
    n, k = int(words.shape[1]), 8 * int(words.shape[0])
    check_shape(n, k)
    return n, k


def check_packed(packed: torch.Tensor, n: int, k: int) -> None:
    """Raise ShapeError unless `packed` is the int32 `[k / 16, 2n]` Marlin weight of an eligible `[n, k]`."""
    import torch

    check_shape(n, k)
    if packed.dtype != torch.int32 or tuple(packed.shape) != (k // TILE, 2 * n):
        raise ShapeError(
            f"Marlin weight must be int32 {(k // TILE, 2 * n)} for N={n}, K={k}, got {packed.dtype} {tuple(packed.shape)}"
        )


def check_perm(perm: torch.Tensor, k: int, *, partial: bool = False) -> None:
    """Raise ShapeError unless `perm` (int32/int64, 1-D, any device) is a permutation of k rows, or with
    `partial` a run of 16 m < k rows of k. On a GPU this syncs once."""
    import torch

    m = perm.numel()
    ok_len = m == k or (partial and 0 < m < k and m % TILE == 0)
    if perm.dim() != 1 or not ok_len or perm.dtype not in (torch.int32, torch.int64):
        want = f"({k},)" + (f" or (16 m,) with 16 m < {k}" if partial else "")
        raise ShapeError(f"perm must be int32/int64 of shape {want}, got {perm.dtype} {tuple(perm.shape)}")
    if bool(((perm < 0) | (perm >= k)).any()):
        raise ShapeError(f"perm holds rows outside 0..{k - 1}")
    if m == k and not bool((torch.bincount(perm.to(torch.int64), minlength=k) == 1).all()):
        raise ShapeError(f"perm is not a permutation of {k} rows")
