"""Pure tensor math of the Marlin int4 layout: no files, no formats.

`pack`/`unpack`/`pack_kpacked` pick the fastest available backend for the tensor's device: the
Triton kernels of `pack_triton` for CUDA tensors when Triton imports (imported on first use, never
at package import), else `portable` (the numpy kernels of `numpy_kernels` on the CPU, the ops of
`torch_reference` on other devices). Every backend gives the same bytes. The layer rules they all
check live in `rules`, the dimensions in `dims`. Importing the package loads neither torch nor numpy (so
planning and `inspect` do not): the modules of the names in `_LAZY` load on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from .dims import BLOCK_N, MIN_K, SUPPORTED_GROUP_SIZES, TILE
from .rules import check_shape

if TYPE_CHECKING:
    import torch

    from .nibbles import pack_nibbles, unpack_nibbles
    from .portable import pack_codes, pack_kpacked_portable, unpack_codes
    from .scales import pack_zeros, permute_scales, unpack_zeros, unpermute_scales, uses_single_scale_perm

_LAZY = {
    "pack_nibbles": "nibbles", "unpack_nibbles": "nibbles",
    "pack_codes": "portable", "pack_kpacked_portable": "portable", "unpack_codes": "portable",
    "pack_zeros": "scales", "permute_scales": "scales", "unpack_zeros": "scales", "unpermute_scales": "scales",
    "uses_single_scale_perm": "scales",
}
"""Names whose modules import torch and numpy: imported on first use (PEP 562), so that planning stays torch-free."""

__all__ = [
    "pack",
    "unpack",
    "pack_kpacked",
    "uses_triton",
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


def uses_triton(t: torch.Tensor) -> bool:
    """True when `pack`/`unpack`/`pack_kpacked` of this tensor run the Triton kernels (a CUDA tensor and
    Triton importable)."""
    if not t.is_cuda:
        return False
    from . import pack_triton

    return pack_triton.available()


__getattr__ = lazy_exports(__name__, _LAZY)


def pack(codes: torch.Tensor) -> torch.Tensor:
    """Pack uint8 int4 codes `[n, k]` into Marlin int32 `[k / 16, 2n]` on `codes.device`. See `pack_codes`."""
    if uses_triton(codes):
        from .pack_triton import pack_codes_cuda

        return pack_codes_cuda(codes)
    from .portable import pack_codes

    return pack_codes(codes)


def unpack(packed: torch.Tensor, *, n: int, k: int) -> torch.Tensor:
    """Marlin int32 `[k / 16, 2n]` back to uint8 codes `[n, k]`. See `unpack_codes`."""
    if uses_triton(packed):
        from .pack_triton import unpack_codes_cuda

        return unpack_codes_cuda(packed, n=n, k=k)
    from .portable import unpack_codes

    return unpack_codes(packed, n=n, k=k)


def pack_kpacked(words: torch.Tensor, perm: torch.Tensor | None = None) -> torch.Tensor:
    """GPTQ qweight int32 `[k / 8, n]` straight to Marlin int32 `[k / 16, 2n]`; Marlin row j takes source
    row `perm[j]` when perm (int32/int64 `[k]`) is given. Same bytes as `pack(codes[:, perm])`."""
    if uses_triton(words):
        from .pack_triton import pack_kpacked_cuda

        return pack_kpacked_cuda(words, perm)
    from .portable import pack_kpacked_portable

    return pack_kpacked_portable(words, perm)
