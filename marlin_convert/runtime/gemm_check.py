"""`verify --gemm`: run a real Marlin consumer on each packed layer and compare with a dense reference.

The consumer is optimum-quanto's Marlin fp16 x int4 GEMM (`torch.ops.quanto.gemm_f16i4_marlin`, IST-DASLab
Marlin with a scaled zero point: `W = code * s + sz`; called here through its extension's
`marlin_gemm_f16i4`, which that op wraps), built from source on first use (about 90 s on an H200).
It needs a CUDA GPU of compute capability 8.0 or newer and `pip install 'marlin-convert[gpu-verify]'`.

What that kernel can check, and what is done about the rest:
- Group size 128, or one group spanning K (per-column scales). Its build has no other group sizes
  (32 and 64 are skipped, with the reason in the report).
- Per-column scales: that kernel path ignores the zero point and applies the scale after the sum, so
  it returns `x @ (code * s)`; the zero-point term `sum_k x[:, k] * sz[n]` is added here in float32.
- Act-order: the kernel has no `g_idx`. When every group holds exactly `group_size` rows (as GPTQ's
  act-order does), the sorted rows of `B` have plain contiguous groups, so the kernel computes
  `x[:, perm] @ W[perm]`: the permutation is applied to the input columns here. Otherwise skipped.
- N % 128 != 0 (N % 64 == 0): `B`, the scales and zero points get one zero 64-column block of padding,
  dropped from the output.
- Scales are float16 in that kernel: bfloat16 scales are cast (exact for every bf16 value inside the
  float16 range; a layer with scales outside it is skipped), and the reference uses the same float16
  values, so the check measures the layout, not the dtype change.

`check_layer(..., backend="triton")` runs our Triton kernel (`runtime.triton_gemm`) instead: no compiler,
every group size and the scales as stored (float16 activations, so the bound below holds for it too);
it skips only act-order layers whose groups are not all `group_size` rows.

Bound: the kernel rounds each dequantized weight to float16 (relative 2^-11, and `sz = -zero * s` once
more), accumulates in float32 and rounds each output to float16 (2^-11): about 3e-4 to 6e-4 normwise
for random inputs, 5e-4 measured on correct weights. A wrong tile, scale or zero-point order gives an
error of order 1, so `REL_BOUND = 2e-3` leaves a 4x margin over rounding and three orders of magnitude
below a layout error. `MAX_BOUND` bounds the largest element error relative to the RMS of the
reference (fp16 output rounding of the largest elements stays under 1e-2) and catches local damage,
such as one wrong 64-column block, that the normwise error dilutes.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..errors import MarlinConvertError
from ..gemm_backends import GEMM_BACKENDS, check_gemm_backend
from ..formats import DenseCodes, QuantizedLinear, dequantize, trivial_g_idx
from ..layout import BLOCK_N, permute_scales, unpack_zeros, unpermute_scales, uses_single_scale_perm

__all__ = ["GemmResult", "REL_BOUND", "MAX_BOUND", "INSTALL_HINT", "GEMM_BACKENDS", "quanto_lib", "marlin_gemm",
           "check_layer"]

# `check_layer`'s backends (`GEMM_BACKENDS`): optimum-quanto's Marlin CUDA kernel, or our Triton kernel
# (`runtime.triton_gemm`, no compiler needed; every group size, bf16 scales, act-order with equal groups).

REL_BOUND = 2e-3
"""Largest accepted `||y - y_ref|| / ||y_ref||`."""
MAX_BOUND = 3e-2
"""Largest accepted `max |y - y_ref| / rms(y_ref)`."""
INSTALL_HINT = ("verify --gemm needs a CUDA GPU (compute capability 8.0+) and optimum-quanto: "
                "pip install 'marlin-convert[gpu-verify]'")

_KERNEL_GROUP_SIZE = 128
_ROWS = 16
"""Input rows: at most 16 keeps the kernel on its small-batch tiles (thread_n 128, thread_k 128)."""


@dataclass(frozen=True)
class GemmResult:
    """One layer's GEMM check: errors, or why it was skipped."""

    rel_err: float | None = None
    max_err: float | None = None
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        """True when checked within the bounds, or skipped."""
        if self.skipped is not None:
            return True
        assert self.rel_err is not None and self.max_err is not None
        return self.rel_err <= REL_BOUND and self.max_err <= MAX_BOUND

    @property
    def detail(self) -> str:
        if self.skipped is not None:
            return f"Marlin GEMM skipped: {self.skipped}"
        verdict = "within" if self.ok else "ABOVE"
        return (f"Marlin GEMM rel err {self.rel_err:.1e}, max {self.max_err:.1e} "
                f"({verdict} {REL_BOUND:.0e} / {MAX_BOUND:.0e})")


