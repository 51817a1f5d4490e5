"""Packing of 4-bit values into little-endian int32 words and back (8 values a word, value i at bits 4i..4i+3).

CPU tensors go through numpy word arithmetic on cache-sized slices (64-bit lanes, no byte gathers);
other devices use the torch ops. Both give the same bytes, for any uint8 input.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from ..errors import ShapeError

__all__ = ["pack_nibbles", "unpack_nibbles"]

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("marlin_convert needs a little-endian host")

_SLICE_BYTES = 1 << 18
"""Bytes of uint8 values handled per slice on the CPU path."""

_PAIR_HIGH = np.uint64(0x0FF00FF00FF00FF0)
_LOW_NIBBLE16 = np.uint64(0x000F000F000F000F)
_HIGH_NIBBLE16 = np.uint64(0x0F000F000F000F00)


def _pack_nibbles_np(flat: np.ndarray) -> np.ndarray:
    """uint8 `[8 m]` -> uint8 `[4 m]`: byte i = `flat[2i] | flat[2i+1] << 4` (mod 256)."""
    out = np.empty(flat.size // 2, dtype=np.uint8)
    x = flat.view(np.uint64)
    lanes = _SLICE_BYTES // 8
    y = np.empty(min(lanes, x.size), dtype=np.uint64)
    for i in range(0, x.size, lanes):
        xs = x[i : i + lanes]
        ys = y[: xs.size]
        # in each 16-bit lane a | b << 8: bits 4..11 of (lane >> 4) are b << 4, and the low byte keeps a
        np.right_shift(xs, 4, out=ys)
        np.bitwise_and(ys, _PAIR_HIGH, out=ys)
        np.bitwise_or(ys, xs, out=ys)
        np.copyto(out[4 * i : 4 * (i + xs.size)], ys.view(np.uint16), casting="unsafe")  # keeps the low bytes
    return out


def _unpack_nibbles_np(raw: np.ndarray) -> np.ndarray:
    """uint8 `[m]` -> uint8 `[2 m]`: byte 2i = `raw[i] & 0xF`, byte 2i+1 = `raw[i] >> 4`."""
    out = np.empty(2 * raw.size, dtype=np.uint8)
    lanes = out.view(np.uint64)
    step = _SLICE_BYTES // 2
    t = np.empty(min(step // 4, lanes.size), dtype=np.uint64)
    for i in range(0, raw.size, step):
        rs = raw[i : i + step]
        z = lanes[i // 4 : (i + rs.size) // 4]
        np.copyto(z.view(np.uint16), rs)  # one byte per 16-bit lane
        ts = t[: z.size]
        np.left_shift(z, 4, out=ts)
        np.bitwise_and(ts, _HIGH_NIBBLE16, out=ts)
        np.bitwise_and(z, _LOW_NIBBLE16, out=z)
        np.bitwise_or(z, ts, out=z)
    return out


def pack_nibbles(values: torch.Tensor) -> torch.Tensor:
    """Pack uint8 values in [0, 15] along the last dim, 8 per int32.

    Args:
        values (`torch.uint8`, shape `(..., 8 * w)`): one 4-bit value per byte.
    Returns: `torch.int32`, shape `(..., w)`; value `8 * j + i` sits in bits `4i..4i+3` of word j.
    Raises: ShapeError when values is not uint8 or its last dim is not a multiple of 8.
    Example:
        >>> v = torch.randint(0, 16, (3, 16), dtype=torch.uint8)
        >>> assert torch.equal(unpack_nibbles(pack_nibbles(v)), v)
    """
    if values.dtype != torch.uint8 or values.dim() == 0 or values.shape[-1] % 8:
        raise ShapeError(f"pack_nibbles needs uint8 with a last dim divisible by 8, got {values.dtype} {tuple(values.shape)}")
    shape = (*values.shape[:-1], values.shape[-1] // 8)
    if values.device.type != "cpu":
        pairs = values.reshape(*values.shape[:-1], -1, 2)
        packed_bytes = pairs[..., 0] | (pairs[..., 1] << 4)
        return packed_bytes.contiguous().view(torch.int32)
    flat = np.ascontiguousarray(values.detach().numpy()).reshape(-1)
    return torch.from_numpy(_pack_nibbles_np(flat).view(np.int32).reshape(shape))


def unpack_nibbles(words: torch.Tensor) -> torch.Tensor:
    """Undo `pack_nibbles`: int32 `(..., w)` to uint8 `(..., 8 * w)`, values in [0, 15]; ShapeError for
    anything but an int32 tensor of at least one dimension."""
    if words.dtype != torch.int32:
        raise ShapeError(f"unpack_nibbles needs int32 words, got {words.dtype}")
    if words.dim() == 0:
        raise ShapeError("unpack_nibbles needs at least one dimension")
    shape = (*words.shape[:-1], 8 * words.shape[-1])
    if words.device.type != "cpu":
        raw = words.contiguous().view(torch.uint8)
        return torch.stack((raw & 0xF, raw >> 4), dim=-1).reshape(shape)
    raw = np.ascontiguousarray(words.detach().numpy()).reshape(-1).view(np.uint8)
    return torch.from_numpy(_unpack_nibbles_np(raw).reshape(shape))
