"""The backends a `MarlinLinear` can run on, in order of preference, and how one is chosen.

A backend is a name, `unsupported_reason(layer, x) -> str | None` and `forward(layer, x)`. For each
(device, dtype) of its input, a layer runs the first backend in `order()` that does not refuse it (the
choice is cached on the layer). When a backend made for that device refuses a layer (e.g. bf16
activations for the fp16 Marlin kernel), the layer falls back to the next one and the reason is logged
once per (backend, reason) on the "marlin_convert" logger.

Adding a backend is one entry in `BACKENDS` (and a place in `DEFAULT_ORDER`).

The default order is the one rule for which CUDA kernel serves a layer (`default_order`, per layer):
optimum-quanto's Marlin CUDA kernel where it can (float16 activations, group size 128 or per-column, N a
multiple of 256, optimum-quanto installed), our Triton Marlin GEMM (`runtime/triton_gemm.py`: float16 and
bfloat16, groups -1/32/64/128, no compiler) for every other CUDA layer, and the exact reference path
elsewhere; except that the Triton GEMM comes first where it measured faster than the CUDA kernel at every
batch (m = 1, 16, 64, 256, fp16, the runtime's two backends timed side by side):
- symmetric layers, group size 128 or per-column (-1), whatever N: with group 128
  1.01-1.53x Marlin's speed on 28672x8192, 8192x28672, 14336x4096 and 4096x14336, 1.16-2.12x on 4096x4096,
  1.6-7.4x on 1024x4096; per-column 1.26-1.54x on the two large shapes, 2.1-3.9x on 4096x4096, 3.0-10x
  on 1024x4096 (Marlin adds the per-column zero-point term in a second pass); with act-order (x gathered
  once a call at 1-16 rows of large layers, round 10's default), the H200 run of 2026-12-03 00:23 UTC
  (round 10, "act-order against Marlin"): group 128 1.06-1.31x on 28672x8192 and 8192x28672 except 0.99x
  (93.6 against 92.7 us, level) at 64 rows of 28672x8192, 1.03-1.58x on 4096x4096; per-column 1.21-1.39x
  and 1.75-2.99x;
- per-column Marlin zero points without act-order, whatever N: 1.04-1.39x Marlin's speed on 28672x8192 and
  8192x28672, 1.9-3.5x on 4096x4096 and 3584x3584, 2.1-10x on 1024x4096 and 512x3584 (zero points folded
  in after the dot at 1-16 rows), the H200 run of 2026-12-03 07:02 UTC (round 11, "zero points folded");
- every layer of at most `TRITON_FIRST_MAX_N` (1024) output features, zero points, quanto shift and
  act-order included: 1.09-10x on 1024x4096 (Marlin's kernel takes 21-82 us there whatever the mode, ours
  6-28). Smaller N was not timed: Marlin's fixed cost is taken to hold below;
- per call, not per layer: zero points of group 128 without act-order, at most
  `TRITON_FIRST_ZERO_POINTS_MAX_N` (4608) output features, in calls of at most
  `TRITON_FIRST_ZERO_POINTS_MAX_ROWS` (16) rows of x (a decode step's batch), and of at most
  `TRITON_FIRST_ZERO_POINTS_WIDE_ROWS` (64) rows for layers of at most `TRITON_FIRST_ZERO_POINTS_WIDE_WEIGHTS`
  (2**24) weights: 1.07-1.44x Marlin's speed at 1 and 16 rows on 3584x3584, 4096x4096, 4608x3584 (round 20,
  `bench_gemm.py --modes g128+z`, the runtime's two backends side by side, H200 2026-12-03 22:48 UTC), 4096x14336
  and 3584x18944 (round 19, 21:17 UTC), and 2048x4096 1.9x (timed at split 16; its served split 8 took
  1.07-1.11x that time); at 17, 32 and 64 rows (round 21, H200 2026-12-04 01:10-01:20 UTC, after round 21's
  re-split) 1.18-1.52x on 4608x3584, 1.40-1.77x on 4096x4096, 1.96-2.36x on 3584x3584, 2.73-3.77x on 1536x4096,
  2048x3584 and 2048x4096. Level or slower above 4608 outputs (8192x8192 and 14336x4096 0.93-0.97x, 28672x8192
  and 8192x28672 0.98-1.00x at 1-16 rows; 6144x4096 0.87x at 32 rows), at 17 rows of the larger 4096x14336 and
  3584x18944 (0.86-0.90x; 1.10-1.12x at 64), and above 64 rows (0.67-0.93x at 128 or 256 rows of 3584x3584,
  4096x4096 and 4608x3584, round 21).
All but the last bullet are the H200 runs of 2026-12-02 23:05-23:09 UTC (BENCHMARKS.md, "GEMM: the Triton Marlin
kernel", round 10: `scripts/bench_gemm.py`, and `--modes` for the modes and 1024x4096). Where the rule keeps Marlin
first, it measured faster at some batch (at N >= 3584; 1024 < N < 3584 was not timed; round 11): zero points of
group 128 (Triton 0.69-0.87x at every batch of the large shapes, 0.92-0.95x at 1, 16 and 256 rows of 3584x3584,
0.93x at 256 rows of 4096x4096, before rounds 19 and 20 made 1-16 rows of the smaller layers faster (above); since
round 19 level at 1-16 rows of 28672x8192 and 8192x28672, 0.98-1.00x, and still slower at 64 rows, 0.75-0.90x on
three big shapes in round 18), with act-order too (0.76-0.87x; 0.86-0.96x at
16 and 256 rows of 3584x3584 and 4096x4096), and quanto's shift (0.85-0.96x at all but 64 rows of the large
shapes, 0.95-0.96x at 256 rows of 3584x3584 and 4096x4096); per-column zero points with act-order were not
timed. Groups of 32/64 and bfloat16 run on the Triton GEMM whatever the order (Marlin's kernel refuses them).
The choice is made once per layer and (device, dtype, eager, `row_band` of x's rows: at most 16, 64, or more).

Those timings are CUDA-graph replays, and the rule above is for calls captured in a CUDA graph. Called eagerly
(transformers' `generate` without graph capture), a call costs its host time where that exceeds the GPU's:
Marlin's kernel is one torch op (21-78 us of host time on the H200's host, median 35), the Triton GEMM one or
two launches from the layer's launch plan (35-119 us, median 55; `triton_gemm.GemmPlan`). So eager calls
(`MarlinLinear.forward` outside graph capture: `eager=True`) take `DEFAULT_ORDER`, the CUDA kernel first
wherever it serves: in GEMM round 15 (three runs, 1 and 16 rows, fp16 group 128, symmetric, zero points and
act-order) the Triton GEMM first took 1.09-2.25x its time eagerly on 4096x4096 and 1024x4096, and 0.85-2.26x on
28672x8192 and 8192x28672 (faster in 5 of 36 comparisons there, by at most 1.18x: the host's time swings
between runs, the CUDA kernel's GPU-bound time does not). With optimum-quanto installed, the first eager call
of any fp16 group-128 layer builds its extension (about 90 s). Eager Triton calls plan their own launch shape
(`triton_gemm.for_eager`, GEMM round 16: 30-45 us a call on 4096x4096 and 1024x4096 instead of 46-84); quanto's
kernel took 23-61 us there in the same runs, ahead at some modes and batches, so the eager rule stands.

Choose the order with `set_order(...)` or the environment variable `MARLIN_CONVERT_BACKENDS`
(comma-separated names, e.g. `reference` to run everything through the exact reference path).
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn.functional as F

from .dequant import dequantize_marlin
from .gemm_rules import reduced_sums_allowed

if TYPE_CHECKING:
    from .linear import MarlinLinear

__all__ = ["Backend", "BACKENDS", "DEFAULT_ORDER", "PLAN_MAX_ROWS", "PLANS_PER_LAYER", "TRITON_FIRST_MAX_N",
           "TRITON_FIRST_GROUPS", "TRITON_FIRST_ZERO_POINTS_MAX_N", "TRITON_FIRST_ZERO_POINTS_MAX_ROWS",
           "TRITON_FIRST_ZERO_POINTS_WIDE_ROWS", "TRITON_FIRST_ZERO_POINTS_WIDE_WEIGHTS", "row_band", "rows_of",
           "default_order", "order", "set_order", "generation", "select", "dense_weight"]

log = logging.getLogger("marlin_convert")


@dataclass(frozen=True)
class Backend:
    name: str
    device_types: tuple[str, ...]
    """Devices it is made for: a refusal there is worth a message; elsewhere it is just not applicable."""
    unsupported_reason: Callable[["MarlinLinear", torch.Tensor], "str | None"]
    forward: Callable[["MarlinLinear", torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- reference


def dense_weight(layer: "MarlinLinear", dtype: torch.dtype) -> torch.Tensor:
    """The layer's `[n, k]` weights dequantized from its Marlin tensors (float32 math), cast to `dtype`."""
    t = layer.tensors()
    w = dequantize_marlin(t["B"], t["s"], n=layer.out_features, k=layer.in_features,
                          group_size=layer.spec.group_size, z=t.get("z"), shift=t.get("shift"),
                          perm=t.get("perm"), g_idx=t.get("g_idx"))
    return w.to(dtype)