# optimum-quanto 0.2.7 `library/extensions/cuda/__init__.py`: what its `get_extension("quanto_cuda")` builds
_QUANTO_SOURCES = ("unpack.cu", "awq/v2/gemm_cuda.cu", "awq/v2/gemv_cuda.cu", "marlin/fp8_marlin.cu",
                   "marlin/gptq_marlin_repack.cu", "marlin/marlin_cuda.cpp", "marlin/marlin_cuda_kernel.cu",
                   "pybind_module.cpp")


def _require_cuda() -> None:
    if not torch.cuda.is_available():
        raise MarlinConvertError(f"no CUDA device is available; {INSTALL_HINT}")
    if torch.cuda.get_device_capability() < (8, 0):
        raise MarlinConvertError(f"the Marlin kernels need compute capability 8.0+, this GPU has "
                                 f"{torch.cuda.get_device_capability()}; {INSTALL_HINT}")


def _build_by_path() -> Any:
    """Build quanto's CUDA extension from its files without importing `optimum.quanto` (whose package
    import also imports transformers / diffusers integrations, which can break with their versions)."""
    spec = importlib.util.find_spec("optimum.quanto")
    if spec is None or spec.origin is None:
        raise MarlinConvertError(f"optimum-quanto is not installed; {INSTALL_HINT}")
    root = Path(spec.origin).parent / "library" / "extensions"
    ext_spec = importlib.util.spec_from_file_location("_marlin_convert_quanto_extension", root / "extension.py")
    assert ext_spec is not None and ext_spec.loader is not None
    module = importlib.util.module_from_spec(ext_spec)
    ext_spec.loader.exec_module(module)
    supported = [int(a.split("_")[1]) for a in torch.cuda.get_arch_list() if a.startswith("sm_")]
    major, minor = torch.cuda.get_device_capability()
    arch = min(10 * major + minor, max(supported, default=10 * major + minor))
    ext = module.Extension("quanto_cuda", root_dir=str(root / "cuda"), sources=list(_QUANTO_SOURCES),
                           extra_cflags=["-g", "-O3"],
                           extra_cuda_cflags=["--expt-extended-lambda", "--use_fast_math", f"-DQUANTO_CUDA_ARCH={arch}0"])
    return ext.lib


@functools.lru_cache(maxsize=None)
def quanto_lib() -> Any:
    """optimum-quanto's compiled CUDA extension (`marlin_gemm_f16i4`, `gptq_marlin_repack`, ...), built
    on first call (about 90 s). Raises MarlinConvertError (with `INSTALL_HINT`) when it cannot be had."""
    _require_cuda()
    try:
        from optimum.quanto.library.extensions import get_extension
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] == "optimum":
            raise MarlinConvertError(f"optimum-quanto is not importable ({e}); {INSTALL_HINT}") from None
        get_extension = None  # optimum.quanto is there but one of its own imports is not
    except Exception:  # noqa: BLE001 - same: a broken optional integration inside optimum.quanto
        get_extension = None
    try:
        return get_extension("quanto_cuda").lib if get_extension is not None else _build_by_path()
    except MarlinConvertError:
        raise
    except Exception as e:  # a failed build: compiler, headers, unwritable site-packages
        raise MarlinConvertError(f"optimum-quanto's CUDA extension could not be built or loaded: {e}") from None


def require_gemm(backend: str) -> None:
    """Fail early, with what to install, when `backend`'s GEMM cannot run here (MarlinConvertError)."""
    check_gemm_backend(backend)
    if backend == "quanto":
        marlin_gemm()
    elif backend == "triton":
        from .triton_gemm import available

        if not available():
            raise MarlinConvertError("verify --gemm (Triton backend) needs a CUDA GPU of compute capability 8.0+ "
                                     "and Triton; or use --gemm-backend quanto with "
                                     "pip install 'marlin-convert[gpu-verify]'")


