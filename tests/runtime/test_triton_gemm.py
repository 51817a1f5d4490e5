"""The Triton Marlin GEMM (issue #13) against float64 `x @ W.T`, W dequantized here from the layer's source
record (codes, scales, zero points or quanto shift, g_idx: `W[n, k] = (code - zero) * scale[g_idx[k], n]`,
or `scale * code - shift`), never from the Marlin tensors, which come from the package's converter
(`to_marlin`, itself checked byte-equal to vLLM's repack elsewhere).

Error bounds (derived for this kernel, per output element n of row m):
- each weight is formed in float32 exactly up to one float32 rounding (`(code - zero) * scale`: a 5-bit
  integer times an 8- or 11-bit significand is exact; `code * scale - shift` rounds once, relative to the
  result) and rounded once to the activation dtype: relative error <= u (fp16 u = 2^-11, bf16 u = 2^-8);
- products of two fp16/bf16 values are exact in float32; the float32 sum over K (tensor-core order, split-K
  partials added in float32) errs by at most about K * 2^-24 of `sum |x| |w|`: we allow K * 2^-22;
- the output is rounded once to the activation dtype: <= u |y|.
So `|y - ref| <= (u (1 + 2^-22) + K 2^-22) (|x| @ |W|.T) + u |ref| + tiny` elementwise (ELEMENT bound).
The swapped kernel with `fold` (the default for zero points up to 16 rows) adds a zero point in after the
dot: its sums are of the symmetric weights `(code - 8) s` plus `e sum_k x` (`e = (8 - zero) s`), so its
float32 sums err relative to `|x| @ (|code - 8| s + |8 - zero| s)`, which bounds `|x| @ |W|` (triangle
inequality): for zero points the test takes that larger magnitude as `wmag` in place of `|W|`.
(The fast kernel forms `code - zero` exactly in the activation dtype and multiplies by the scale, held in
that dtype: one rounding, the same weight; quanto's `code * scale - shift` is one fused multiply-add: one
rounding, relative to the result. With `scale_acc` it keeps `code - zero` unrounded and scales each group's
float32 sum instead: exact weights, two more float32 roundings per group of at least 32 k, inside the
K * 2^-22 allowance.)
The elementwise bound holds for any input; for random inputs the rounding errors are independent with rms
about u / sqrt(3) per weight and per output, so `||y - ref|| / ||ref||` is about 0.8 u: NORM_BOUND = 2 u.
The one-row GEMV (`KernelConfig.gemv`, float16) sums in float16: each weight `(code - zero) / 64` is exact,
and each chain of 16 products (8 a lane: a product and 7 fused multiply-adds, then the lanes' sum) rounds 9
times, so each term errs by at most gamma_9 = 9u / (1 - 9u) of it, relative to the chain's sum of |terms|, which
sums to `|x| @ |W|` (at most `wmag`): its ELEMENT bound adds gamma_9 `(|x| @ wmag.T)`, and, for products below
fp16's normal range (absolute errors of at most 2^-25 an operation in units of x / 64, 18 a chain of both
lanes, K / 16 chains an output, times 64 max s), `K / 16 * 18 * 2^-19 * max s`. Its rounding errors are
independent: partial sums of j terms of a lane have variance j var(term), so a chain's error variance is
about u^2 / 3 (2 (1 + ... + 8) + 16) var(term) = 29 u^2 var(term) against the chain's own 16 var(term); with
the output's rounding the normwise error is about sqrt(29 / 16 + 1 / 3) u = 1.5 u: GEMV_NORM_BOUND = 3 u.
A wrong tile, block, scale or zero-point order moves each affected output by O(|y|) (checked below: the
bounds must reject a swapped 64-column block, unpermuted scales, unpermuted zero points, a missing perm).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import zlib

import pytest
import torch

from marlin_convert.formats import DenseCodes, QuantizedLinear, to_marlin
from marlin_convert.layout import pack_nibbles

SHAPES = [(64, 128), (192, 384), (1088, 2048)]
"""(N, K): the smallest Marlin layer, and two with N not a multiple of 128 (K = 2048 with small M takes split-K)."""
DTYPES = [torch.float16, torch.bfloat16]
GROUPS = [-1, 32, 64, 128]
MODES = ["sym", "asym", "shift"]
MS = [1, 7, 16, 64, 333]
UNIT = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


@dataclasses.dataclass
class Layer:
    rec: QuantizedLinear
    w: torch.Tensor  # float64 [N, K], dequantized by the test from the record's fields
    wmag: torch.Tensor  # float64 [N, K], what the float32 sums of a weight are relative to (|W| or more)
    marlin: dict[str, torch.Tensor]
    bias: torch.Tensor | None


def _make_layer(n: int, k: int, group_size: int, mode: str, act_order: bool, dtype: torch.dtype, seed: int,
                with_bias: bool, device: str = "cuda") -> Layer:
    gen = torch.Generator(device=device).manual_seed(seed)
    groups = 1 if group_size == -1 else k // group_size
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, device=device, generator=gen)
    scales = (torch.rand(groups, n, device=device, generator=gen) * 0.02 + 1e-3).to(dtype)
    zeros = torch.randint(0, 16, (groups, n), dtype=torch.uint8, device=device, generator=gen) if mode == "asym" else None
    shift = ((torch.rand(groups, n, device=device, generator=gen) - 0.3) * 0.1).to(dtype) if mode == "shift" else None
    g_idx = torch.arange(k, device=device) // (k if group_size == -1 else group_size)
    if act_order:
        g_idx = g_idx[torch.randperm(k, device=device, generator=gen)]
    rec = QuantizedLinear(DenseCodes(codes), scales, zeros, shift, g_idx.to(torch.int32) if act_order else None,
                          group_size, {})
    # the test's own dequantization of the source record, in float64
    s = scales.double()[g_idx].t()  # [N, K]
    if mode == "shift":
        w = s * codes.double() - shift.double()[g_idx].t()
        wmag = w.abs()
    else:
        zero = zeros.double()[g_idx].t() if zeros is not None else 8.0
        w = (codes.double() - zero) * s
        # folded zero points: sums of |code - 8| s, then |8 - zero| s times a sum of x
        wmag = ((codes.double() - 8.0).abs() + abs(zero - 8.0)) * s
    marlin = {name: t.to(device) for name, t in to_marlin(rec).items()}
    bias = (torch.randn(n, device=device, generator=gen) * 0.1).to(dtype) if with_bias else None
    return Layer(rec, w, wmag, marlin, bias)


def _run(layer: Layer, x: torch.Tensor, config: object = None, **override: torch.Tensor | None) -> torch.Tensor:
    from marlin_convert.runtime.triton_gemm import marlin_gemm

    t = {**layer.marlin, **override}
    block = torch.full((x.shape[0] * t["B"].shape[1] * 4,), float("nan"), dtype=x.dtype, device=x.device)
    del block  # a freed NaN block in the caching allocator: an unwritten output element shows
    return marlin_gemm(x, t["B"], t["s"], group_size=layer.rec.group_size, z=t.get("z"), shift=t.get("shift"),
                       perm=t.get("perm"), bias=layer.bias, config=config)


GAMMA_9 = 9 * 2.0**-11 / (1 - 9 * 2.0**-11)


def _captured(call, warmups: int = 1):
    """`call` run `warmups` times on a side stream (first calls compile and allocate, which capture forbids), then
    captured in a CUDA graph: the graph, and the output tensor each replay rewrites."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmups):
            call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = call()
    return graph, out


