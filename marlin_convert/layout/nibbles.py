"""Packing of 4-bit values into little-endian int32 words and back (8 values a word, value i at bits 4i..4i+3)."""
from __future__ import annotations

import sys

import torch

__all__ = ["pack_nibbles", "unpack_nibbles"]

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("marlin_convert needs a little-endian host")


def pack_nibbles(values: torch.Tensor) -> torch.Tensor:
    """Pack uint8 values in [0, 15] along the last dim, 8 per int32.

    Args:
        values (`torch.uint8`, shape `(..., 8 * w)`): one 4-bit value per byte.
    Returns: `torch.int32`, shape `(..., w)`; value `8 * j + i` sits in bits `4i..4i+3` of word j.
    Example:
        >>> v = torch.randint(0, 16, (3, 16), dtype=torch.uint8)
        >>> assert torch.equal(unpack_nibbles(pack_nibbles(v)), v)
    """
    if values.dtype != torch.uint8 or values.shape[-1] % 8:
        raise ValueError(f"pack_nibbles needs uint8 with a last dim divisible by 8, got {values.dtype} {tuple(values.shape)}")
    pairs = values.reshape(*values.shape[:-1], -1, 2)
    packed_bytes = pairs[..., 0] | (pairs[..., 1] << 4)
    return packed_bytes.contiguous().view(torch.int32)


def unpack_nibbles(words: torch.Tensor) -> torch.Tensor:
    """Undo `pack_nibbles`: int32 `(..., w)` to uint8 `(..., 8 * w)`, values in [0, 15]."""
    if words.dtype != torch.int32:
        raise ValueError(f"unpack_nibbles needs int32 words, got {words.dtype}")
    raw = words.contiguous().view(torch.uint8)
    return torch.stack((raw & 0xF, raw >> 4), dim=-1).reshape(*raw.shape[:-1], raw.shape[-1] * 2)
