"""Pack/unpack of int4 codes to/from Marlin tiles on any device, without Triton.

CPU tensors take the blocked numpy kernels of `numpy_kernels` (word arithmetic on cache-sized blocks,
no per-code gather); tensors on other devices take the vectorized ops of `torch_reference`, the
reference any device path must match. Both give the same bytes. The arguments are checked here, by
the rules of `rules`.
"""
from __future__ import annotations

import numpy as np
import torch

from . import numpy_kernels as nk
from .rules import check_codes, check_packed, check_perm, check_words
from .torch_reference import pack_codes_torch, pack_kpacked_torch, unpack_codes_torch, unpack_to_kpacked_torch

__all__ = ["pack_codes", "unpack_codes", "pack_kpacked_portable", "unpack_to_kpacked"]


def _perm_np(perm: torch.Tensor | None) -> np.ndarray | None:
    """A checked perm as int64 numpy, for the numpy kernels."""
    return None if perm is None else perm.detach().cpu().numpy().astype(np.int64)


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
    check_codes(codes)
    if codes.device.type != "cpu":
        return pack_codes_torch(codes)
    return torch.from_numpy(nk.pack_codes_np(nk.host_array(codes)))


def unpack_codes(packed: torch.Tensor, *, n: int, k: int) -> torch.Tensor:
    """Undo `pack_codes`: Marlin tiles back to one int4 code per byte.

    Args:
        packed (`torch.int32`, shape `(k // 16, 2 * n)`): Marlin-ordered codes, 8 per int32.
        n, k (`int`): out/in features.
    Returns: `torch.uint8`, shape `(n, k)`, values in [0, 15], on `packed.device`.
    Raises: ShapeError when the shape does not match n and k.
    """
    check_packed(packed, n, k)
    if packed.device.type != "cpu":
        return unpack_codes_torch(packed, n, k)
    return torch.from_numpy(nk.unpack_codes_np(nk.host_array(packed), n, k))


def pack_kpacked_portable(words: torch.Tensor, perm: torch.Tensor | None = None) -> torch.Tensor:
    """Pack GPTQ-style k-packed words straight into the Marlin tile layout.

    Same bytes as `pack_codes(codes)` (or `pack_codes(codes[:, perm])` with `perm`), where `codes` is
    the uint8 `[n, k]` matrix the words hold; that matrix is never built: the work goes a few tile rows
    at a time, so the temporaries stay around a megabyte whatever the layer size (with perm: a column
    block of byte planes, about 4 MB, rebuilt by every call, so stream act-order layers in few, large
    row blocks).

    Args:
        words (`torch.int32`, shape `(k // 8, n)`, a GPTQ `qweight`): word `[r, c]` holds k `8r .. 8r+7`
            of column c, k `8r + i` in bits `4i .. 4i+3`.
        perm (`torch.int32` or `torch.int64`, shape `(k,)`, optional): act-order row order; Marlin row j
            takes source k `perm[j]`. A run of it, `perm[16 a : 16 b]`, gives just Marlin tile rows a..b-1
            (`== pack_kpacked_portable(words, perm)[a:b]`), for streaming a layer out in row blocks; without perm,
            `pack_kpacked_portable(words[2a : 2b]) == pack_kpacked_portable(words)[a:b]` when 16 (b - a) % 128 == 0.
    Returns: `torch.int32`, shape `(k // 16, 2 * n)` (`(len(perm) // 16, 2 * n)` with perm), on `words.device`.
    Raises: ShapeError when words is not a 2-D int32 tensor of a Marlin-eligible shape, or perm is neither a
        permutation of k nor a multiple of 16 rows of k.
    Example:
        >>> w = torch.randint(-2**31, 2**31, (16, 64), dtype=torch.int64).to(torch.int32)
        >>> assert torch.equal(unpack_to_kpacked(pack_kpacked_portable(w), n=64, k=128), w)
    """
    n, k = check_words(words)
    if perm is not None:
        check_perm(perm, k, partial=True)
    if words.device.type != "cpu":
        return pack_kpacked_torch(words, perm)
    return torch.from_numpy(nk.pack_kpacked_np(nk.host_array(words), _perm_np(perm)))


def unpack_to_kpacked(packed: torch.Tensor, *, n: int, k: int, perm: torch.Tensor | None = None) -> torch.Tensor:
    """Undo `pack_kpacked_portable`: Marlin tiles back to GPTQ-style k-packed words.

    Args:
        packed (`torch.int32`, shape `(k // 16, 2 * n)`): Marlin-ordered codes, 8 per int32.
        n, k (`int`): out/in features.
        perm (`torch.int32` or `torch.int64`, shape `(k,)`, optional): the act-order row order the
            weight was packed with (Marlin row j holds source k `perm[j]`).
    Returns: `torch.int32`, shape `(k // 8, n)`, on `packed.device`; word `[r, c]` holds source k
        `8r .. 8r+7` of column c, k `8r + i` in bits `4i .. 4i+3`.
    Raises: ShapeError when the shape does not match n and k, or perm is not a permutation of k.
    """
    check_packed(packed, n, k)
    if perm is not None:
        check_perm(perm, k)
    if packed.device.type != "cpu":
        return unpack_to_kpacked_torch(packed, n, k, perm)
    return torch.from_numpy(nk.unpack_to_kpacked_np(nk.host_array(packed), n, k, _perm_np(perm)))