def _failures(layer: Layer, x: torch.Tensor, y: torch.Tensor, gemv: bool = False) -> list[str]:
    """Empty when y is within both bounds of `x @ W.T (+ bias)` (`gemv`: the one-row GEMV's); else what broke
    them."""
    dtype, k = x.dtype, x.shape[1]
    u = UNIT[dtype]
    ref = x.double() @ layer.w.t()
    mag = x.double().abs() @ layer.wmag.t()
    if layer.bias is not None:
        ref = ref + layer.bias.double()
        mag = mag + layer.bias.double().abs()
    out = []
    if tuple(y.shape) != tuple(ref.shape) or y.dtype != dtype:
        return [f"shape/dtype {tuple(y.shape)} {y.dtype}, expected {tuple(ref.shape)} {dtype}"]
    if not bool(torch.isfinite(y).all()):
        return ["non-finite output (unwritten or overflowed)"]
    err = (y.double() - ref).abs()
    bound = (u * (1 + 2.0**-22) + k * 2.0**-22) * mag + u * ref.abs() + 1e-30
    if gemv:  # (bfloat16 x: the chains take x / 16, the sums scaled back by 16 more)
        back = 64 * (16 if dtype == torch.bfloat16 else 1)
        bound = bound + GAMMA_9 * mag + k / 16 * 18 * 2.0**-25 * back * float(layer.rec.scales.double().abs().max())
        if dtype == torch.bfloat16:  # x / 16 rounded to fp16 errs by at most 2^-25 below fp16's normal range
            bound = bound + 2.0**-21 * layer.wmag.sum(dim=1)
    worst = float((err / bound).max())
    if worst > 1.0:
        out.append(f"element bound exceeded {worst:.2f}x")
    rel = float(err.norm() / ref.norm())
    norm_bound = (3 if gemv else 2) * u
    if rel > norm_bound:
        out.append(f"normwise rel err {rel:.2e} > {norm_bound:.2e}")
    return out


