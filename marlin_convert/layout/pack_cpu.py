"""Reference pack/unpack of int4 codes to/from Marlin tiles, in vectorized torch ops.

Runs on any device torch supports; it is the CPU path and the reference the CUDA path must match.
"""
from __future__ import annotations

import torch

from ..errors import ShapeError
from .nibbles import pack_nibbles, unpack_nibbles
from .tables import BLOCK_N, MIN_K, TILE, WEIGHT_PERM

__all__ = ["check_shape", "pack_codes", "unpack_codes"]


def _block_gather_index() -> torch.Tensor:
    """Index into one 16x64 block stored as `[64 (n), 16 (k)]` giving the Marlin order of its 1024 codes.

    The seed orders a block as 4 tiles x 16 k-rows x 16 n-columns (`t*256 + r*16 + c`), then permutes
    with `WEIGHT_PERM`; here both steps are folded into one gather from the `[n, k]` block.
    """
    tile_order = WEIGHT_PERM
    tile, rest = tile_order // 256, tile_order % 256
    row_k, col_n = rest // 16, rest % 16
    return (16 * tile + col_n) * TILE + row_k


_GATHER = _block_gather_index()
_SCATTER = torch.empty_like(_GATHER)
_SCATTER[_GATHER] = torch.arange(_GATHER.numel())


def check_shape(n: int, k: int) -> None:
    """Raise `ShapeError` unless an `[n, k]` weight fits Marlin's tiles (n % 64 == 0, k % 128 == 0)."""
    if n <= 0 or n % BLOCK_N:
        raise ShapeError(f"N={n} not a multiple of {BLOCK_N}")
    if k <= 0 or k % MIN_K:
        raise ShapeError(f"K={k} not a multiple of {MIN_K}")


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """Pack int4 codes into the Marlin tile layout.

    Args:
        codes (`torch.uint8`, shape `(n, k)`, as `nn.Linear.weight`): values in [0, 15].
    Returns: `torch.int32`, shape `(k // 16, 2 * n)`, on `codes.device`.
    Raises: ShapeError when n % 64 or k % 128 is not 0, or codes is not uint8.
    Example:
        >>> q = torch.randint(0, 16, (256, 128), dtype=torch.uint8)
        >>> assert torch.equal(unpack_codes(pack_codes(q), n=256, k=128), q)
    """
    if codes.dtype != torch.uint8 or codes.dim() != 2:
        raise ShapeError(f"codes must be a 2-D uint8 tensor, got {codes.dtype} {tuple(codes.shape)}")
    n, k = codes.shape
    check_shape(n, k)
    # [n, k] -> [k/16 (tile row), n/64 (block), 64 (n in block), 16 (k in tile)]
    blocks = codes.reshape(n // BLOCK_N, BLOCK_N, k // TILE, TILE).permute(2, 0, 1, 3)
    blocks = blocks.reshape(k // TILE, n // BLOCK_N, BLOCK_N * TILE)
    ordered = blocks.index_select(2, _GATHER.to(codes.device))
    return pack_nibbles(ordered).reshape(k // TILE, 2 * n)


def unpack_codes(packed: torch.Tensor, *, n: int, k: int) -> torch.Tensor:
    """Undo `pack_codes`: Marlin tiles back to one int4 code per byte.

    Args:
        packed (`torch.int32`, shape `(k // 16, 2 * n)`): Marlin-ordered codes, 8 per int32.
        n, k (`int`): out/in features.
    Returns: `torch.uint8`, shape `(n, k)`, values in [0, 15], on `packed.device`.
    Raises: ShapeError when the shape does not match n and k.
    """
    check_shape(n, k)
    if packed.dtype != torch.int32 or tuple(packed.shape) != (k // TILE, 2 * n):
        raise ShapeError(
            f"Marlin weight must be int32 {(k // TILE, 2 * n)} for N={n}, K={k}, got {packed.dtype} {tuple(packed.shape)}"
        )
    ordered = unpack_nibbles(packed.reshape(k // TILE, n // BLOCK_N, 128))
    blocks = ordered.index_select(2, _SCATTER.to(packed.device))
    blocks = blocks.reshape(k // TILE, n // BLOCK_N, BLOCK_N, TILE).permute(1, 2, 0, 3)
    return blocks.reshape(n, k)