def marlin_gemm() -> Callable[..., torch.Tensor]:
    """`gemm(x fp16 [m, k], B int32 [k/16, 2n], s fp16 [g, n], sz fp16 [g, n], workspace int32) -> fp16 [m, n]`:
    optimum-quanto's Marlin GEMM (what `torch.ops.quanto.gemm_f16i4_marlin` calls). Raises MarlinConvertError
    when unavailable."""
    _require_cuda()
    lib = quanto_lib()

    def gemm(x: torch.Tensor, B: torch.Tensor, s: torch.Tensor, sz: torch.Tensor, workspace: torch.Tensor) -> torch.Tensor:
        out = torch.empty((x.shape[0], s.shape[1]), dtype=torch.float16, device=x.device)
        lib.marlin_gemm_f16i4(x, B, out, s, sz, workspace, -1, -1, -1, 16)
        return out

    return gemm


def _pad_block(t: torch.Tensor, n: int, n_pad: int) -> torch.Tensor:
    """Scales-like `[g, n]` -> `[g, n_pad]` with zero columns."""
    return t if n_pad == n else torch.nn.functional.pad(t, (0, n_pad - n))


def _skip_reason(rec: QuantizedLinear, tensors: Mapping[str, torch.Tensor]) -> str | None:
    single = uses_single_scale_perm(group_size=rec.group_size, k=rec.k)
    if not single and rec.group_size != _KERNEL_GROUP_SIZE:
        return f"optimum-quanto's Marlin kernel has group size 128 and per-column scales only, not {rec.group_size}"
    if "perm" in tensors and not single:
        g_idx = tensors["g_idx"].to(torch.int64).cpu()
        perm = tensors["perm"].to(torch.int64).cpu()
        if not torch.equal(g_idx[perm], torch.arange(rec.k) // rec.group_size):
            return "act-order groups of unequal size: the kernel has no g_idx to follow them"
    scales = tensors["s"]
    if scales.dtype != torch.float16 and not bool(torch.isfinite(scales.to(torch.float16)).all()):
        return f"{scales.dtype} scales outside the float16 range the kernel takes"
    return None


def check_layer(rec: QuantizedLinear, tensors: Mapping[str, torch.Tensor], *, rows: int = _ROWS,
                seed: int = 0, backend: str = "quanto") -> GemmResult:
    """Run the Marlin GEMM on one layer's Marlin tensors and compare with `x @ dequantize(rec).T`.

    Args:
        rec: the layer's canonical record (from the source checkpoint when at hand: an independent reference).
        tensors: the layer's Marlin tensors by suffix: `B` int32 `[k/16, 2n]`, `s` `[g, n]`, and `z` int32
            `[g, n/8]`, `shift` `[g, n]`, `perm` / `g_idx` int32 `[k]` when present (any device).
        rows (`int`, <= 16): rows of the random float16 input.
        backend: one of `GEMM_BACKENDS`.
    Returns: a GemmResult (errors, or the reason the kernel cannot check this layer).
    Raises: MarlinConvertError when the GEMM is unavailable (see `INSTALL_HINT`).
    """
    check_gemm_backend(backend)
    if backend == "triton":
        return _check_layer_triton(rec, tensors, rows=rows, seed=seed)
    gemm = marlin_gemm()
    reason = _skip_reason(rec, tensors)
    if reason is not None:
        return GemmResult(skipped=reason)
    dev = torch.device("cuda")
    n, k, gs = rec.n, rec.k, rec.group_size
    n_pad = -(-n // (2 * BLOCK_N)) * (2 * BLOCK_N)
    s = tensors["s"].to(dev).to(torch.float16)
    s_nat = unpermute_scales(s, group_size=gs, k=k).float()
    if "shift" in tensors:
        sz_nat = -unpermute_scales(tensors["shift"].to(dev).to(torch.float16), group_size=gs, k=k).float()
    elif "z" in tensors:
        sz_nat = -(unpack_zeros(tensors["z"].to(dev)).float() * s_nat)
    else:
        sz_nat = -8.0 * s_nat
    sz_nat = sz_nat.to(torch.float16)
    sz = permute_scales(sz_nat, group_size=gs, k=k)

    B = tensors["B"].to(dev).contiguous()
    if n_pad != n:
        B = torch.nn.functional.pad(B.view(k // 16, n // BLOCK_N, 128), (0, 0, 0, 1)).view(k // 16, 2 * n_pad)
    gen = torch.Generator(device=dev).manual_seed(seed)
    x = torch.randn((rows, k), generator=gen, device=dev, dtype=torch.float32).to(torch.float16)
    x_in = x[:, tensors["perm"].to(dev, torch.int64)].contiguous() if "perm" in tensors else x
    workspace = torch.zeros(n_pad // 128 * 16, dtype=torch.int32, device=dev)
    y = gemm(x_in, B, _pad_block(s, n, n_pad), _pad_block(sz, n, n_pad), workspace)[:, :n].float()
    if uses_single_scale_perm(group_size=gs, k=k):  # per-column path: the kernel left out the zero point
        y = y + x.float().sum(dim=1, keepdim=True) * sz_nat.float()

    ref = _reference(_on_device(rec, dev), x)
    diff = y.double() - ref
    rms = ref.pow(2).mean().sqrt().clamp_min(torch.finfo(torch.float64).tiny)
    return GemmResult(rel_err=float(diff.norm() / ref.norm().clamp_min(torch.finfo(torch.float64).tiny)),
                      max_err=float(diff.abs().max() / rms))


def _check_layer_triton(rec: QuantizedLinear, tensors: Mapping[str, torch.Tensor], *, rows: int,
                        seed: int) -> GemmResult:
    """`check_layer` through the Triton kernel: float16 activations (the weights it forms are then rounded
    to float16, as in quanto's kernel, so the same bounds apply), the stored scales as they are."""
    from .triton_gemm import marlin_gemm as triton_gemm, unsupported_reason

    if not torch.cuda.is_available():
        raise MarlinConvertError("verify --gemm needs a CUDA GPU (the Triton backend too)")
    dev = torch.device("cuda")
    t = {suffix: tensor.to(dev) for suffix, tensor in tensors.items()}
    reason = unsupported_reason(t["B"], t["s"], group_size=rec.group_size, dtype=torch.float16, z=t.get("z"),
                                shift=t.get("shift"), perm=t.get("perm"), g_idx=t.get("g_idx"))
    if reason is None and not bool((15 * t["s"].float()).abs().max() < torch.finfo(torch.float16).max):
        reason = f"{t['s'].dtype} scales so large that the weights leave the float16 range of the check"
    if reason is not None:
        return GemmResult(skipped=reason)
    gen = torch.Generator(device=dev).manual_seed(seed)
    x = torch.randn((rows, rec.k), generator=gen, device=dev, dtype=torch.float32).to(torch.float16)
    y = triton_gemm(x, t["B"], t["s"], group_size=rec.group_size, z=t.get("z"), shift=t.get("shift"),
                    perm=t.get("perm")).float()
    ref = _reference(_on_device(rec, dev, scale_dtype=None), x)
    diff = y.double() - ref
    rms = ref.pow(2).mean().sqrt().clamp_min(torch.finfo(torch.float64).tiny)
    return GemmResult(rel_err=float(diff.norm() / ref.norm().clamp_min(torch.finfo(torch.float64).tiny)),
                      max_err=float(diff.abs().max() / rms))


def _on_device(rec: QuantizedLinear, dev: torch.device, scale_dtype: torch.dtype | None = torch.float16) -> QuantizedLinear:
    """The record with every tensor on `dev`, scales in `scale_dtype` (float16 as quanto's kernel gets them;
    None: as stored) and an explicit g_idx."""
    g_idx = rec.g_idx if rec.g_idx is not None else trivial_g_idx(rec.k, rec.group_size)
    return dataclasses.replace(
        rec, codes=DenseCodes(rec.codes.full().to(dev)),
        scales=rec.scales.to(dev, scale_dtype or rec.scales.dtype),
        zeros=None if rec.zeros is None else rec.zeros.to(dev), shift=None if rec.shift is None else rec.shift.to(dev),
        g_idx=g_idx.to(dev))


def _reference(rec: QuantizedLinear, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """float64 `x @ W.T` with W = dequantize(rec) (float32, exact for int4 codes times fp16 scales)."""
    w = dequantize(rec)
    xd = x.double()
    return torch.cat([xd @ w[i : i + chunk].double().t() for i in range(0, rec.n, chunk)], dim=1)