@pytest.mark.cuda
@pytest.mark.parametrize("act_order", [False, True], ids=["plain", "actorder"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("group_size", GROUPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("n,k", SHAPES, ids=[f"{n}x{k}" for n, k in SHAPES])
def test_marlin_gemm_matches_source_dequant(n, k, dtype, group_size, mode, act_order):
    seed = zlib.crc32(repr((n, k, str(dtype), group_size, mode, act_order)).encode())
    layer = _make_layer(n, k, group_size, mode, act_order, dtype, seed, with_bias=group_size in (-1, 64))
    gen = torch.Generator(device="cuda").manual_seed(seed + 1)
    bad = {}
    for m in MS:
        x = torch.randn(m, k, device="cuda", generator=gen).to(dtype)
        fails = _failures(layer, x, _run(layer, x))
        if fails:
            bad[m] = fails
    assert not bad, bad


@pytest.mark.cuda
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("group_size", GROUPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
def test_each_kernel_and_launch_shape(dtype, group_size, mode):
    """Both kernels (the fast one with its x gather, scaling, zero-point, TMA and grid variants, the float32
    eight-dot one) and several launch shapes, whatever `pick_config` picks for a batch, with split-K."""
    from marlin_convert.runtime.triton_gemm import KernelConfig, marlin_gemm

    layer = _make_layer(192, 1024, group_size, mode, True, dtype, 17 + group_size, with_bias=True)
    gen = torch.Generator(device="cuda").manual_seed(5)
    t = layer.marlin
    bad = {}
    for cfg in (KernelConfig(16, 4, 2, split_k=4), KernelConfig(64, 8, 2),
                KernelConfig(64, 4, 4, xperm=True, split_k=2, scale_acc=False), KernelConfig(128, 4, 4, warps=8),
                KernelConfig(32, 4, 2), KernelConfig(16, 8, 2, scale_acc=False),
                KernelConfig(32, 8, 2, xperm=True, split_k=2), KernelConfig(32, 4, 4, xperm=True),
                KernelConfig(16, 4, 2, fast=False, split_k=4), KernelConfig(64, 8, 2, fast=False),
                # operands swapped (out.T = W x.T, the weights decoded into wgmma's register operand): groups per
                # step or per tile row, perm looked up in the kernel or gathered once, one or two column blocks
                KernelConfig(16, 8, 2, split_k=2), KernelConfig(16, 4, 1, stages=4, split_k=4),
                KernelConfig(64, 8, 2, xperm=True), KernelConfig(32, 8, 1, scale_acc=False),
                KernelConfig(64, 8, 2, warps=8, xperm=True, split_k=2),
                KernelConfig(16, 8, 1, split_k=2), KernelConfig(128, 8, 2, warps=8, xperm=True),
                KernelConfig(16, 8, 2, maxnreg=128, split_k=2),
                # 128-row tiles with K split (round 8: wrong sums with groups of 32/64 before the wgmma wait, at 70 rows)
                KernelConfig(128, 8, 2, warps=8, xperm=True, split_k=2),
                KernelConfig(128, 8, 1, warps=8, split_k=4),
                # one group of 32 / 64 a step (`group_steps`, round 10) with deeper pipelines, at each tile height;
                # x gathered once at 16 rows
                KernelConfig(16, 2, 2, stages=8, maxnreg=128, xperm=True, split_k=2),
                KernelConfig(16, 4, 2, stages=5, split_k=4), KernelConfig(64, 2, 1, stages=8),
                KernelConfig(64, 4, 2, stages=5, xperm=True, split_k=2),
                KernelConfig(128, 2, 2, warps=8, stages=8, xperm=True, split_k=2),
                KernelConfig(128, 4, 2, warps=8, stages=5),
                KernelConfig(16, 8, 2, maxnreg=128, xperm=True, split_k=2),
                # zero points folded in after the dot (`fold`, round 11; no effect without zero points or where a
                # step spans groups), with the register cap, one column block, a group per tile row
                KernelConfig(16, 8, 2, maxnreg=128, fold=True, split_k=2),
                KernelConfig(16, 8, 1, fold=True, xperm=True), KernelConfig(16, 4, 2, fold=True),
                KernelConfig(64, 8, 2, xperm=True, fold=True, split_k=2),
                KernelConfig(128, 8, 2, warps=8, fold=True),
                # round 12: words through a TMA descriptor, the fold's scales / zero words a step ahead, the sums
                # of x per step from the caller (in-kernel where x is gathered by `perm` in the kernel)
                KernelConfig(16, 8, 2, maxnreg=128, fold=True, tma=True, zpre=True, xsum=True, split_k=2),
                KernelConfig(16, 8, 1, fold=True, zpre=True, xsum=True, xperm=True),
                KernelConfig(16, 8, 1, fold=True, tma=True, xsum=True, split_k=4),
                KernelConfig(16, 8, 2, fold=True, zpre=True, split_k=8),
                KernelConfig(16, 4, 2, tma=True, split_k=2),
                KernelConfig(64, 8, 2, xperm=True, tma=True, split_k=2),
                KernelConfig(128, 8, 2, warps=8, tma=True, fold=True, zpre=True),
                # round 13: the zero-point terms added after the dot's loop (`zlate`, from the caller's sums of x)
                # at each tile height; where perm is looked up in the kernel (no `xperm`) it gives way to the
                # in-loop fold; two steps a group
                KernelConfig(16, 8, 2, maxnreg=128, fold=True, tma=True, zlate=True, split_k=2),
                KernelConfig(16, 4, 2, fold=True, zlate=True, zpre=True, split_k=2),
                KernelConfig(64, 8, 2, xperm=True, fold=True, zlate=True, xsum=True, split_k=2),
                KernelConfig(128, 8, 2, warps=8, fold=True, zlate=True, split_k=2),
                # round 14: the symmetric kernel into float32 partials, the zero-point terms added in the reduce
                # (`zred`): K split or not (partials of one split), each tile height, two steps a group (groups
                # of 32: a step spans groups, so it gives way); perm looked up in the kernel gives way too
                KernelConfig(16, 8, 2, maxnreg=128, tma=True, xperm=True, zred=True, split_k=2),
                KernelConfig(16, 8, 2, xperm=True, zred=True),
                KernelConfig(16, 4, 2, xperm=True, zred=True, split_k=4),
                KernelConfig(16, 8, 1, zred=True, split_k=2),
                KernelConfig(64, 8, 2, xperm=True, tma=True, zred=True, split_k=2),
                KernelConfig(128, 8, 2, warps=8, xperm=True, zred=True),
                # round 18: balanced grids (`balance`): ranges that cross column tiles (-3, -5, -7 programs a row
                # tile), one program for all tiles (-1), about 4 a multiprocessor (more than the steps: one each)
                KernelConfig(16, 8, 2, maxnreg=128, tma=True, balance=-3),
                KernelConfig(16, 8, 2, maxnreg=128, fold=True, tma=True, zpre=True, xsum=True, balance=-5),
                KernelConfig(16, 8, 2, fold=True, balance=-7), KernelConfig(16, 8, 1, balance=-1),
                KernelConfig(16, 4, 2, stages=5, balance=4),
                KernelConfig(64, 8, 2, xperm=True, balance=-3)):
        for m in (5, 70):
            x = torch.randn(m, 1024, device="cuda", generator=gen).to(dtype)
            y = marlin_gemm(x, t["B"], t["s"], group_size=group_size, z=t.get("z"), shift=t.get("shift"),
                            perm=t.get("perm"), bias=layer.bias, config=cfg)
            fails = _failures(layer, x, y)
            if fails:
                bad[(repr(cfg), m)] = fails
    assert not bad, bad


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
def test_balanced_grid_runs_repeat_bit_for_bit(dtype):
    """A balanced grid (programs over equal ranges of all column tiles' steps, partials summed in segment order
    by `segment_reduce_kernel`) gives the same bits on every run, as the K split's reduce does: no dependence on
    which program ends last."""
    from marlin_convert.runtime.triton_gemm import KernelConfig, marlin_gemm

    layer = _make_layer(1088, 2048, 128, "asym", False, dtype, 29, with_bias=True)
    t = layer.marlin
    x = torch.randn(9, 2048, device="cuda", generator=torch.Generator(device="cuda").manual_seed(9)).to(dtype)

    def run(cfg):
        return marlin_gemm(x, t["B"], t["s"], group_size=128, z=t["z"], bias=layer.bias, config=cfg)

    for sk in (KernelConfig(16, 8, 2, split_k=4),
               KernelConfig(16, 8, 2, maxnreg=128, fold=True, tma=True, zpre=True, xsum=True, balance=-7)):
        first = run(sk)
        assert not _failures(layer, x, first)
        for _ in range(3):
            assert torch.equal(run(sk), first)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
def test_tma_and_prefetch_give_the_same_bits(dtype):
    """Words read through a TMA descriptor (`tma`) and the fold's scales / zero words loaded a step ahead (`zpre`)
    feed the same values to the same dots: the outputs equal the plain loads' bit for bit. A `B` whose base is
    not 16-byte aligned (a view at an offset of one word) falls back to plain loads, with the same bits; the
    sums of x per step from the caller (`xsum`; at `BT` = 4, two steps a group) stay within the bounds."""
    from marlin_convert.runtime import triton_gemm
    from marlin_convert.runtime.triton_gemm import KernelConfig, marlin_gemm

    gen = torch.Generator(device="cuda").manual_seed(37)
    for i, (mode, group_size, act_order) in enumerate((("sym", 128, False), ("asym", 128, True), ("asym", -1, False),
                                                       ("sym", 64, False))):
        layer = _make_layer(1088, 2048, group_size, mode, act_order, dtype, 50 + i, with_bias=True)
        t = dict(layer.marlin)
        b = t["B"]
        shifted = torch.empty(b.numel() + 1, dtype=b.dtype, device=b.device)[1:].view(b.shape)
        shifted.copy_(b)
        assert shifted.data_ptr() % 16 and not triton_gemm._tma_ok(shifted) and triton_gemm._tma_ok(b)
        for m, cfg in ((3, KernelConfig(16, 8, 2, fold=True, maxnreg=128, split_k=4)),
                       (5, KernelConfig(16, 4, 1, fold=True, xperm=True)),
                       (40, KernelConfig(64, 8, 2, xperm=True, split_k=2))):
            x = torch.randn(m, 2048, device="cuda", generator=gen).to(dtype)

            def run(c, bw=b):
                return marlin_gemm(x, bw, t["s"], group_size=group_size, z=t.get("z"), perm=t.get("perm"),
                                   bias=layer.bias, config=c)

            plain = run(cfg)
            assert not _failures(layer, x, plain), (mode, group_size, m)
            for variant in (dict(tma=True), dict(zpre=True), dict(tma=True, zpre=True)):
                c = dataclasses.replace(cfg, **variant)
                assert torch.equal(run(c), plain), (mode, group_size, m, variant)
                assert torch.equal(run(c, shifted), plain), (mode, group_size, m, variant, "unaligned")
            with_sums = run(dataclasses.replace(cfg, tma=True, zpre=True, xsum=True))
            assert not _failures(layer, x, with_sums), (mode, group_size, m)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
def test_swapped_tiles_that_accumulate_in_the_dot(dtype):
    """The swapped kernel where the `wgmma`s accumulate in the dot (one group, groups of 32/64 within a step,
    quanto's shift, zero points per tile row): 64- and 128-row tiles with and without K split, many steps
    (K = 4096, 250 rows). Before the kernel waited for a step's `wgmma`s (BENCHMARKS.md GEMM round 9), the
    128-row tiles with K split and groups of 32 gave relative errors of about 2e3 on the H200 at this layer
    shape and batch (a reproduction beside the test, other random values)."""
    from marlin_convert.runtime.triton_gemm import KernelConfig, marlin_gemm

    gen = torch.Generator(device="cuda").manual_seed(47)
    bad = {}
    for i, (mode, group_size) in enumerate((("sym", 32), ("sym", 64), ("sym", -1), ("shift", 128), ("asym", 32))):
        layer = _make_layer(448, 4096, group_size, mode, False, dtype, 60 + i, with_bias=False)
        t = layer.marlin
        x = torch.randn(250, 4096, device="cuda", generator=gen).to(dtype)
        for cfg in (KernelConfig(128, 8, 2, warps=8, split_k=2), KernelConfig(128, 8, 2, warps=8),
                    KernelConfig(64, 8, 2, split_k=4), KernelConfig(64, 8, 1)):
            y = marlin_gemm(x, t["B"], t["s"], group_size=group_size, z=t.get("z"), shift=t.get("shift"), config=cfg)
            fails = _failures(layer, x, y)
            if fails:
                bad[(mode, group_size, repr(cfg))] = fails
    assert not bad, bad


@pytest.mark.cuda
def test_leading_dims_and_strided_input():
    layer = _make_layer(192, 384, 128, "asym", True, torch.bfloat16, 7, with_bias=True)
    from marlin_convert.runtime.triton_gemm import marlin_gemm

    x = torch.randn(2, 3, 2 * 384, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
    x = x.to(torch.bfloat16)[..., ::2]  # non-contiguous last dim
    t = layer.marlin
    y = marlin_gemm(x, t["B"], t["s"], group_size=128, z=t["z"], perm=t["perm"], bias=layer.bias)
    assert y.shape == (2, 3, 192)
    assert not _failures(layer, x.reshape(6, 384), y.reshape(6, 192))


def _swap_block(b: torch.Tensor) -> torch.Tensor:
    """B with its first two 64-column blocks swapped (each is 128 words of every tile row)."""
    v = b.view(b.shape[0], -1, 128).clone()
    v[:, [0, 1]] = v[:, [1, 0]]
    return v.view(b.shape)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("group_size", [-1, 128])
def test_layout_damage_fails_the_bounds(dtype, group_size):
    """The check can fail: each kind of layout damage is rejected (the undamaged layer passes), through the
    default launch shape and through the zero-point terms added in the reduce (`zred`)."""
    from marlin_convert.runtime.triton_gemm import KernelConfig

    n, k = 192, 1024
    layer = _make_layer(n, k, group_size, "asym", True, dtype, 11, with_bias=False)
    x = torch.randn(16, k, device="cuda", generator=torch.Generator(device="cuda").manual_seed(3)).to(dtype)
    for config in (None, KernelConfig(16, 8, 2, xperm=True, zred=True, split_k=2)):
        _assert_damage_caught(layer, x, config)


GEMV_SHAPES = [(64, 128), (192, 384), (1088, 2048), (256, 4096)]


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["sym", "asym"])
@pytest.mark.parametrize("group_size", [-1, 128])
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("n,k", GEMV_SHAPES, ids=[f"{n}x{k}" for n, k in GEMV_SHAPES])
def test_one_row_gemv_matches_source_dequant(n, k, dtype, group_size, mode):
    """The one-row GEMV (`KernelConfig.gemv`), float16 or bfloat16 x, symmetric or with Marlin zero points
    (folded: the bound's `wmag`), at one, two, an uneven and the most splits of its steps, one or two column
    blocks a program, with the GEMV's bounds; and x starting at an odd element (copied to read it as int32
    pairs)."""
    from marlin_convert.runtime.triton_gemm import KernelConfig

    seed = zlib.crc32(repr(("gemv", n, k, str(dtype), group_size, mode)).encode())
    layer = _make_layer(n, k, group_size, mode, False, dtype, seed, with_bias=group_size == -1)
    gen = torch.Generator(device="cuda").manual_seed(seed + 1)
    bad = {}
    for split in sorted({1, 2, 3, k // 128}):
        for nb in (1, 2) if n % 128 == 0 else (1,):
            x = torch.randn(1, k, device="cuda", generator=gen).to(dtype)
            fails = _failures(layer, x, _run(layer, x, KernelConfig(1, 8, nb, split_k=split, gemv=True)), gemv=True)
            if fails:
                bad[split, nb] = fails
    odd = torch.randn(k + 1, device="cuda", generator=gen).to(dtype)[1:].view(1, k)
    assert odd.data_ptr() % 4
    fails = _failures(layer, odd, _run(layer, odd, KernelConfig(1, 8, 1, split_k=2, gemv=True)), gemv=True)
    if fails:
        bad["odd x"] = fails
    assert not bad, bad


@pytest.mark.cuda
@pytest.mark.parametrize("group_size", [-1, 128])
def test_gemv_layout_damage_fails_the_bounds(group_size):
    """The GEMV's check can fail: a swapped 64-column block, scales and zero points in source order are
    rejected (the undamaged layer passes); a call the GEMV does not take (two rows) is refused."""
    from marlin_convert.runtime.triton_gemm import KernelConfig

    layer = _make_layer(256, 1024, group_size, "asym", False, torch.float16, 12, with_bias=False)
    x = torch.randn(1, 1024, device="cuda", generator=torch.Generator(device="cuda").manual_seed(4)).to(torch.float16)
    cfg = KernelConfig(1, 8, 2, split_k=3, gemv=True)
    assert not _failures(layer, x, _run(layer, x, cfg), gemv=True)
    damaged = {"swapped 64-column block": {"B": _swap_block(layer.marlin["B"])},
               "scales in source order": {"s": layer.rec.scales.contiguous()},
               "zero points in source order": {"z": pack_nibbles(layer.rec.zeros.cpu()).cuda()}}
    for what, override in damaged.items():
        assert _failures(layer, x, _run(layer, x, cfg, **override), gemv=True), f"{what} was not caught"
    with pytest.raises(ValueError, match="GEMV takes one row of float16 or bfloat16"):
        _run(layer, torch.cat([x, x]), cfg)


def _assert_damage_caught(layer: Layer, x: torch.Tensor, config: object) -> None:
    assert not _failures(layer, x, _run(layer, x, config))
    rec = layer.rec
    natural_zeros = pack_nibbles(rec.zeros.cpu()).cuda()  # zero points packed without Marlin's order
    damaged = {
        "swapped 64-column block": {"B": _swap_block(layer.marlin["B"])},
        "scales in source order": {"s": rec.scales.contiguous()},
        "zero points in source order": {"z": natural_zeros},
    }
    if layer.rec.group_size != -1:  # with one group the sort permutation is the identity
        damaged["act-order perm left out"] = {"perm": None}
    for what, override in damaged.items():
        assert _failures(layer, x, _run(layer, x, config, **override)), f"{what} was not caught ({config})"


@pytest.mark.cuda
def test_unsupported_reason():
    from marlin_convert.runtime.triton_gemm import unsupported_reason

    layer = _make_layer(192, 384, 128, "asym", True, torch.float16, 5, with_bias=False)
    t = layer.marlin
    assert unsupported_reason(t["B"], t["s"], group_size=128, dtype=torch.float16, z=t["z"], perm=t["perm"],
                              g_idx=t["g_idx"]) is None
    assert "float16 or bfloat16" in unsupported_reason(t["B"], t["s"], group_size=128, dtype=torch.float32)
    assert "group size" in unsupported_reason(t["B"], t["s"], group_size=256)
    uneven = t["g_idx"].clone()
    uneven[uneven == 0] = 1  # group 0 empty, group 1 twice as large
    assert "unequal" in unsupported_reason(t["B"], t["s"], group_size=128, perm=t["perm"], g_idx=uneven)


def test_unsupported_reason_without_gpu_names_the_need(monkeypatch):
    """On a machine without a GPU (CI) the backend declines with one line instead of failing later."""
    from marlin_convert.runtime import triton_gemm

    monkeypatch.setattr(triton_gemm, "available", lambda: False)
    b = torch.zeros(8, 128, dtype=torch.int32)
    reason = triton_gemm.unsupported_reason(b, torch.ones(1, 64, dtype=torch.float16), group_size=-1)
    assert reason is not None and "CUDA" in reason
    assert math.isfinite(triton_gemm.pick_config(1, 4096, 4096, 128).split_k)


def test_pick_config_takes_one_group_a_step_and_gathers_x_once():
    """Groups of 32 / 64: one group a step (2 / 4 tile rows) at every tile height, so each step's sums are
    scaled once (the loop Triton compiles well); 128 and one group: 8 rows; x gathered once (`xperm`) above
    16 rows, and up to 16 rows above 2**26 weights; the K split keeps at least 512 k a split at 16 rows, 1024 k
    above (256 where rounds 20 and 21 re-split a small layer of group 128 or one group)."""
    from marlin_convert.runtime import triton_gemm

    for m in (1, 16, 64, 256):
        for n, k in ((28672, 8192), (1024, 4096), (192, 1024)):
            for gs, bt in ((32, 2), (64, 4), (128, 8), (k, 8)):
                cfg = triton_gemm.pick_config(m, n, k, gs)
                assert cfg.fast and cfg.bt == bt and cfg.xperm == (m > 16 or n * k > 1 << 26), (m, n, k, gs, cfg)
                small = n * k <= (1 << 22 if m <= 16 else 1 << 26)  # re-split by rounds 20 / 21
                least = 256 if bt == 8 and small else 512 if m <= 16 else 1024
                assert k // (16 * bt * cfg.split_k) >= least // 16 // bt or cfg.split_k == 1, (m, n, k, gs, cfg)
    assert triton_gemm.group_steps(32) == (2, 8) and triton_gemm.group_steps(-1) == (8, 3)


def test_pick_config_folds_zero_points_only_where_it_measured_faster():
    """Round 11: up to 16 rows, zero points (zmode 1) of group 128 or one group are folded in after the dot,
    under the 128-register cap above 2**26 weights and without it below; the shift (zmode 2), groups of 32 / 64
    and more than 16 rows are not folded and not capped; symmetric layers stay capped at 128 up to 16 rows.
    Round 12: symmetric group 128 reads its words through TMA up to 16 rows, and up to 64 above 2**26 weights;
    folded zero points of group 128 above 2**25 weights do too, load their scales and zero words a step ahead
    and take the sums of x per step from the caller. Round 13: zero points of group 128 above 64 rows and 2**25
    weights are folded with their terms added after the loop (`zlate`), at the 128-row tile, uncapped.
    Round 19: up to 16 rows, folded zero points of group 128 above 2**25 weights are capped at 128 registers too
    (the fold's two fused multiply-adds spill nothing there) and sum x per step in the kernel, not from the
    caller (`xsum` off)."""
    from marlin_convert.runtime import triton_gemm

    for n, k in ((28672, 8192), (8192, 28672), (14336, 4096), (4096, 6144), (4096, 4096), (512, 3584)):
        big = n * k > 1 << 26
        for m in (1, 7, 16, 64, 256):
            for gs in (32, 64, 128, k):
                sym, zeros, shift = (triton_gemm.pick_config(m, n, k, gs, zmode=z) for z in (0, 1, 2))
                late = m > 64 and gs == 128 and n * k > 1 << 25
                folded = m <= 16 and gs in (128, k) or late
                assert zeros.fold == folded and zeros.zlate == late and not sym.fold and not shift.fold, (n, k, m, gs)
                assert not sym.zlate and not shift.zlate and zeros.bm == sym.bm, (n, k, m, gs)
                grouped, ahead = gs == 128, folded and m <= 16 and gs == 128 and n * k > 1 << 25
                assert zeros.maxnreg == (128 if folded and m <= 16 and (big or ahead) else 0), (n, k, m, gs, zeros)
                assert sym.maxnreg == (128 if m <= 16 else 0) and shift.maxnreg == 0, (n, k, m, gs)
                assert zeros.zpre == zeros.tma == ahead and not sym.zpre and not sym.xsum, (n, k, m, gs)
                assert not zeros.xsum or late, (n, k, m, gs)
                assert sym.tma == (grouped and (m <= 16 or m <= 64 and big)) and not shift.tma, (n, k, m, gs)
                unbalanced = dataclasses.replace(zeros, balance=0, split_k=shift.split_k, pdl=shift.pdl)
                assert dataclasses.replace(unbalanced, fold=False, maxnreg=0, tma=False, zpre=False, xsum=False,
                                           zlate=False) == dataclasses.replace(shift, maxnreg=0), (n, k, m, gs)


def test_eager_launch_shape_drops_tma_and_the_k_split_of_small_layers():
    """Round 16: an eager call reads its words with plain loads, and up to 16 rows a layer of at most 2**24
    weights runs unsplit (one launch); larger layers and more rows keep `pick_config`'s split; nothing else
    changes."""
    from marlin_convert.runtime import triton_gemm

    for n, k in ((1024, 4096), (4096, 4096), (2048, 8192), (4096, 4352), (4096, 14336), (28672, 8192)):
        for m in (1, 16, 17, 64, 256):
            for gs in (32, 128, k):
                for z in (0, 1, 2):
                    graph = triton_gemm.pick_config(m, n, k, gs, zmode=z)
                    eager = triton_gemm.for_eager(graph, m, n, k)
                    one = m <= 16 and n * k <= 4096 * 4096
                    assert not eager.tma and eager.split_k == (1 if one else graph.split_k), (n, k, m, gs, z)
                    assert eager.balance == (0 if one else graph.balance), (n, k, m, gs, z)
                    assert dataclasses.replace(eager, tma=graph.tma, split_k=graph.split_k, balance=graph.balance) == graph


def test_a_balanced_grid_is_taken_where_the_split_grid_leaves_places_or_steps_idle():
    """Round 18: up to 16 rows, group 128 or one group, symmetric or zero points (not the shift), the launch
    shape runs on a balanced grid of 4 programs a multiprocessor under the 128-register cap (3 for the uncapped
    fold) where `balance_pays`; stated by hand for 132 multiprocessors (tiles of 128 columns, steps of 128 k):
    28672 x 8192: 224 tiles of 64 steps, split 2, one wave of 32 steps against 27.2 + 2 balanced -> taken;
    8192 x 28672: split 8, 28 steps against 29.2 -> not; 3584 x 18944: 148 steps, split 16 runs as 4 (the
    largest that divides them), 37 steps against 7.8 + 2 -> taken; 4096 x 4096: 2 steps a program balanced,
    under the 4-step floor -> not; zero points of 8192 x 4096 (2**25 weights: uncapped, 3 a multiprocessor):
    split 8 gives 512 programs on 396 places, two waves of 4 steps against 5.2 + 2 -> taken, with 3; 14336 x 4096,
    symmetric or zero points (capped from round 19): 8 against 6.8 + 2 -> not. The shift, groups of 32 and more
    than 16 rows never."""
    from marlin_convert.runtime import triton_gemm

    expected = {  # (n, k, zmode) -> balance at one row
        (28672, 8192, 0): 4, (28672, 8192, 1): 4, (8192, 28672, 0): 0, (8192, 28672, 1): 0,
        (3584, 18944, 0): 4, (4096, 4096, 0): 0, (4096, 4096, 1): 0, (8192, 4096, 1): 3, (14336, 4096, 1): 0,
        (14336, 4096, 0): 0,
        (28672, 8192, 2): 0,
    }
    for (n, k, z), balance in expected.items():
        cfg = triton_gemm.pick_config(1, n, k, 128, 132, z)
        assert cfg.balance == balance and (cfg.split_k == 1 or not balance), (n, k, z, cfg)
        assert triton_gemm.pick_config(16, n, k, 128, 132, z).balance == balance, (n, k, z)
        assert triton_gemm.pick_config(1, n, k, 32, 132, z).balance == 0
        assert triton_gemm.pick_config(65, n, k, 128, 132, z).balance == 0


def test_up_to_16_rows_a_small_layer_is_split_to_one_wave_of_two_step_programs():
    """Round 20, by hand (132 multiprocessors; 4 places each when capped, 3 for the uncapped fold of zero points at
    or below 2**25 weights): a split grid of fewer than 1.25 programs a multiprocessor (165) that leaves more than
    4 steps a program or has fewer than 66 programs is re-split: of the divisors of the steps that keep 2 steps a
    split and one wave, the one of least `steps / split + split / 12` (one more split costs the reduce a
    twelfth of a step). 512 x 3584: 4 tiles x split 4 (16 programs of 7 steps) -> 14 (3.2 against 4.6 for 7);
    1024 x 14336: 8 x 16 (128 of 7) -> 28 (6.3 against 6.7 for 56); 1024 x 4096: 8 x 8 (64 of 4) -> 16; 3584 x
    3584: 28 x 4 (112 of 7) -> 14; 4608 x 3584: 36 x 4 (144 of 7) -> 14, zero points on 396 places -> 7 (14 would
    be 504); 256 x 11008: 86 steps, split 32 ran as 2 -> 43; 1024 x 8192 (8 x 16: 128 of 4) and 2048 x 4096 (16 x
    8: 128 of 4) keep theirs; 4096 x 4096: 32 x 8 (256) and 6144 x 4096: 48 x 8 (384) keep 8; 14336 x 4096 keeps
    4. Groups of 32, the shift and more than 16 rows keep `split_for`'s split."""
    from marlin_convert.runtime import triton_gemm

    expected = {  # (n, k, zmode) -> the split `plan` runs at 1 and 16 rows, group 128
        (512, 3584, 0): 14, (512, 3584, 1): 14, (1024, 4096, 0): 16, (1024, 4096, 1): 16, (3584, 3584, 0): 14,
        (3584, 3584, 1): 14, (4608, 3584, 0): 14, (4608, 3584, 1): 7, (256, 11008, 0): 43, (4096, 4096, 0): 8,
        (4096, 4096, 1): 8, (6144, 4096, 0): 8, (14336, 4096, 0): 4, (512, 3584, 2): 4, (1024, 8192, 0): 16,
        (1024, 8192, 1): 16, (2048, 4096, 0): 8, (2048, 4096, 1): 8, (1024, 14336, 0): 28, (1024, 14336, 1): 28,
    }
    for (n, k, z), split in expected.items():
        for m in (1, 16):
            cfg = triton_gemm.pick_config(m, n, k, 128, 132, z)
            assert triton_gemm._even_split(cfg.split_k, k // 128) == split and not cfg.balance, (n, k, z, m, cfg)
        assert k // triton_gemm.pick_config(1, n, k, 32, 132, z).split_k >= 512, (n, k, z)  # 16 groups of 32
    assert triton_gemm.one_wave_split(4, 28, 528) == 14 and triton_gemm.one_wave_split(36, 28, 396) == 7
    assert triton_gemm.one_wave_split(600, 28, 528) == 1 and triton_gemm.one_wave_split(1, 3, 528) == 1
    assert triton_gemm.one_wave_split(8, 112, 528) == 28 and triton_gemm.one_wave_split(2, 86, 528) == 43


def test_from_17_to_64_rows_a_small_split_layer_is_split_to_one_wave_too():
    """Round 21, by hand (132 multiprocessors; 64 x 64 tiles, 166 registers: 3 places each, 396): a split grid
    (`split_for`: up to one program a multiprocessor, 8 steps a split) that leaves the GPU mostly idle as in round
    20 is re-split by `one_wave_split`, one more split costing a twelfth of a step per 16 rows of x (17-32 rows:
    1/6, 33-64: 1/3). 512 x 3584: 8 tiles x split 2 (16 programs of 14 steps) -> 14 at 17-32 rows (2 + 2.3
    against 4 + 1.2 for 7), 7 at 64 (4 + 2.3 against 2 + 4.7); 1024 x 4096: 16 x 4 -> 16 / 8; 2048 x 3584: 32 x 2
    -> 7 (224 programs; 14 would be 448); 3584 x 3584: 56 x 2 -> 7 (392); 4608 x 3584: 72 x 2 -> 4 (288; 7 would
    be 504); 256 x 11008: 86 steps, split 8 ran as 2 -> 43; 1024 x 14336 and 1024 x 8192: 16 x 8 -> 16; 2048 x
    4096: 32 x 4 -> 8. Kept: 4096 x 4096 (64 x 4 = 256 programs, above 1.25 a multiprocessor), 4096 x 1024
    (unsplit: no reduce to share), 14336 x 4096 (224 x 1), the shift, groups of 32."""
    from marlin_convert.runtime import triton_gemm

    expected = {  # (n, k) -> the split `plan` runs at (17, 32, 64) rows, group 128, symmetric and zero points
        (512, 3584): (14, 14, 7), (1024, 4096): (16, 16, 8), (2048, 3584): (7, 7, 7), (3584, 3584): (7, 7, 7),
        (4608, 3584): (4, 4, 4), (256, 11008): (43, 43, 43), (1024, 14336): (16, 16, 16),
        (1024, 8192): (16, 16, 16), (2048, 4096): (8, 8, 8), (4096, 4096): (4, 4, 4), (4096, 1024): (1, 1, 1),
        (14336, 4096): (1, 1, 1),
    }
    for (n, k), splits in expected.items():
        for z in (0, 1):
            for m, split in zip((17, 32, 64), splits):
                cfg = triton_gemm.pick_config(m, n, k, 128, 132, z)
                assert (cfg.bm, cfg.nb, cfg.balance) == (64, 1, 0), (n, k, z, m, cfg)
                assert triton_gemm._even_split(cfg.split_k, k // 128) == split, (n, k, z, m, cfg)
        assert triton_gemm._even_split(triton_gemm.pick_config(64, n, k, 128, 132, 2).split_k, k // 128) <= 8
        assert k // triton_gemm.pick_config(64, n, k, 32, 132, 0).split_k >= 256, (n, k)  # 8 groups of 32
    assert triton_gemm.one_wave_split(8, 28, 396, cost=1 / 3) == 7
    assert triton_gemm.one_wave_split(8, 28, 396, cost=1 / 6) == 14


def test_above_64_rows_a_small_layer_runs_one_wave_of_at_most_a_program_a_multiprocessor():
    """Round 21, by hand (132 multiprocessors; 128 x 128 tiles): layers of at most 2**26 weights, group 128 or one
    group, symmetric or zero points, split K by `one_wave_split` over all their tiles (column tiles x row tiles)
    on 132 places, at least 2 steps a split, a twelfth of a step a split: 512 x 3584 (4 tiles, 28 steps) -> 14 at
    65-256 rows (16 programs ... 56 at 256), 7 at 512 (16 tiles); 2048 x 3584 (16 tiles) -> 7 at 128 (112), 4 at
    256 (32 tiles, 128), 2 at 512; 3584 x 3584 (28) -> 4, 2, 1; 4608 x 3584 (36) -> 2, 1; 256 x 11008 (2 tiles,
    86 steps) -> 43 at 128 rows, 2 at 256 (4 tiles x 43 = 172 > 132); 1024 x 4096 -> 16, 8, 4, 2 at 128-1024
    rows. Big layers (28672 x 8192, 8192 x 28672), the shift and groups of 32 keep `split_for`'s split (at
    least 8 steps, half a program a multiprocessor)."""
    from marlin_convert.runtime import triton_gemm

    expected = {  # (n, k) -> the split `plan` runs at (65, 128, 256, 512, 1024) rows
        (512, 3584): (14, 14, 14, 7, 4), (2048, 3584): (7, 7, 4, 2, 1), (3584, 3584): (4, 4, 2, 1, 1),
        (4608, 3584): (2, 2, 1, 1, 1), (256, 11008): (43, 43, 2, 2, 2), (1024, 4096): (16, 16, 8, 4, 2),
        (4096, 4096): (4, 4, 2, 1, 1), (8192, 8192): (2, 2, 1, 1, 1), (28672, 8192): (1, 1, 1, 1, 1),
        (8192, 28672): (2, 2, 1, 1, 1),
    }
    for (n, k), splits in expected.items():
        for z in (0, 1):
            for m, split in zip((65, 128, 256, 512, 1024), splits):
                cfg = triton_gemm.pick_config(m, n, k, 128, 132, z)
                assert (cfg.bm, cfg.nb, cfg.balance) == (128, 2, 0), (n, k, z, m, cfg)
                assert triton_gemm._even_split(cfg.split_k, k // 128) == split, (n, k, z, m, cfg)
        assert k // triton_gemm.pick_config(128, n, k, 128, 132, 2).split_k >= 1024, (n, k)
        assert k // triton_gemm.pick_config(128, n, k, 32, 132, 0).split_k >= 1024, (n, k)
    assert triton_gemm.one_wave_split(4, 28, 132) == 14 and triton_gemm.one_wave_split(36, 28, 132) == 2


def test_one_row_calls_of_big_symmetric_layers_take_the_gemv():
    """Round 22, by hand (132 multiprocessors, 7 GEMV programs each: 924 places): symmetric layers of at least
    2**24 weights, group 128 or one group, K a multiple of 128, split their 128-k steps to at most 924 programs
    over their column tiles of 128 outputs (64 where N is not a multiple of 128), at least 4 steps a program,
    any split (uneven ones too); one row of float16 or bfloat16, no act-order, and PyTorch's switch for
    reduced-precision sums of that dtype on."""
    from marlin_convert.runtime import triton_gemm
    from marlin_convert.runtime.triton_gemm import KernelConfig

    expected = {  # (n, k) -> split: min(924 // (n / 128), k / 128 / 4)
        (28672, 8192): 4, (8192, 28672): 14, (4096, 4096): 8, (14336, 4096): 8, (4096, 14336): 28,
        (8192, 8192): 14, (18944, 3584): 6, (3584, 18944): 33,
    }
    gemv = functools.partial(KernelConfig, 1, 8, gemv=True, pdl=True)  # the reduce by dependent launch (round 25)
    for (n, k), split in expected.items():
        for gs in (128, k):
            assert triton_gemm.gemv_config(n, k, gs, 132) == gemv(2, split_k=split), (n, k)
    assert triton_gemm.gemv_config(4160, 4096, 128, 132) == gemv(1, split_k=8)  # 65 tiles
    assert triton_gemm.gemv_config(4096, 4096, 128, 66) == gemv(2, split_k=8)  # 462 // 32
    assert triton_gemm.gemv_config(28672, 8192, 128, 66) == gemv(2, split_k=2)
    for n, k in ((3584, 3584), (1024, 4096), (512, 3584), (1024, 8192)):  # fewer than 2**24 weights
        assert triton_gemm.gemv_config(n, k, 128, 132) is None, (n, k)
    assert triton_gemm.gemv_config(4096, 4096, 64, 132) is None and triton_gemm.gemv_config(4096, 4096, 32, 132) is None
    assert triton_gemm.gemv_config(4096, 4112, 4112, 132) is None  # K not a multiple of 128
    bf16 = torch.bfloat16  # round 23: from 2**25 weights (4096 x 4096 was 1.05x the tensor-core time)
    assert triton_gemm.gemv_config(4096, 4096, 128, 132, bf16) is None
    assert triton_gemm.gemv_config(8192, 4096, 128, 132, bf16) == gemv(2, split_k=8)
    assert triton_gemm.gemv_config(28672, 8192, 128, 132, bf16) == gemv(2, split_k=4)

    fits = triton_gemm.gemv_fits
    f16, bf16 = torch.float16, torch.bfloat16
    assert fits(1, f16, 0, None) and fits(1, bf16, 0, None)
    assert not fits(2, f16, 0, None) and not fits(1, torch.float32, 0, None)
    assert not fits(1, f16, 1, None) and not fits(1, f16, 2, None) and not fits(1, f16, 0, torch.arange(8))
    assert triton_gemm.GEMV_ZMODES == (0,)  # zero points: only by an explicit config (round 23: not faster)
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_fp16_reduced_precision_reduction, matmul.allow_bf16_reduced_precision_reduction
    try:  # each dtype follows its own switch
        matmul.allow_fp16_reduced_precision_reduction = False
        assert not fits(1, f16, 0, None) and fits(1, bf16, 0, None)
        matmul.allow_fp16_reduced_precision_reduction = True
        matmul.allow_bf16_reduced_precision_reduction = False
        assert fits(1, f16, 0, None) and not fits(1, bf16, 0, None)
    finally:
        matmul.allow_fp16_reduced_precision_reduction, matmul.allow_bf16_reduced_precision_reduction = before


def test_the_reduce_is_launched_dependently_only_where_it_measured_faster():
    """Round 25: `pick_config` gives `pdl` to every launch shape up to 16 rows that is not a balanced grid and,
    from 17 to 64 rows, to layers of at most 2**23 weights; never to a balanced grid or above 64 rows;
    `gemv_config` always (`plan` passes it on only on a CUDA device of compute capability 9.0+:
    `test_triton_interpreted`)."""
    from marlin_convert.runtime import triton_gemm

    pick = triton_gemm.pick_config
    for n, k in ((28672, 8192), (8192, 28672), (4096, 4096), (1024, 4096), (512, 3584), (3584, 18944)):
        for m in (1, 7, 16, 17, 64, 65, 256):
            for gs in (128, k):
                for z in (0, 1, 2):
                    cfg = pick(m, n, k, gs, zmode=z)
                    assert cfg.pdl == (not cfg.balance and (m <= 16 or m <= 64 and n * k <= 1 << 23)), (n, k, m, z)
    assert pick(64, 1024, 4096, 128).pdl and not pick(64, 4096, 4096, 128).pdl  # 2**22 and 2**24 weights
    assert pick(16, 4096, 4096, 128).pdl and not pick(256, 512, 3584, 128).pdl
    assert pick(16, 28672, 8192, 128).balance and not pick(16, 28672, 8192, 128).pdl


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
def test_a_dependently_launched_reduce_sums_the_same_bits(dtype):
    """Round 25: after the GEMV or a K-split GEMM, the reduce launched by programmatic dependent launch (`pdl`,
    sm_90+) sums the same partials: the outputs equal those of the same launch shape without it bit for bit,
    called eagerly and replayed from a CUDA graph (new x copied in before each replay), and lie within the bounds
    against the source dequantization (symmetric and Marlin zero points, bias)."""
    from marlin_convert.runtime import triton_gemm
    from marlin_convert.runtime.triton_gemm import KernelConfig

    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("programmatic dependent launch needs sm_90 or newer")
    gen = torch.Generator(device="cuda").manual_seed(41)
    for mode in ("sym", "asym"):
        layer = _make_layer(1088, 2048, 128, mode, False, dtype, 42, with_bias=True)
        t = layer.marlin
        for cfg, m in ((KernelConfig(1, 8, 1, split_k=5, gemv=True, pdl=True), 1),
                       (KernelConfig(16, 8, 2, maxnreg=128, split_k=4, pdl=True), 9),
                       (KernelConfig(16, 8, 2, fold=True, split_k=3, pdl=True), 16),
                       (KernelConfig(64, 8, 1, xperm=True, split_k=2, pdl=True), 40)):
            plans = [triton_gemm.plan(m, dtype, torch.device("cuda"), t["B"], t["s"], group_size=128, z=t.get("z"),
                                      bias=layer.bias, config=dataclasses.replace(cfg, pdl=pdl)) for pdl in (1, 0)]
            assert plans[0].launches[0].consts["TRIGGER"] and plans[0].launches[-1].consts["launch_pdl"]
            assert "launch_pdl" not in plans[1].launches[-1].consts
            x = torch.randn(m, 2048, device="cuda", generator=gen).to(dtype)
            y = plans[0](x)
            assert torch.equal(y, plans[1](x)) and not _failures(layer, x, y, gemv=cfg.gemv), (mode, cfg)
            static_x = x.clone()
            graph, static_y = _captured(lambda: plans[0](static_x))
            for _ in range(2):
                x = torch.randn(m, 2048, device="cuda", generator=gen).to(dtype)
                static_x.copy_(x)
                graph.replay()
                torch.cuda.synchronize()
                assert torch.equal(static_y, plans[1](x)), (mode, cfg)


def test_from_17_to_64_rows_a_balanced_grid_only_where_it_promises_a_fifth_less_time():
    """Round 18, 64-row tiles of big layers (2 programs a multiprocessor: 264 places on 132), by hand:
    5120 x 27648: 40 tiles of 216 steps, split 4: 54 steps against 32.7 + 2 -> taken; 3584 x 18944: split 8
    runs as 4, 37 steps against 15.7 + 2 -> taken; 18944 x 3584: 148 programs of 28 steps against 15.7 + 2 ->
    taken; 28672 x 8192: 64 steps against 54.3 + 2 (0.88, above 0.8) -> not; 8192 x 8192 is not big (64-column
    tiles) -> not; the shift never."""
    from marlin_convert.runtime import triton_gemm

    expected = {(5120, 27648, 0): 2, (5120, 27648, 1): 2, (3584, 18944, 0): 2, (18944, 3584, 1): 2,
                (28672, 8192, 0): 0, (28672, 8192, 1): 0, (27648, 5120, 0): 0, (8192, 8192, 0): 0,
                (5120, 27648, 2): 0}
    for (n, k, z), balance in expected.items():
        for m in (17, 64):
            cfg = triton_gemm.pick_config(m, n, k, 128, 132, z)
            assert cfg.balance == balance and cfg.bm == 64 and (cfg.split_k == 1 or not balance), (n, k, z, m, cfg)


def test_a_layer_chooses_its_backend_again_between_few_and_many_rows(monkeypatch):
    """`MarlinLinear.forward` hands `select` the rows of x (all dimensions but the last) and keeps one choice per
    (device, dtype, order generation, eager, rows up to 16, up to 64, or more): the default order depends on the
    rows for zero points of group 128 (GEMM rounds 20 and 21)."""
    from marlin_convert.runtime import backends
    from marlin_convert.runtime.linear import MarlinLinear
    from marlin_convert.runtime.spec import LayerSpec

    monkeypatch.delenv("MARLIN_CONVERT_BACKENDS", raising=False)
    seen = []
    real = backends.order
    monkeypatch.setattr(backends, "order", lambda layer=None, *, eager=False, rows=None: (
        seen.append(rows), real(layer, eager=eager, rows=rows))[1])
    lin = MarlinLinear(128, 64, LayerSpec(128, "int", False, "float16"))
    lin.B.zero_(), lin.s.fill_(1), lin.z.zero_()
    for shape in ((1, 128), (3, 5, 128), (2, 9, 128), (64, 128), (65, 128), (5, 20, 128)):
        assert lin(torch.ones(shape)).shape == (*shape[:-1], 64)
    assert seen == [1, 18, 65]
    assert sorted(key[4] for key in lin._chosen) == [0, 1, 2]


def test_balanced_grids_size_their_programs_by_hand():
    """`_grid_programs`, by hand: 4 a multiprocessor on 132 over 1 row tile is 528, over 3 row tiles 176; capped at
    `most` and at the steps; at least 1; a negative count taken as is (tests)
    but not above the steps; no grid (0) where the steps times the programs pass int32."""
    from marlin_convert.runtime.triton_gemm import _grid_programs

    assert _grid_programs(4, 132, 1, 14336, 14336) == 528
    assert _grid_programs(4, 132, 3, 14336, 14336) == 176
    assert _grid_programs(3, 132, 1, 1000, 250) == 250
    assert _grid_programs(4, 132, 1, 100, 100) == 100
    assert _grid_programs(1, 132, 200, 64, 64) == 1 and _grid_programs(3, 132, 1, 3, 0) == 1
    assert _grid_programs(-5, 132, 7, 64, 16) == 5 and _grid_programs(-5, 132, 1, 3, 3) == 3
    assert _grid_programs(4, 132, 1, 2**22, 2**22) == 0 and _grid_programs(4, 132, 1, 2**21, 2**21) == 528


def test_the_split_k_reduce_gives_every_multiprocessor_a_program_up_to_1024_outputs_each():
    """Round 17: the reduce sums 1024 outputs a program where that leaves a program per multiprocessor, else
    the largest power of two from 128 down that does (at 128 it takes what it gets)."""
    from marlin_convert.runtime import triton_gemm

    expected = {  # (outputs, multiprocessors) -> block, stated by hand
        (8192, 132): 128, (28672, 132): 128, (16 * 4096, 132): 256, (16 * 8192, 132): 512,
        (16 * 28672, 132): 1024, (64 * 4096, 132): 1024, (1024, 132): 128, (64, 132): 128,
        (132 * 1024, 132): 1024, (132 * 1024 - 1, 132): 512, (132 * 128 - 1, 132): 128, (4096, 8): 512,
    }
    for (outputs, sms), block in expected.items():
        assert triton_gemm._reduce_block(outputs, sms) == block, (outputs, sms)


def test_default_backend_order_puts_triton_first_where_it_measured_faster(monkeypatch):
    """Triton first for symmetric layers of group 128 or per-column at any N, act-order or not, for per-column
    zero points without act-order, and for every layer of at most 1024 outputs (the shapes and modes measured,
    BENCHMARKS.md GEMM rounds 10 and 11); for zero points of group 128 without act-order up to 4608 outputs in
    calls of at most 16 rows (rounds 19 and 20); Marlin's kernel first for the rest (zero points of group 128 and
    the shift above 1024 outputs), in CUDA graphs; eager calls put the CUDA kernel first (round 15); an explicit
    order still wins."""
    from marlin_convert.runtime import backends
    from marlin_convert.runtime.linear import MarlinLinear
    from marlin_convert.runtime.spec import LayerSpec

    monkeypatch.delenv("MARLIN_CONVERT_BACKENDS", raising=False)

    def first(n, k=4096, **spec):
        kw = {"group_size": 128, "zero_point": None, "act_order": False, "scale_dtype": "float16", **spec}
        return backends.order(MarlinLinear(k, n, LayerSpec(**kw), device="meta"))[0]

    # symmetric, group 128 or per-column, act-order or not: Triton at every N measured (1024 ... 28672) and between
    for n, k in ((28672, 8192), (8192, 28672), (4096, 4096), (4096, 14336), (14336, 4096), (2048, 4096), (1024, 4096)):
        assert first(n, k) == first(n, k, group_size=-1) == first(n, k, scale_dtype="bfloat16") == "triton", (n, k)
        assert first(n, k, act_order=True) == first(n, k, group_size=-1, act_order=True) == "triton", (n, k)
    # every mode at <= 1024 outputs
    for spec in ({"zero_point": "int"}, {"zero_point": "float"}, {"act_order": True},
                 {"group_size": -1, "zero_point": "int"}, {"zero_point": "int", "act_order": True}, {"group_size": 32},
                 {"group_size": 64, "zero_point": "float"}):
        assert first(1024, **spec) == first(512, 8192, **spec) == "triton", spec
    # above 1024 outputs, zero points and shift keep Marlin's kernel first (it measured faster at some batch)
    for n in (1280, 4096, 28672):
        assert first(n, zero_point="int") == first(n, zero_point="float") == "quanto", n
        assert first(n, zero_point="int", act_order=True) == first(n, group_size=-1, zero_point="float") == "quanto", n
        assert first(n, group_size=-1, zero_point="int", act_order=True) == "quanto", n  # not timed
        assert first(n, group_size=-1, zero_point="int") == "triton", n  # per-column zero points (round 11)
        assert first(n, group_size=64) == first(n, group_size=32) == "quanto", n  # Marlin refuses these: no matter
    assert backends.order() == backends.DEFAULT_ORDER
    # zero points of group 128, no act-order, 1025 to 4608 outputs: Triton in calls of 1 to 16 rows (rounds 19,
    # 20), and of 17 to 64 rows up to 2**24 weights (round 21)
    for n, k in ((2048, 4096), (3584, 3584), (4096, 4096), (4608, 3584), (4096, 14336), (3584, 18944)):
        layer = MarlinLinear(k, n, LayerSpec(128, "int", False, "float16"), device="meta")
        for rows in (1, 7, 16, 17, 32, 64):
            wide = rows <= 16 or n * k <= 4096 * 4096
            assert backends.order(layer, rows=rows)[0] == ("triton" if wide else "quanto"), (n, k, rows)
            assert backends.order(layer, rows=rows, eager=True) == backends.DEFAULT_ORDER, (n, k, rows)
        assert backends.order(layer, rows=65)[0] == backends.order(layer)[0] == "quanto", (n, k)
        for spec in (LayerSpec(128, "int", True, "float16"), LayerSpec(128, "float", False, "float16")):
            assert backends.order(MarlinLinear(k, n, spec, device="meta"), rows=1)[0] == "quanto", (n, k, spec)
    for n, k in ((5120, 5120), (8192, 8192), (14336, 4096), (28672, 8192)):
        layer = MarlinLinear(k, n, LayerSpec(128, "int", False, "float16"), device="meta")
        assert backends.order(layer, rows=1)[0] == "quanto", (n, k)
    # eager calls (not captured in a CUDA graph): the CUDA kernel first wherever it serves (round 15)
    for n, k in ((28672, 8192), (4096, 4096), (1024, 4096)):
        for spec in ({}, {"group_size": -1}, {"act_order": True}, {"zero_point": "int", "group_size": -1}):
            kw = {"group_size": 128, "zero_point": None, "act_order": False, "scale_dtype": "float16", **spec}
            layer = MarlinLinear(k, n, LayerSpec(**kw), device="meta")
            assert backends.order(layer, eager=True) == backends.DEFAULT_ORDER == ("quanto", "triton", "reference")
    backends.set_order(["quanto", "triton"])
    try:
        assert first(28672, 8192) == first(1024) == "quanto"
    finally:
        backends.set_order(None)


@pytest.mark.cuda
@pytest.mark.parametrize("group_size", [-1, 64])
def test_verify_gemm_check_with_the_triton_backend(group_size):
    """`gemm_check.check_layer(..., backend="triton")`: within its bounds on a good layer, above them with one
    64-column block swapped."""
    from marlin_convert.runtime.gemm_check import check_layer

    layer = _make_layer(192, 512, group_size, "asym", group_size != -1, torch.bfloat16, 23, with_bias=False)
    rec = dataclasses.replace(layer.rec, codes=DenseCodes(layer.rec.codes.full().cpu()))
    good = check_layer(rec, layer.marlin, backend="triton")
    assert good.skipped is None and good.ok, good.detail
    bad = check_layer(rec, {**layer.marlin, "B": _swap_block(layer.marlin["B"])}, backend="triton")
    assert bad.skipped is None and not bad.ok, bad.detail


def test_unknown_gemm_backend_is_named():
    from marlin_convert.errors import MarlinConvertError
    from marlin_convert.runtime.gemm_check import check_layer

    with pytest.raises(MarlinConvertError, match="unknown GEMM backend 'cutlass'"):
        check_layer(None, {}, backend="cutlass")  # type: ignore[arg-type]
