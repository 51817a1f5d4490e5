"""The torch reference of the Marlin int4 layout: vectorized torch ops that run on any device.

Tensors that are neither on the CPU (numpy kernels) nor on a GPU with Triton take this path; it is also
the plainest statement of the layout in the package (a gather of each 16x64 block, then nibble packing).
Arguments are trusted: `portable` checks them first.
"""
from __future__ import annotations

import torch

from .nibbles import pack_nibbles, unpack_nibbles
from .tables import BLOCK_N, TILE, WEIGHT_PERM

__all__ = ["pack_codes_torch", "unpack_codes_torch", "pack_kpacked_torch", "unpack_to_kpacked_torch"]


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


def pack_codes_torch(codes: torch.Tensor) -> torch.Tensor:
    """uint8 `[n, k]` -> int32 `[k/16, 2n]` on `codes.device`."""
    n, k = codes.shape
    # [n, k] -> [k/16 (tile row), n/64 (block), 64 (n in block), 16 (k in tile)]
    blocks = codes.reshape(n // BLOCK_N, BLOCK_N, k // TILE, TILE).permute(2, 0, 1, 3)
    blocks = blocks.reshape(k // TILE, n // BLOCK_N, BLOCK_N * TILE)
    ordered = blocks.index_select(2, _GATHER.to(codes.device))
    return pack_nibbles(ordered).reshape(k // TILE, 2 * n)


def unpack_codes_torch(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """int32 `[k/16, 2n]` -> uint8 `[n, k]` on `packed.device`."""
    ordered = unpack_nibbles(packed.reshape(k // TILE, n // BLOCK_N, 128))
    blocks = ordered.index_select(2, _SCATTER.to(packed.device))
    blocks = blocks.reshape(k // TILE, n // BLOCK_N, BLOCK_N, TILE).permute(1, 2, 0, 3)
    return blocks.reshape(n, k)


def _kpacked_codes_torch(words: torch.Tensor, k: int) -> torch.Tensor:
    """GPTQ words `[k/8, n]` -> uint8 codes `[n, k]` (the whole matrix)."""
    shifts = torch.arange(0, 32, 4, device=words.device, dtype=torch.int32)
    codes = (words.unsqueeze(1) >> shifts.view(1, 8, 1)) & 0xF  # [k/8, 8, n]
    return codes.reshape(k, -1).t().to(torch.uint8).contiguous()


def pack_kpacked_torch(words: torch.Tensor, perm: torch.Tensor | None) -> torch.Tensor:
    """GPTQ words `[k/8, n]` -> int32 `[len(perm)/16, 2n]`: the codes, Marlin row j taking source k `perm[j]`."""
    codes = _kpacked_codes_torch(words, 8 * int(words.shape[0]))
    if perm is not None:
        codes = codes[:, perm.to(words.device, torch.int64)]
    return pack_codes_torch(codes)


def unpack_to_kpacked_torch(packed: torch.Tensor, n: int, k: int, perm: torch.Tensor | None) -> torch.Tensor:
    """int32 `[k/16, 2n]` -> GPTQ words `[k/8, n]` in source row order."""
    codes = unpack_codes_torch(packed, n, k)
    if perm is not None:
        restored = torch.empty_like(codes)
        restored[:, perm.to(packed.device, torch.int64)] = codes
        codes = restored
    rows = codes.t().contiguous().reshape(k // 8, 8, n).transpose(1, 2).contiguous()  # [k/8, n, 8]
    return pack_nibbles(rows).reshape(k // 8, n)