def _reference_forward(layer: "MarlinLinear", x: torch.Tensor) -> torch.Tensor:
    bias = None if layer.bias is None else layer.bias.to(x.dtype)
    return F.linear(x, dense_weight(layer, x.dtype), bias)


def _reference_unsupported(layer: "MarlinLinear", x: torch.Tensor) -> str | None:
    return None if x.is_floating_point() else f"input dtype {x.dtype} is not floating point"


# ----------------------------------------------------------------------------- optimum-quanto Marlin GEMM

_QUANTO_GROUP = 128
_quanto_missing: list[str] = []


@dataclass
class _QuantoState:
    lib: Any
    s: torch.Tensor  # float16 [g, n], Marlin order
    sz: torch.Tensor  # float16 [g, n], Marlin order: the kernel's scaled zero point (-zero * s, or -shift)
    sz_natural: torch.Tensor | None  # float32 [1, n] natural order, per-column layers only (the kernel skips it)
    perm: torch.Tensor | None  # int64 [k]
    workspace: torch.Tensor


def _single(layer: "MarlinLinear") -> bool:
    from ..layout import uses_single_scale_perm

    return uses_single_scale_perm(group_size=layer.spec.group_size, k=layer.in_features)


def _quanto_state(layer: "MarlinLinear", device: torch.device) -> _QuantoState | str:
    """Derived once per layer and device: fp16 scales and zero points in the kernel's terms, or why not."""
    from ..layout import permute_scales, unpack_zeros, unpermute_scales

    key = ("quanto", device, torch.float16)
    state = layer._prepared.get(key)
    if state is not None:
        return state  # type: ignore[return-value]
    t, k, n, gs = layer.tensors(), layer.in_features, layer.out_features, layer.spec.group_size
    if "perm" in t and not _single(layer):
        perm, g_idx = t["perm"].to(torch.int64), t["g_idx"].to(torch.int64)
        if not torch.equal(g_idx[perm].cpu(), torch.arange(k) // gs):
            return "act-order groups of unequal size (the kernel has no g_idx)"
    if t["s"].dtype != torch.float16 and not bool(torch.isfinite(t["s"].to(torch.float16)).all()):
        return f"{t['s'].dtype} scales outside the float16 range"
    from .gemm_check import quanto_lib

    s16 = t["s"].to(torch.float16)
    s_nat = unpermute_scales(s16, group_size=gs, k=k).float()
    if "shift" in t:
        sz_nat = -unpermute_scales(t["shift"].to(torch.float16), group_size=gs, k=k).float()
    elif "z" in t:
        sz_nat = -(unpack_zeros(t["z"]).float() * s_nat)
    else:
        sz_nat = -8.0 * s_nat
    sz_nat16 = sz_nat.to(torch.float16)
    state = _QuantoState(
        lib=quanto_lib(), s=s16.contiguous(), sz=permute_scales(sz_nat16, group_size=gs, k=k).contiguous(),
        sz_natural=sz_nat16.float() if _single(layer) else None,
        perm=t["perm"].to(torch.int64) if "perm" in t else None,
        workspace=torch.zeros(n // 128 * 16, dtype=torch.int32, device=device))
    layer._prepared[key] = state
    return state


def _quanto_unsupported(layer: "MarlinLinear", x: torch.Tensor) -> str | None:
    if x.device.type != "cuda":
        return "not a CUDA tensor"
    if x.dtype != torch.float16:
        return f"{x.dtype} activations (optimum-quanto's Marlin kernel takes float16)"
    if layer.B.device != x.device:
        return f"weights on {layer.B.device}, input on {x.device}"
    if torch.cuda.get_device_capability(x.device) < (8, 0):
        return "the Marlin kernel needs compute capability 8.0+"
    if not _single(layer) and layer.spec.group_size != _QUANTO_GROUP:
        return f"group size {layer.spec.group_size} (the kernel has 128 and per-column only)"
    if layer.out_features % 256:  # above 16 rows its only kernel shape is 256 columns wide (thread_n = 256)
        return f"N={layer.out_features} not a multiple of 256"
    if _quanto_missing:
        return _quanto_missing[0]
    try:
        state = _quanto_state(layer, x.device)
    except Exception as e:  # noqa: BLE001 - no optimum-quanto, or its extension does not build here
        _quanto_missing.append(f"optimum-quanto's Marlin kernel is unavailable ({e})")
        return _quanto_missing[0]
    return state if isinstance(state, str) else None


def _quanto_forward(layer: "MarlinLinear", x: torch.Tensor) -> torch.Tensor:
    st = _quanto_state(layer, x.device)
    assert not isinstance(st, str)
    x2 = x.reshape(-1, layer.in_features)
    if st.perm is not None:
        x2 = x2.index_select(1, st.perm)
    elif not x2.is_contiguous():
        x2 = x2.contiguous()
    out = torch.empty((x2.shape[0], layer.out_features), dtype=torch.float16, device=x.device)
    if x2.shape[0] == 0:  # e.g. an MoE expert no token was routed to: the kernel must not see m = 0
        return out.reshape(*x.shape[:-1], layer.out_features)
    st.lib.marlin_gemm_f16i4(x2, layer.B, out, st.s, st.sz, st.workspace, -1, -1, -1, 16)
    if st.sz_natural is not None:  # per-column scales: the kernel leaves out the zero-point term
        out = (out.float() + x2.float().sum(dim=1, keepdim=True) * st.sz_natural).to(torch.float16)
    if layer.bias is not None:
        out = out + layer.bias.to(torch.float16)
    return out.reshape(*x.shape[:-1], layer.out_features)


# ----------------------------------------------------------------------------- Triton Marlin GEMM


def _triton_unsupported(layer: "MarlinLinear", x: torch.Tensor) -> str | None:
    if x.device.type != "cuda":
        return "not a CUDA tensor"
    if layer.B.device != x.device:
        return f"weights on {layer.B.device}, input on {x.device}"
    key = ("triton", x.device)
    if key not in layer._prepared:  # the act-order group check syncs once: do it once per layer and device
        from .triton_gemm import unsupported_reason

        t = layer.tensors()
        layer._prepared[key] = unsupported_reason(
            t["B"], t["s"], group_size=layer.spec.group_size, z=t.get("z"), shift=t.get("shift"),
            perm=t.get("perm"), g_idx=t.get("g_idx")) or ""
    if layer._prepared[key]:
        return layer._prepared[key]  # type: ignore[return-value]
    if x.dtype not in (torch.float16, torch.bfloat16):
        return f"{x.dtype} activations (the Triton kernel takes float16 or bfloat16)"
    return None


PLAN_MAX_ROWS = 64
"""Row counts up to which a layer keeps its Triton launch plans (`triton_gemm.GemmPlan`): decode batches, where
an eager call's host time decides (GEMM round 15). Larger calls plan each time (their GPU time dwarfs it)."""
PLANS_PER_LAYER = 8
"""The most plans a layer keeps, the least recently used dropped first: a decode batch uses one or two row counts,
while an MoE expert sees whatever number of tokens is routed to it."""


@dataclass
class _TritonPlan:
    """A layer's `GemmPlan` for one (device, dtype, rows), with the tensors it was made from: it stands while
    the layer holds the same tensor objects at the same version (`Tensor._version`, bumped by in-place ops such
    as `load_state_dict`'s copies), since the plan may hold derived copies (the bias cast to x's dtype). Writes
    through `.data`, which bypass the version counter, are not seen in such copies."""

    gemm: Any
    sources: tuple[tuple[dict[str, Any], str, torch.Tensor, int], ...]

    @classmethod
    def make(cls, layer: "MarlinLinear", x: torch.Tensor, m: int, eager: bool) -> "_TritonPlan":
        from .triton_gemm import plan

        t = layer.tensors()
        bias = None if layer.bias is None else layer.bias.to(x.dtype)
        gemm = plan(m, x.dtype, x.device, t["B"], t["s"], group_size=layer.spec.group_size, z=t.get("z"),
                    shift=t.get("shift"), perm=t.get("perm"), bias=bias, eager=eager)
        sources = tuple((layer._buffers, name, v, v._version) for name, v in t.items()) + (
            (layer._parameters, "bias", layer.bias, -1 if layer.bias is None else layer.bias._version),)
        return cls(gemm, sources)

    def current(self) -> bool:
        return all(d.get(name) is v and (v is None or v._version == version) for d, name, v, version in self.sources)


def _triton_forward(layer: "MarlinLinear", x: torch.Tensor) -> torch.Tensor:
    if x.numel() == 0:  # e.g. an MoE expert no token was routed to
        return x.new_zeros(*x.shape[:-1], layer.out_features)
    k = layer.in_features
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} input features, the layer {k}")
    m = x.numel() // k
    eager = not torch.cuda.is_current_stream_capturing()  # launched as it comes, or replayed (`for_eager`)
    if m > PLAN_MAX_ROWS:  # planned for this call only
        entry = _TritonPlan.make(layer, x, m, eager)
    else:
        plans = _layer_plans(layer)
        key = (x.device, x.dtype, m, eager, reduced_sums_allowed(x.dtype))
        entry = plans.get(key)
        if entry is None or not entry.current():
            entry = plans[key] = _TritonPlan.make(layer, x, m, eager)
            if len(plans) > PLANS_PER_LAYER:
                plans.popitem(last=False)
        else:
            plans.move_to_end(key)
    return entry.gemm(x.reshape(m, k)).reshape(*x.shape[:-1], layer.out_features)


def _layer_plans(layer: "MarlinLinear") -> "OrderedDict[tuple[torch.device, torch.dtype, int, bool], _TritonPlan]":
    """The layer's Triton launch plans by (device, dtype, rows, eager), least recently used first."""
    plans = layer._prepared.get(("triton-plans",))
    if plans is None:
        plans = layer._prepared[("triton-plans",)] = OrderedDict()
    return plans  # type: ignore[return-value]


# ----------------------------------------------------------------------------- registry

BACKENDS: dict[str, Backend] = {
    "quanto": Backend("quanto", ("cuda",), _quanto_unsupported, _quanto_forward),
    "triton": Backend("triton", ("cuda",), _triton_unsupported, _triton_forward),
    "reference": Backend("reference", ("cpu", "cuda"), _reference_unsupported, _reference_forward),
}
DEFAULT_ORDER: tuple[str, ...] = ("quanto", "triton", "reference")
TRITON_FIRST_MAX_N = 1024
"""Output features up to which every layer prefers the Triton GEMM (see above)."""
TRITON_FIRST_GROUPS = (128, -1)
"""Group sizes whose symmetric layers (with or without act-order) prefer the Triton GEMM at any N (see above)."""
TRITON_FIRST_ZERO_POINTS_MAX_N = 4608
"""Output features up to which layers of group-128 Marlin zero points (no act-order) prefer the Triton GEMM in
calls of at most `TRITON_FIRST_ZERO_POINTS_MAX_ROWS` rows (see above)."""
TRITON_FIRST_ZERO_POINTS_MAX_ROWS = 16
TRITON_FIRST_ZERO_POINTS_WIDE_ROWS = 64
"""Rows of x up to which layers of group-128 Marlin zero points (no act-order) of at most
`TRITON_FIRST_ZERO_POINTS_WIDE_WEIGHTS` weights prefer the Triton GEMM (see above; GEMM round 21)."""
TRITON_FIRST_ZERO_POINTS_WIDE_WEIGHTS = 1 << 24
_order: list[tuple[str, ...]] = []
_said: set[tuple[str, str]] = set()


def default_order(layer: "MarlinLinear | None" = None, *, eager: bool = False, rows: int | None = None
                  ) -> tuple[str, ...]:
    """`DEFAULT_ORDER`, with the Triton GEMM first for the layers (and, given `rows`, the rows of x a call) where
    it measured faster in CUDA graphs (module docstring), unless `eager` (a CUDA call outside graph capture): then
    `DEFAULT_ORDER`, the CUDA kernel first wherever it serves (GEMM round 15)."""
    spec = layer.spec if layer is not None else None
    if layer is not None and not eager and (
            layer.out_features <= TRITON_FIRST_MAX_N
            or (spec.zero_point is None and spec.group_size in TRITON_FIRST_GROUPS)
            or (spec.zero_point == "int" and spec.group_size == -1 and not spec.act_order)
            or (spec.zero_point == "int" and spec.group_size == 128 and not spec.act_order
                and layer.out_features <= TRITON_FIRST_ZERO_POINTS_MAX_N and rows is not None
                and (row_band(rows) == 0 or (row_band(rows) == 1 and layer.out_features * layer.in_features
                                             <= TRITON_FIRST_ZERO_POINTS_WIDE_WEIGHTS)))):
        return ("triton",) + tuple(n for n in DEFAULT_ORDER if n != "triton")
    return DEFAULT_ORDER


def row_band(rows: int) -> int:
    """Which of `default_order`'s row ranges a call of `rows` rows of x falls in: 0 up to
    `TRITON_FIRST_ZERO_POINTS_MAX_ROWS`, 1 up to `TRITON_FIRST_ZERO_POINTS_WIDE_ROWS`, 2 above (a layer keeps one
    backend choice per band)."""
    return 0 if rows <= TRITON_FIRST_ZERO_POINTS_MAX_ROWS else 1 if rows <= TRITON_FIRST_ZERO_POINTS_WIDE_ROWS else 2


def rows_of(layer: "MarlinLinear", x: torch.Tensor) -> int:
    """The rows of x as the layer multiplies it (all dimensions but the last)."""
    return x.numel() // max(1, layer.in_features)


def order(layer: "MarlinLinear | None" = None, *, eager: bool = False, rows: int | None = None) -> tuple[str, ...]:
    """Backend names in order of preference: `set_order`, else `$MARLIN_CONVERT_BACKENDS`, else
    `default_order(layer, eager=eager, rows=rows)`."""
    if _order:
        return _order[-1]
    env = os.environ.get("MARLIN_CONVERT_BACKENDS")
    if env:
        return tuple(n.strip() for n in env.split(",") if n.strip())
    return default_order(layer, eager=eager, rows=rows)


def set_order(names: Sequence[str] | None) -> None:
    """Prefer these backends (None: back to the default). Layers choose again on their next call."""
    unknown = [n for n in names or () if n not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend {unknown[0]!r}; known: {', '.join(BACKENDS)}")
    _order.clear()
    if names is not None:
        _order.append(tuple(names))
    _generation[0] += 1


_generation = [0]


def generation() -> int:
    """Bumped by `set_order`: layers cache their choice per (device, dtype, generation, eager)."""
    return _generation[0]


def select(layer: "MarlinLinear", x: torch.Tensor, *, eager: bool = False) -> Backend:
    """The first backend of `order(layer, eager=eager, rows=...)` that serves this layer for this input (rows: of
    x, as the layer multiplies it); logs a fallback once."""
    refused = []
    for name in order(layer, eager=eager, rows=rows_of(layer, x)):
        backend = BACKENDS.get(name)
        if backend is None:
            raise ValueError(f"unknown backend {name!r} in MARLIN_CONVERT_BACKENDS; known: {', '.join(BACKENDS)}")
        reason = backend.unsupported_reason(layer, x)
        if reason is None:
            for refused_name, refused_reason in refused:
                if (refused_name, refused_reason) not in _said:
                    _said.add((refused_name, refused_reason))
                    log.warning("marlin_convert: the %r backend cannot serve some layers (%s); they run on %r",
                                refused_name, refused_reason, name)
            return backend
        if x.device.type in backend.device_types:
            refused.append((name, reason))
    raise RuntimeError(f"no marlin_convert backend serves this layer on {x.device} {x.dtype}: "
                       + "; ".join(f"{n}: {r}" for n, r in refused))
