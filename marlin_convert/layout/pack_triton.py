"""CUDA pack/unpack of the Marlin int4 layout, as Triton kernels; same bytes as `portable`.

Triton is imported on first use only: this module imports fine on a machine without Triton or a GPU,
and `available()` says whether the kernels can run.

The word map the kernels implement (DESIGN §4, restated per word as in `numpy_kernels`). For tile row `t`
(k `16t .. 16t+15`) and column n, let the pair byte `p_j(n) = code[n, 16t + j] | code[n, 16t + j + 8] << 4`
(j < 8), and gather them into two words per column:

    PL(n) = p_0 | p_2 << 8 | p_4 << 16 | p_6 << 24        PH(n) = p_1 | p_3 << 8 | p_5 << 16 | p_7 << 24

Output row t is `n / 64` blocks of 128 words; word `16c + 4q + w` of block nb (c < 8, q < 4, w < 4) is,
from its lowest byte up, byte q of `PL(n0), PL(n0 + 8), PH(n0), PH(n0 + 8)` with `n0 = 64nb + 16w + c`.
From a GPTQ qweight the two words of a column are `a = words[2t, n]` (k 16t..16t+7) and
`b = words[2t + 1, n]`, and `PL = (a & 0x0F0F0F0F) | (b & 0x0F0F0F0F) << 4`,
`PH = (a >> 4 & 0x0F0F0F0F) | (b & 0xF0F0F0F0)`: the packed bytes are read once and written once.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, ContextManager

import torch

from ..errors import ShapeError
from .rules import check_codes, check_packed, check_perm, check_words
from .tables import BLOCK_N, TILE

__all__ = ["available", "pack_codes_cuda", "unpack_codes_cuda", "pack_kpacked_cuda", "KPACKED_VARIANTS", "DEFAULT_VARIANTS",
           "DEFAULT_CONFIGS", "Config"]

KPACKED_VARIANTS = ("gather", "shuffle")
"""Two ways of moving words into Marlin order (the bench times both, for both kernels): `gather` loads
each source word straight into output order (the reorder happens in the load addressing, the cache
absorbs the re-reads); `shuffle` loads rows as they lie and reorders in registers
(reshape/permute/split/join)."""

Config = tuple[int, int, int]
"""(tile rows, 64-column blocks, warps) of one program."""

DEFAULT_VARIANTS = {"kpacked": "shuffle", "codes": "shuffle"}
"""The variant (of `KPACKED_VARIANTS`) each pack kernel runs unless told otherwise."""
DEFAULT_CONFIGS: dict[str, Config] = {"kpacked": (4, 2, 4), "codes": (8, 4, 4), "unpack": (8, 4, 4)}
"""(tile rows, 64-column blocks, warps) of one program, per kernel. Measured on an H200 (2026-11-25,
scripts/bench_gpu.py --sweep): `shuffle` runs at the device-to-device copy's rate from 11008x4096 up
(1.9 TB/s of packed output, 3.8 TB/s moved) for every block shape tried; (4, 2, 4) was best at 4096x4096;
`gather` reached 0.7-1.4 TB/s."""


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """True when Triton imports and a CUDA device is present."""
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - depends on the machine
        return False
    return torch.cuda.is_available()


def _check_cuda(t: torch.Tensor, what: str) -> None:
    if not t.is_cuda:
        raise ShapeError(f"{what} must be a CUDA tensor for the Triton path, got device {t.device}")


def _on(device: torch.device) -> ContextManager[Any]:
    """Make `device` current for the launch (Triton launches on the current device); a no-op when it is."""
    return contextlib.nullcontext() if device.index in (None, torch.cuda.current_device()) else torch.cuda.device(device)


def _launch(config: Config, n: int, k: int) -> tuple[tuple[int, int], dict[str, int]]:
    """Grid and launch options: block sizes shrunk (powers of two) until they divide the layer; tile-row
    blocks on the fast grid axis, so programs in flight share column blocks (L2 reuse with a perm)."""
    bt, nb, warps = config
    while (k // TILE) % bt:
        bt //= 2
    while (n // BLOCK_N) % nb:
        nb //= 2
    return (k // TILE // bt, n // BLOCK_N // nb), {"BT": bt, "NB": nb, "num_warps": warps}


@functools.lru_cache(maxsize=None)
def _kernels() -> dict[str, Any]:
    """The compiled-on-first-use kernels; triton is imported here, not at module import."""
    from . import _triton_kernels as tk

    return {"gather": tk.pack_kpacked_gather, "shuffle": tk.pack_kpacked_shuffle,
            "codes_shuffle": tk.pack_codes, "codes_gather": tk.pack_codes_gather, "unpack": tk.unpack_codes}


def pack_kpacked_cuda(words: torch.Tensor, perm: torch.Tensor | None = None, *, variant: str | None = None,
                      config: Config | None = None, validate_perm: bool = True) -> torch.Tensor:
    """GPTQ qweight straight to Marlin tiles on the GPU (vLLM `gptq_marlin_repack` semantics).

    Args:
        words (`torch.int32`, shape `(k // 8, n)`, CUDA): word `[r, c]` holds k `8r .. 8r+7` of column c,
            k `8r + i` in bits `4i .. 4i+3`.
        perm (`torch.int32`/`int64`, shape `(k,)`, optional): act-order row order; Marlin row j takes
            source row `perm[j]`. A run of it, `perm[16a : 16b]`, gives just Marlin tile rows a..b-1
            (as `portable.pack_kpacked_portable`).
        variant, config: kernel variant (`KPACKED_VARIANTS`) and (tile rows, 64-column blocks, warps) of
            one program; for benchmarks, the defaults (`DEFAULT_VARIANTS`, `DEFAULT_CONFIGS`) are the tuned ones.
        validate_perm: False skips the perm check (one host sync), for a perm known to be good, e.g. when
            timing the kernel; its dtype, length and device are still made right.
    Returns: `torch.int32`, shape `(k // 16, 2 * n)` (`(len(perm) // 16, 2 * n)` with perm), on
        `words.device`; the bytes of `portable.pack_kpacked_portable(words, perm)`.
    Raises: ShapeError for a wrong dtype, shape, device or perm.
    """
    n, k = check_words(words)
    _check_cuda(words, "words")
    words = words.contiguous()
    rows = k
    if perm is not None:
        if validate_perm:
            check_perm(perm, k, partial=True)
        perm = perm.to(device=words.device, dtype=torch.int32).contiguous()
        rows = perm.numel()
    grid, opts = _launch(config or DEFAULT_CONFIGS["kpacked"], n, rows)
    out = torch.empty((rows // TILE, 2 * n), dtype=torch.int32, device=words.device)
    kernel = _kernels()[variant or DEFAULT_VARIANTS["kpacked"]]
    with _on(words.device):
        kernel[grid](words, words if perm is None else perm, out, n, HAS_PERM=perm is not None, **opts)
    return out


def pack_codes_cuda(codes: torch.Tensor, *, variant: str | None = None, config: Config | None = None) -> torch.Tensor:
    """uint8 codes `[n, k]` (CUDA, values 0..15) -> Marlin int32 `[k / 16, 2n]`; the bytes of
    `portable.pack_codes`. `variant` / `config` as for `pack_kpacked_cuda`. Raises ShapeError for a
    wrong dtype, shape or device."""
    n, k = check_codes(codes)
    _check_cuda(codes, "codes")
    codes32 = codes.contiguous().view(torch.int32)
    grid, opts = _launch(config or DEFAULT_CONFIGS["codes"], n, k)
    out = torch.empty((k // TILE, 2 * n), dtype=torch.int32, device=codes.device)
    with _on(codes.device):
        _kernels()[f"codes_{variant or DEFAULT_VARIANTS['codes']}"][grid](codes32, out, n, k, **opts)
    return out


def unpack_codes_cuda(packed: torch.Tensor, *, n: int, k: int, config: Config | None = None) -> torch.Tensor:
    """Marlin int32 `[k / 16, 2n]` (CUDA) -> uint8 codes `[n, k]`; the bytes of `portable.unpack_codes`.
    Raises ShapeError when the shape does not match n and k, or the tensor is not on a GPU."""
    check_packed(packed, n, k)
    _check_cuda(packed, "packed")
    packed = packed.contiguous()
    grid, opts = _launch(config or DEFAULT_CONFIGS["unpack"], n, k)
    codes = torch.empty((n, k), dtype=torch.uint8, device=packed.device)
    with _on(packed.device):
        _kernels()["unpack"][grid](packed, codes.view(torch.int32), n, k, **opts)
    return codes
