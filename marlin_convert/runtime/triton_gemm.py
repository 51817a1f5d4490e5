"""A Marlin int4 GEMM in Triton: `y = x @ W.T (+ bias)` straight from the Marlin tensors as on disk.

No compiler but Triton's JIT, fp16 and bf16 activations, group sizes -1/32/64/128, symmetric, asymmetric
(Marlin zero points `z`) and optimum-quanto's float shift, act-order (`perm`). The weight is read as it
lies in `B`: no repack, and no dequantized copy is kept.

Tile map (DESIGN §4, restated per word as in `layout.pack_triton`). `B` row t holds k `16t .. 16t+15`;
each 64-column block nb of it is 128 words, word `16c + 4q + w` (c < 8, q < 4, w < 4), and its nibble
`i = 4a + 2b + h` (a, b, h in {0, 1}) is the code of

    k = 16t + 2q + a + 8h,        n = 64nb + 16w + 8b + c.

A program loads `BT` tile rows of `NB` blocks as they lie (a `[4 BT, 32 NB]` tile of words, rows (t, q),
columns (nb, c, w)); the output columns n above are scattered on store. The column order (nb, c, w, b) is
Marlin's scale order: the grouped scale of column n sits at `64nb + 8c + 2w + b` (one group spanning K:
`64nb + 32(w//2) + 8(c//2) + 4(w%2) + 2b + c%2`), its zero point at nibble `w + 4b` of word `8nb + c`.
Two kernels use that map (and the one-row GEMV, `_triton_gemv_kernel`, its own loads of it):
- the fast kernel (`marlin_gemm_swap_kernel`, where the scales and shift have the activation dtype): Marlin's own
  dequantization, one `lop3` per two weights into half2 / bfloat162 registers that hold two k-adjacent weights
  (nibbles j and j + 4: a = 0, 1), with the operands swapped, `out.T = W x.T`: the eight outputs of each word
  joined and permuted into a `[64 NB, 16 BT]` weight tile with rows n and columns k in order (no data moves
  between threads), x transposed as the second operand, so sm_90 `wgmma` takes the weights from registers (and,
  above 16 rows, decodes them once for 64 or 128 rows);
- the float32 eight-dot kernel (`marlin_gemm_kernel`, `KernelConfig(fast=False)`, and whenever the scales
  have another dtype than x): each nibble plane i is a `[4 BT, 32 NB]` weight tile, 8 small `tl.dot`s.
(An unswapped packed-half kernel, x as the first operand, was served before GEMM round 8 and removed in round 24.)
Precision: both form each weight `(code - zero) * scale` exactly and round it once to the activation dtype (the
fast kernel: `code - zero` is exact in half / bfloat16, then one multiply by the scale, which has the activation
dtype; the float32 kernel computes in float32 and rounds once); quanto's `code * scale - shift` is one fused
multiply-add (fast kernel) or float32 rounded once. Where a step of the fast kernel lies in one group and there
is no shift (`KernelConfig.scale_acc`, the default), its weights are the exact integers `code - zero` (no
rounding) and each step's float32 sums are multiplied by the float32 scale and added: two more float32 roundings
per group, well inside the float32-sum bound of the tests. With `fold` (`pick_config`'s choice for zero points of
group 128 or one group, up to 16 rows) it goes further: its weights are the symmetric integers `code - 8`, and
the zero point is folded in after the dot, per group and output row, as `e * sum_k x` with `e = (8 - zero) *
scale` (float32): the decode and its registers are the symmetric ones. Its float32 sums then err relative to
`|x| @ (|code - 8| s + |8 - zero| s)` instead of `|x| @ |W|` (the tests' bound says so). All kernels
accumulate in float32 and round the output once (after the split-K sum when K is split).

Act-order: `perm` is the stored sort permutation (Marlin row j holds source row `perm[j]`); Marlin row j is
taken to be in group `j // group_size`, which holds when every group has exactly `group_size` rows (GPTQ's
act-order). `unsupported_reason` says when a layer's `g_idx` does not (unequal groups).
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import Any

import torch

from .gemm_rules import (  # noqa: F401 - the public rules re-exported (`__all__`): callers take them from here
    _DTYPES, EAGER_ONE_LAUNCH_MAX, GEMV_DTYPES, GEMV_ZMODES, KernelConfig, _even_split, _gemv_runs, _reduce_block,
    balance_pays, for_eager, gemv_config, gemv_fits, group_steps, one_wave_split, pick_config, reduced_sums_allowed,
    split_for)
from .triton_launch import Launch, Slot

__all__ = ["marlin_gemm", "plan", "GemmPlan", "unsupported_reason", "available", "KernelConfig", "pick_config",
           "for_eager", "EAGER_ONE_LAUNCH_MAX", "split_for", "one_wave_split", "group_steps", "balance_pays",
           "gemv_config", "gemv_fits", "GEMV_ZMODES", "GEMV_DTYPES", "reduced_sums_allowed"]

_GROUP_SIZES = (-1, 32, 64, 128)


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """True when Triton imports and a CUDA device of compute capability 8.0+ is present."""
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - depends on the machine
        return False
    if _interpreting():
        return True
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


def _interpreting() -> bool:
    """Triton's CPU interpreter (`TRITON_INTERPRET=1`, for development): CPU tensors are then accepted."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.lru_cache(maxsize=None)
def _kernels() -> Any:
    from . import _triton_gemm_kernels as tk

    return tk


@functools.lru_cache(maxsize=None)
def _gemv_kernel() -> Any:
    from ._triton_gemv_kernel import marlin_gemv_kernel

    return marlin_gemv_kernel


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _tma_ok(B: torch.Tensor) -> bool:
    """Whether `B` can be read through a TMA tensor descriptor: a CUDA device of compute capability 9.0+ (sm_90
    has the copy engine; elsewhere Triton would lower the descriptor to plain loads) and a 16-byte aligned base."""
    return B.is_cuda and not _interpreting() and _capability(B.device.index or 0) >= (9, 0) and B.data_ptr() % 16 == 0


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def _dependent_launch(cfg: KernelConfig, index: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The constexprs of the kernel before a `splitk_reduce_kernel` and of that reduce: programmatic dependent
    launch (`KernelConfig.pdl`) on a CUDA device of compute capability 9.0+ (`griddepcontrol` is sm_90 PTX),
    else none."""
    if not cfg.pdl or index is None or _interpreting() or _capability(index) < (9, 0):
        return {}, {}
    return {"TRIGGER": True}, {"WAIT_PRIOR": True, "launch_pdl": True}


def unsupported_reason(B: torch.Tensor, s: torch.Tensor, *, group_size: int, dtype: torch.dtype | None = None,
                       z: torch.Tensor | None = None, shift: torch.Tensor | None = None,
                       perm: torch.Tensor | None = None, g_idx: torch.Tensor | None = None) -> str | None:
    """Why `marlin_gemm` cannot serve this layer (one line), or None when it can.

    Args: the layer's Marlin tensors (DESIGN §5) and `dtype`, the activation dtype (None: not checked).
    `g_idx`, when given with `perm`, is checked for equal-size groups (one host sync; call once per layer,
    at load time, not per forward).
    """
    if not available():
        return "the Triton Marlin GEMM needs Triton and a CUDA GPU of compute capability 8.0+"
    if dtype is not None and dtype not in _DTYPES:
        return f"activations must be float16 or bfloat16, not {dtype}"
    if B.dtype != torch.int32 or B.dim() != 2 or B.shape[1] % 128:
        return f"B must be int32 [K/16, 2N] with N a multiple of 64, got {B.dtype} {tuple(B.shape)}"
    k, n = 16 * int(B.shape[0]), int(B.shape[1]) // 2
    if k % 128:
        return f"K={k} is not a multiple of 128"
    if group_size not in _GROUP_SIZES or (group_size != -1 and k % group_size):
        return f"group size {group_size} is not one of {_GROUP_SIZES} dividing K={k}"
    groups = 1 if group_size == -1 else k // group_size
    if s.dim() != 2 or tuple(s.shape) != (groups, n) or s.dtype not in _DTYPES + (torch.float32,):
        return f"scales must be float [{groups}, {n}], got {s.dtype} {tuple(s.shape)}"
    if z is not None and shift is not None:
        return "a layer has zero points or a shift, not both"
    if z is not None and (z.dtype != torch.int32 or tuple(z.shape) != (groups, n // 8)):
        return f"zero points must be int32 [{groups}, {n // 8}], got {z.dtype} {tuple(z.shape)}"
    if shift is not None and tuple(shift.shape) != (groups, n):
        return f"shift must be [{groups}, {n}], got {tuple(shift.shape)}"
    if perm is not None and (perm.dim() != 1 or perm.numel() != k or perm.dtype not in (torch.int32, torch.int64)):
        return f"perm must be int32 [{k}], got {perm.dtype} {tuple(perm.shape)}"
    if perm is not None and g_idx is not None and group_size != -1 and group_size < k:
        sorted_groups = g_idx.to(torch.int64)[perm.to(g_idx.device, torch.int64)]
        if not torch.equal(sorted_groups, torch.arange(k, device=g_idx.device) // group_size):
            return "act-order groups of unequal size: the kernel takes Marlin row j to be in group j // group_size"
    for t in (B, s, z, shift, perm):
        if t is not None and not t.is_cuda and not _interpreting():
            return f"tensors must be on a CUDA device, got {t.device}"
    return None


def marlin_gemm(x: torch.Tensor, B: torch.Tensor, s: torch.Tensor, *, group_size: int,
                z: torch.Tensor | None = None, shift: torch.Tensor | None = None,
                perm: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                config: KernelConfig | None = None) -> torch.Tensor:
    """`y = x @ W.T (+ bias)` for the int4 weight W held in Marlin tensors, on the GPU.

    Args:
        x (`float16`/`bfloat16`, shape `(..., K)`, CUDA): activations.
        B (`int32`, `(K / 16, 2N)`): Marlin-packed codes. s (`(G, N)`): Marlin-permuted scales (any float
            dtype); G = 1 for `group_size` -1, else K / group_size.
        group_size: -1, 32, 64 or 128.
        z (`int32`, `(G, N / 8)`): Marlin zero points (asymmetric); absent: symmetric, zero 8.
        shift (`(G, N)`): optimum-quanto's float shift, permuted like the scales: `W = code * s - shift`.
        perm (`int32`/`int64`, `(K,)`): act-order sort permutation (Marlin row j = source input row perm[j]).
        bias (`(N,)`): added to the output.
        config: launch shape override (benchmarks); default `pick_config`, or for one float16 or bfloat16 row
            of a symmetric layer `gemv_config`'s GEMV (float16 sums, while PyTorch allows reduced-precision
            sums for x's dtype: `gemv_fits`).
    Returns: `(..., N)` tensor in x's dtype on x's device.
    Raises: ValueError when `unsupported_reason` names a reason (no GPU sync here: g_idx is not checked).
    """
    reason = unsupported_reason(B, s, group_size=group_size, dtype=x.dtype, z=z, shift=shift, perm=perm)
    if reason is not None:
        raise ValueError(reason)
    k, n = 16 * int(B.shape[0]), int(B.shape[1]) // 2
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} input features, the layer {k}")
    if bias is not None and tuple(bias.shape) != (n,):
        raise ValueError(f"bias must be [{n}], got {tuple(bias.shape)}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)
    if x2.shape[0] == 0:
        return torch.empty((*lead, n), dtype=x.dtype, device=x.device)
    gemm = plan(x2.shape[0], x.dtype, x.device, B, s, group_size=group_size, z=z, shift=shift, perm=perm, bias=bias,
                config=config)
    return gemm(x2).reshape(*lead, n)


@dataclass(frozen=True)
class GemmPlan:
    """Everything about a `marlin_gemm` call but x, for one row count, activation dtype and device (`plan`):
    the launches with their grids and fixed arguments, and what a call allocates and computes before them.
    Called with x as `[m, K]` (unit stride along K) it returns `[m, N]`. Kept per layer by the runtime, it
    spares an eager call the checks, the launch rule and Triton's argument binding (`triton_launch.Launch`)."""

    m: int
    n: int
    k: int
    dtype: torch.dtype
    device: torch.device
    launches: tuple[Launch, ...]
    ws_splits: int = 0
    """Rows of the float32 split-K workspace `[ws_splits, m, N]` a call allocates (0: none)."""
    gather: torch.Tensor | None = None
    """int64 `perm`: x gathered by it once a call (`KernelConfig.xperm`)."""
    sum_width: int = 0
    """Sums of x over consecutive runs of this many columns, in float32, passed to the kernels (0: none)."""
    x_align: int = 0
    """Bytes x's start must be a multiple of (the GEMV reads x as int32 pairs); x is copied where it is not."""

    def __call__(self, x2: torch.Tensor) -> torch.Tensor:
        if x2.shape != (self.m, self.k):
            raise ValueError(f"this plan takes x of shape [{self.m}, {self.k}], got {tuple(x2.shape)}")
        if x2.stride(-1) != 1 or (self.m > 1 and x2.stride(0) != self.k):  # the kernels take rows k apart
            x2 = x2.contiguous()
        if self.x_align and x2.data_ptr() % self.x_align:
            x2 = x2.clone()
        out = torch.empty((self.m, self.n), dtype=self.dtype, device=self.device)
        ws = out if not self.ws_splits else torch.empty(
            (self.ws_splits, self.m, self.n), dtype=torch.float32, device=self.device)
        xk = x2 if self.gather is None else x2.index_select(1, self.gather)
        values: dict[str, torch.Tensor] = {"x": x2, "xk": xk, "out": out, "ws": ws}
        if self.sum_width:
            values["sums"] = torch.sum(xk.reshape(self.m, -1, self.sum_width), dim=-1, dtype=torch.float32)
        here = self.device.type != "cuda" or torch.cuda.current_device() == (self.device.index or 0)
        with contextlib.nullcontext() if here else torch.cuda.device(self.device):
            for launch in self.launches:
                launch(values)
        return out


def _grid_programs(per_sm: int, sms: int, tiles_m: int, total: int, most: int) -> int:
    """Programs a row tile of a balanced grid of `total` steps a row tile: exactly `-per_sm` when it
    is negative (tests), else `per_sm` a multiprocessor shared by the `tiles_m` row tiles, at least 1 and at most
    `most`; never more than the steps, and 0 (no such grid) where a program's step indices would pass int32."""
    programs = -per_sm if per_sm < 0 else max(1, min(per_sm * sms // tiles_m, most))
    programs = min(programs, total)
    return 0 if total * programs >= 2**31 else programs


def _gemv_plan(cfg: KernelConfig, dtype: torch.dtype, device: torch.device, B: torch.Tensor, s: torch.Tensor,
               z: torch.Tensor | None, single: bool, bias: torch.Tensor | None, takes: bool) -> GemmPlan:
    """The `GemmPlan` of the one-row GEMV (`KernelConfig.gemv`): the GEMV's partials, then the reduce. `takes`:
    the call is one the kernel runs (one float16 or bfloat16 row, symmetric or Marlin zero points, no act-order,
    group 128 or one group, K a multiple of 128)."""
    k, n = 16 * int(B.shape[0]), int(B.shape[1]) // 2
    if not takes or n % (64 * cfg.nb):
        raise ValueError("the GEMV takes one row of float16 or bfloat16 x, a layer of group 128 or one group, "
                         "symmetric or with Marlin zero points, no act-order, K a multiple of 128 and N of "
                         f"{64 * cfg.nb}")
    steps = k // 128
    split = max(1, min(cfg.split_k, steps))
    index = device.index or 0 if device.type == "cuda" else None
    s = s.contiguous()
    OUT, WS = Slot("out"), Slot("ws")
    B = B.contiguous()
    before, after = _dependent_launch(cfg, index)
    gemv = Launch(_gemv_kernel(), (n // (64 * cfg.nb), split), (
        Slot("x"), B, s, z.contiguous() if z is not None else B, WS, n, steps, 7),
        dict(SINGLE=single, NB=cfg.nb, SPLIT=split, ZEROS=z is not None, X_BF16=dtype == torch.bfloat16,
             num_warps=4, num_stages=3, **before), index)
    block = _reduce_block(n, _sm_count(index) if index is not None else 132)
    reduce = Launch(_kernels().splitk_reduce_kernel, (-(-n // block),), (
        WS, bias if bias is not None else s, OUT, 1, n, n, int(bias is not None)),
        dict(SPLIT=split, BLOCK=block, **after), index)
    return GemmPlan(m=1, n=n, k=k, dtype=dtype, device=device, launches=(gemv, reduce), ws_splits=split,
                    x_align=4)


def plan(m: int, dtype: torch.dtype, device: torch.device, B: torch.Tensor, s: torch.Tensor, *, group_size: int,
         z: torch.Tensor | None = None, shift: torch.Tensor | None = None, perm: torch.Tensor | None = None,
         bias: torch.Tensor | None = None, config: KernelConfig | None = None, eager: bool = False) -> GemmPlan:
    """The `GemmPlan` of `marlin_gemm` for `m` rows of `dtype` activations on `device` (m > 0; the arguments as
    `marlin_gemm` takes them, already checked by `unsupported_reason`). The plan holds these tensors (or
    contiguous / int32 copies of them where they are not): it runs the weights it was made from. `eager`: for
    calls outside CUDA-graph capture (`for_eager`'s launch shape, unless `config` is given)."""
    k, n = 16 * int(B.shape[0]), int(B.shape[1]) // 2
    single = group_size == -1 or group_size >= k
    gs = k if single else group_size
    zmode = 2 if shift is not None else (1 if z is not None else 0)
    sms = _sm_count(device.index or 0) if device.type == "cuda" else 132
    cfg = config or (gemv_fits(m, dtype, zmode, perm) and gemv_config(n, k, gs, sms, dtype)) or pick_config(
        m, n, k, gs, sms, zmode)
    if cfg.gemv:
        takes = _gemv_runs(m, dtype, zmode, perm) and gs in (128, k) and k % 128 == 0
        return _gemv_plan(cfg, dtype, device, B, s, z, gs == k, bias, takes)
    if eager and config is None:
        cfg = for_eager(cfg, m, n, k)
    tiles = k // 16
    bt = cfg.bt
    steps = tiles // bt
    fast = cfg.fast and s.dtype == dtype and (shift is None or shift.dtype == dtype)
    split = _even_split(cfg.split_k, steps)
    per_split = tiles // split
    uniform = single or gs % (16 * bt) == 0
    B = B.contiguous()
    s = s.contiguous()
    if s.data_ptr() % 4:  # the fast kernel reads the scales of a column pair as one int32
        s = s.clone()
    tk = _kernels()
    tiles_n, tiles_m = -(-n // (64 * cfg.nb)), -(-m // cfg.bm)
    total = tiles_n * steps
    zred = (fast and cfg.zred and zmode == 1 and not single and cfg.scale_acc and uniform
            and (perm is None or cfg.xperm))
    balanced = 0
    if fast and cfg.balance and not zred:
        balanced = _grid_programs(cfg.balance, sms, tiles_m, total, total)
    if balanced:
        ws_splits = -(-balanced // tiles_n) + 1  # the most programs that share one column tile
    else:
        ws_splits = split if split > 1 or zred else 0
    grid = (tiles_n, tiles_m, split)
    dummy = B
    index = device.index or 0 if device.type == "cuda" else None
    X, XK, OUT, WS, SUMS = Slot("x"), Slot("xk"), Slot("out"), Slot("ws"), Slot("sums")
    zt = z.contiguous() if z is not None else dummy
    perm32 = perm.to(torch.int32).contiguous() if perm is not None else dummy
    bias_arg = bias if bias is not None else s
    common = (X, B, s, zt, shift.contiguous() if shift is not None else s, perm32, bias_arg, OUT, WS,
              m, n, k, n, gs, per_split)
    launches: list[Launch] = []
    gather, sum_width = None, 0
    split_reduce = split > 1 and not balanced and not zred  # the call ends in `splitk_reduce_kernel`
    before, after = _dependent_launch(cfg, index) if fast and split_reduce else ({}, {})
    if fast:
        has_perm = perm is not None
        if has_perm and cfg.xperm:  # one gather per call instead of a perm lookup per tile
            gather, has_perm = perm.to(device=device, dtype=torch.int64), False
        consts = dict(ZMODE=zmode, UNIFORM_G=uniform, SINGLE=single, HAS_PERM=has_perm,
                      IS_FP16=dtype == torch.float16, BM=cfg.bm, BT=bt, NB=cfg.nb,
                      SCALE_ACC=cfg.scale_acc and uniform and zmode != 2,
                      num_warps=cfg.warps, num_stages=cfg.stages,
                      **({"maxnreg": cfg.maxnreg} if cfg.maxnreg else {}))
        g_shift = 0 if single else gs.bit_length() - 1
        fold = cfg.fold and consts["SCALE_ACC"] and zmode == 1
        b_arg: Any = B
        sh_arg = common[4]
        tma = cfg.tma and _tma_ok(B)
        if tma:
            from triton.tools.tensor_descriptor import TensorDescriptor

            b_arg = TensorDescriptor.from_tensor(B, [bt, 128 * cfg.nb])
        zlate = cfg.zlate and fold and not single and not has_perm
        if zred:
            fold = zlate = False
            consts["ZMODE"] = 0
        xsum = (cfg.xsum or zlate) and fold and not single and not has_perm
        if xsum:
            sh_arg, sum_width = SUMS, 16 * bt
        launches.append(Launch(tk.marlin_gemm_swap_kernel, (balanced, tiles_m, 1) if balanced else grid, (
            XK, b_arg, s, zt, sh_arg, *common[5:9], m, n, k, n, g_shift, steps, int(bias is not None),
            balanced or split),
            dict(FOLD=fold, TMA=tma, ZPRE=cfg.zpre and not zlate, XSUM=xsum, ZLATE=zlate, PARTIAL=zred,
                 BALANCED=bool(balanced), **before, **consts), index))
        if balanced:
            block = _reduce_block(m * n, sms)
            launches.append(Launch(tk.segment_reduce_kernel, (-(-m * n // block),), (
                WS, bias_arg, OUT, m, n, n, int(bias is not None), steps, balanced),
                dict(TILE_N=64 * cfg.nb, SEGMENTS=ws_splits, BLOCK=block), index))
        if zred:
            sum_width = gs
            launches.append(Launch(tk.splitk_zero_reduce_kernel, (-(-n // 64), -(-m // 16)), (
                WS, SUMS, s, zt, bias_arg, OUT, m, n, n, k // gs, int(bias is not None)),
                dict(SPLIT=split, BM=16, BN=64, GC=16), index))
    else:
        launches.append(Launch(tk.marlin_gemm_kernel, grid, (
            *common, int(single), int(perm is not None), int(bias is not None), split),
            dict(ZMODE=zmode, UNIFORM_G=uniform, BM=cfg.bm, BT=bt, NB=cfg.nb, num_warps=cfg.warps,
                 num_stages=cfg.stages), index))
    if split_reduce:
        block = _reduce_block(m * n, sms)
        launches.append(Launch(tk.splitk_reduce_kernel, (-(-m * n // block),), (
            WS, bias_arg, OUT, m, n, n, int(bias is not None)), dict(SPLIT=split, BLOCK=block, **after), index))
    return GemmPlan(m=m, n=n, k=k, dtype=dtype, device=device, launches=tuple(launches), ws_splits=ws_splits,
                    gather=gather, sum_width=sum_width)
