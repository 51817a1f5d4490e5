"""Launch plans (`triton_gemm.plan`, `triton_launch.Launch`): a plan's later calls skip Triton's argument binding
and hand the arguments straight to the compiled kernel. They must be the same launches: the same bits as the
call through Triton, the new call's tensors (not the first call's), their own compile where x's alignment
differs, launch hooks still called, and a layer's plans made again when its tensors change.

Each result is also checked against the float64 product of the weights dequantized from the source record
(`test_triton_gemm._failures`), so a shortcut that reused a stale tensor fails even where it repeats bits.
"""
from __future__ import annotations

import inspect

import pytest
import torch

from marlin_convert.runtime.spec import LayerSpec

from .test_triton_gemm import _captured, _failures, _make_layer

K = 2048


class _NoTriton:
    """Stands in for a Launch's Triton function: any call through Triton fails the test."""

    def __getitem__(self, grid):
        raise AssertionError("this launch went through Triton, not the compiled kernel")


def _configs():
    from marlin_convert.runtime.triton_gemm import KernelConfig

    return (
        # (mode, group, act-order, rows, config): each launch kind and per-call tensor the plans hold
        ("sym", 128, False, 1, None),  # swapped kernel, TMA words, split-K reduce (two launches)
        ("asym", 128, False, 16, None),  # fold with the sums of x per step (a per-call tensor)
        ("asym", 128, True, 3, KernelConfig(16, 8, 2, xperm=True, zred=True, split_k=2)),  # gather, zred
        ("shift", 64, False, 40, None),  # 64-row tiles
        ("asym", 32, True, 5, KernelConfig(16, 2, 2, stages=8, split_k=2)),  # a group a step, perm in kernel
        ("sym", -1, False, 7, KernelConfig(16, 8, 2, balance=-3)),  # balanced grid, segment reduce
        ("asym", 64, True, 9, KernelConfig(16, 4, 2, fast=False, split_k=4)),  # float32 kernel, perm in kernel
    )


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_a_plan_called_again_skips_triton_and_computes_the_new_input(dtype):
    from marlin_convert.runtime.triton_gemm import plan

    gen = torch.Generator(device="cuda").manual_seed(71)
    for i, (mode, group_size, act_order, m, cfg) in enumerate(_configs()):
        layer = _make_layer(1088, K, group_size, mode, act_order, dtype, 80 + i, with_bias=True)
        t = layer.marlin
        gemm = plan(m, dtype, torch.device("cuda", torch.cuda.current_device()), t["B"], t["s"],
                    group_size=group_size, z=t.get("z"), shift=t.get("shift"), perm=t.get("perm"), bias=layer.bias,
                    config=cfg)
        x1, x2 = (torch.randn(m, K, device="cuda", generator=gen).to(dtype) for _ in range(2))
        first = gemm(x1)  # through Triton: binds, compiles, keeps the compiled kernels
        assert not _failures(layer, x1, first), (mode, group_size, m, cfg)
        for launch in gemm.launches:
            launch.fn = _NoTriton()
        again = gemm(x1)
        assert torch.equal(again, first), (mode, group_size, m, cfg)
        other = gemm(x2)
        assert not _failures(layer, x2, other), (mode, group_size, m, cfg)


@pytest.mark.cuda
def test_an_unaligned_input_gets_its_own_compile():
    """Triton specializes on 16-byte alignment: an x that starts 2 bytes off is a new key for the launch that
    reads x, launched through Triton once, and both alignments stay right afterwards (the split-K reduce, which
    reads only fresh allocations, keeps one)."""
    from marlin_convert.runtime.triton_gemm import plan

    gen = torch.Generator(device="cuda").manual_seed(73)
    layer = _make_layer(1088, K, 128, "asym", False, torch.float16, 90, with_bias=False)
    t = layer.marlin
    m = 4
    gemm = plan(m, torch.float16, torch.device("cuda", torch.cuda.current_device()), t["B"], t["s"], group_size=128,
                z=t["z"])
    aligned = torch.randn(m, K, device="cuda", generator=gen).half()
    off = torch.empty(m * K + 1, dtype=torch.float16, device="cuda")[1:].view(m, K)
    off.copy_(torch.randn(m, K, device="cuda", generator=gen).half())
    assert off.data_ptr() % 16 and off.stride(0) == K
    for x in (aligned, off, aligned, off):
        assert not _failures(layer, x, gemm(x))
    assert len(gemm.launches) == 2
    assert len(gemm.launches[0].compiled) == 2 and len(gemm.launches[1].compiled) == 1


@pytest.mark.cuda
def test_launch_hooks_see_every_launch():
    """With a launch hook installed (a profiler), every launch goes through Triton, which calls it."""
    knobs = pytest.importorskip("triton.knobs")
    from marlin_convert.runtime.triton_gemm import plan

    layer = _make_layer(1088, K, 128, "sym", False, torch.float16, 91, with_bias=False)
    t = layer.marlin
    gemm = plan(1, torch.float16, torch.device("cuda", torch.cuda.current_device()), t["B"], t["s"], group_size=128)
    x = torch.randn(1, K, device="cuda", generator=torch.Generator(device="cuda").manual_seed(5)).half()
    gemm(x)
    seen = []

    def hook(metadata):
        seen.append(metadata)

    knobs.runtime.launch_enter_hook.add(hook)
    try:
        gemm(x)
        gemm(x)
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert len(seen) == 2 * len(gemm.launches) and len(gemm.launches) == 2


def _marlin_linear(layer, dtype: torch.dtype, spec: LayerSpec, bias_dtype: torch.dtype):
    from marlin_convert.runtime import MarlinLinear

    n, k = layer.w.shape
    lin = MarlinLinear(k, n, spec, bias=layer.bias is not None, device="cuda", dtype=bias_dtype)
    state = dict(layer.marlin)
    if layer.bias is not None:
        state["bias"] = layer.bias.to(bias_dtype)
    lin.load_state_dict(state)
    return lin


@pytest.mark.cuda
def test_a_layers_plans_follow_its_tensors():
    """A `MarlinLinear` keeps a plan per row count; changing its tensors in place (`load_state_dict`, a float32
    bias that the plan holds cast to fp16) or assigning new ones gives the new layer's output, bit for bit as a
    fresh layer of those tensors."""
    from marlin_convert.runtime import set_order

    spec = LayerSpec(128, "int", True, "float16")
    a = _make_layer(1088, K, 128, "asym", True, torch.float16, 92, with_bias=True)
    b = _make_layer(1088, K, 128, "asym", True, torch.float16, 93, with_bias=True)
    x = torch.randn(3, K, device="cuda", generator=torch.Generator(device="cuda").manual_seed(6)).half()
    set_order(["triton"])
    try:
        lin = _marlin_linear(a, torch.float16, spec, torch.float32)
        ya = lin(x)
        assert torch.equal(lin(x), ya) and not _failures(a, x, ya)
        fresh_b = _marlin_linear(b, torch.float16, spec, torch.float32)(x)
        assert not _failures(b, x, fresh_b)
        lin.load_state_dict({**b.marlin, "bias": b.bias.float()})  # in place: the same tensor objects
        assert torch.equal(lin(x), fresh_b)
        with torch.no_grad():
            lin.bias.mul_(2)
        doubled = _marlin_linear(b, torch.float16, spec, torch.float32)
        doubled.bias.data.mul_(2)
        assert torch.equal(lin(x), doubled(x))
        lin.B = a.marlin["B"].clone()  # a new buffer object
        mixed = _marlin_linear(b, torch.float16, spec, torch.float32)
        mixed.B = a.marlin["B"].clone()
        mixed.bias.data.mul_(2)
        assert torch.equal(lin(x), mixed(x))
    finally:
        set_order(None)


@pytest.mark.cuda
def test_a_layer_keeps_its_recent_plans_only():
    """An MoE expert sees any number of rows: a layer keeps `PLANS_PER_LAYER` plans, the least recently used
    dropped first, and every call is right whether its plan was kept, dropped or made again."""
    from marlin_convert.runtime import backends, set_order

    a = _make_layer(1088, K, 64, "asym", False, torch.bfloat16, 96, with_bias=True)
    gen = torch.Generator(device="cuda").manual_seed(10)
    set_order(["triton"])
    try:
        lin = _marlin_linear(a, torch.bfloat16, LayerSpec(64, "int", False, "bfloat16"), torch.bfloat16)
        rows = [1, 2, 3, 1, 4, 5, 6, 7, 8, 9, 10, 1, 11, 12, 2, 70]
        for m in rows:
            x = torch.randn(m, K, device="cuda", generator=gen).bfloat16()
            assert not _failures(a, x, lin(x)), m
        plans = lin._prepared[("triton-plans",)]
        assert len(plans) == backends.PLANS_PER_LAYER == 8
        assert [key[2] for key in plans] == [6, 7, 8, 9, 10, 1, 11, 12, 2][-8:]  # 70 rows: above PLAN_MAX_ROWS
    finally:
        set_order(None)


@pytest.mark.cuda
def test_plans_under_cuda_graph_capture():
    """A layer's planned launches captured in a CUDA graph replay the product of the graph's input of the time:
    the bits of `marlin_gemm` (the captured launch shape, `pick_config`'s) and within the bounds."""
    from marlin_convert.runtime import set_order
    from marlin_convert.runtime.triton_gemm import marlin_gemm

    spec = LayerSpec(128, None, False, "float16")
    a = _make_layer(1088, K, 128, "sym", False, torch.float16, 94, with_bias=False)
    gen = torch.Generator(device="cuda").manual_seed(8)
    set_order(["triton"])
    try:
        lin = _marlin_linear(a, torch.float16, spec, torch.float16)
        static_x = torch.randn(2, K, device="cuda", generator=gen).half()
        graph, static_y = _captured(lambda: lin(static_x), warmups=2)
        for _ in range(2):
            x = torch.randn(2, K, device="cuda", generator=gen).half()
            static_x.copy_(x)
            graph.replay()
            torch.cuda.synchronize()
            want = marlin_gemm(x, a.marlin["B"], a.marlin["s"], group_size=128)
            assert torch.equal(static_y, want) and not _failures(a, x, static_y.clone())
    finally:
        set_order(None)


@pytest.mark.cuda
def test_eager_and_captured_calls_keep_their_own_plans():
    """Outside capture a layer plans `for_eager`'s launch shape (no TMA; one launch for a small layer at up to 16
    rows), inside capture `pick_config`'s (here a K split: two launches); each plan is kept under its own key and
    both products are within the bounds."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    from marlin_convert.runtime import set_order
    from marlin_convert.runtime.triton_gemm import EAGER_ONE_LAUNCH_MAX, pick_config

    spec = LayerSpec(128, None, False, "bfloat16")
    a = _make_layer(1088, K, 128, "sym", False, torch.bfloat16, 95, with_bias=True)
    assert 1088 * K <= EAGER_ONE_LAUNCH_MAX and pick_config(2, 1088, K, 128, 132, 0).split_k > 1
    gen = torch.Generator(device="cuda").manual_seed(9)
    set_order(["triton"])
    try:
        lin = _marlin_linear(a, torch.bfloat16, spec, torch.bfloat16)
        static_x = torch.randn(2, K, device="cuda", generator=gen).bfloat16()
        eager_y = lin(static_x)
        graph, static_y = _captured(lambda: lin(static_x))
        graph.replay()
        torch.cuda.synchronize()
        plans = lin._prepared[("triton-plans",)]
        assert sorted(key[2:4] for key in plans) == [(2, False), (2, True)]
        by_eager = {key[3]: entry.gemm for key, entry in plans.items()}
        assert len(by_eager[True].launches) == 1 and by_eager[True].ws_splits == 0
        assert not any(isinstance(arg, TensorDescriptor) for arg in by_eager[True].launches[0].args)
        assert len(by_eager[False].launches) == 2 and by_eager[False].ws_splits > 1
        assert not _failures(a, static_x, eager_y) and not _failures(a, static_x, static_y.clone())
    finally:
        set_order(None)


# ----------------------------------------------------------------------------- host side, no GPU


class _Param:
    def __init__(self, name, default):
        self.name, self.default = name, default


class _Compiled:
    function, packed_metadata = "function", "metadata"

    def __init__(self):
        self.runs = []

    def run(self, *args):
        self.runs.append(args)


class _Fn:
    """A stand-in `triton.jit` function: its signature (`params`) and launches through it, recorded."""

    def __init__(self, returns):
        self.params = [_Param("x", None), _Param("n", None), _Param("BM", None), _Param("FLAG", False)]
        self.calls, self.returns = [], returns

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append((grid, args, kwargs))
            return self.returns
        return launch


@pytest.fixture
def shortcut_allowed(monkeypatch):
    from marlin_convert.runtime import triton_launch

    monkeypatch.setattr(triton_launch, "_hooks_installed", lambda: False)
    monkeypatch.setattr(triton_launch, "_stream_getter", lambda: (lambda index: 7000 + index))
    return triton_launch


def test_launch_hands_the_full_signature_to_the_compiled_kernel(shortcut_allowed):
    """The first call per alignment goes through Triton; later ones call the compiled kernel's launcher with
    the grid, the device's stream, the kernel, no hooks, and every argument in signature order: the call's
    tensors, the fixed ones, the constexprs given and the defaults of those left out."""
    compiled = _Compiled()
    fn = _Fn(compiled)
    launch = shortcut_allowed.Launch(fn, (3, 2), (shortcut_allowed.Slot("x"), 64), dict(BM=16, num_warps=4), 1)
    a, b = torch.zeros(8), torch.ones(8)
    launch({"x": a})
    assert fn.calls == [((3, 2, 1), (a, 64), dict(BM=16, num_warps=4))] and not compiled.runs
    launch({"x": b})
    assert len(fn.calls) == 1
    assert compiled.runs == [(3, 2, 1, 7001, "function", "metadata", None, None, None, b, 64, 16, False)]
    assert compiled.runs[0][9] is b
    off = torch.zeros(9)[1:]  # 4 bytes past a 16-byte boundary: another specialization
    assert off.data_ptr() % 16
    launch({"x": off})
    assert len(fn.calls) == 2 and fn.calls[1][1][0] is off and len(compiled.runs) == 1
    launch({"x": off})
    assert len(fn.calls) == 2 and compiled.runs[-1][9] is off


def test_launch_goes_through_triton_when_it_cannot_take_the_shortcut(shortcut_allowed, monkeypatch):
    """Not a compiled kernel back (another Triton), no device, a required constexpr left out, hooks installed:
    every call goes through Triton."""
    Launch, Slot = shortcut_allowed.Launch, shortcut_allowed.Slot
    x = torch.zeros(8)
    no_bm_default = _Fn(_Compiled())
    no_bm_default.params[2] = _Param("BM", inspect.Parameter.empty)
    cases = [Launch(_Fn(None), (1,), (Slot("x"), 1), dict(BM=16), 0),
             Launch(_Fn(_Compiled()), (1,), (Slot("x"), 1), dict(BM=16), None),
             Launch(no_bm_default, (1,), (Slot("x"), 1), dict(FLAG=True), 0)]
    for launch in cases:
        for _ in range(3):
            launch({"x": x})
        assert len(launch.fn.calls) == 3
    compiled = _Compiled()
    hooked = Launch(_Fn(compiled), (1,), (Slot("x"), 1), dict(BM=16), 0)
    monkeypatch.setattr(shortcut_allowed, "_hooks_installed", lambda: True)
    for _ in range(3):
        hooked({"x": x})
    assert len(hooked.fn.calls) == 3 and not compiled.runs


@pytest.mark.cuda
def test_eager_calls_take_the_cuda_kernel_and_captured_calls_the_triton_gemm(monkeypatch):
    """The default order depends on graph capture (round 15): a symmetric fp16 group-128 layer runs on Marlin's
    CUDA kernel called eagerly and on the Triton GEMM inside a CUDA graph (its first Triton call there)."""
    pytest.importorskip("optimum.quanto")
    from marlin_convert.runtime import set_order

    monkeypatch.delenv("MARLIN_CONVERT_BACKENDS", raising=False)
    set_order(None)
    a = _make_layer(1024, K, 128, "sym", False, torch.float16, 95, with_bias=False)
    lin = _marlin_linear(a, torch.float16, LayerSpec(128, None, False, "float16"), torch.float16)
    x = torch.randn(2, K, device="cuda", generator=torch.Generator(device="cuda").manual_seed(9)).half()
    eager = lin(x)
    assert [b.name for b in lin._chosen.values()] == ["quanto"]
    ref = x.double() @ a.w.t()
    assert float((eager.double() - ref).norm() / ref.norm()) < 1e-2
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = lin(x)
    graph.replay()
    torch.cuda.synchronize()
    assert {key[3]: b.name for key, b in lin._chosen.items()} == {True: "quanto", False: "triton"}
    assert not _failures(a, x, captured.clone())


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_a_one_row_call_runs_the_gemv_only_while_pytorch_allows_reduced_precision_sums(dtype):
    """One row of a symmetric layer of 2**25 weights runs the GEMV (within its bounds) while PyTorch's
    `allow_fp16_reduced_precision_reduction` (float16 x) or `allow_bf16_reduced_precision_reduction` (bfloat16)
    is on, and the tensor-core kernel (within the float32-sum bounds) once it is off: the layer keeps a plan for
    each."""
    from marlin_convert.runtime import set_order
    from marlin_convert.runtime._triton_gemv_kernel import marlin_gemv_kernel

    name = "fp16" if dtype == torch.float16 else "bf16"
    spec = LayerSpec(128, None, False, str(dtype).removeprefix("torch."))
    a = _make_layer(8192, 4096, 128, "sym", False, dtype, 96, with_bias=True)
    x = torch.randn(1, 4096, device="cuda", generator=torch.Generator(device="cuda").manual_seed(10)).to(dtype)
    matmul = torch.backends.cuda.matmul
    switch = f"allow_{name}_reduced_precision_reduction"
    before = getattr(matmul, switch)
    set_order(["triton"])
    try:
        lin = _marlin_linear(a, dtype, spec, dtype)
        setattr(matmul, switch, True)
        assert not _failures(a, x, lin(x), gemv=True)
        setattr(matmul, switch, False)
        assert not _failures(a, x, lin(x))
        plans = lin._prepared[("triton-plans",)]
        first = {key[4]: entry.gemm.launches[0].fn for key, entry in plans.items()}
        assert first[True] is marlin_gemv_kernel and first[False] is not marlin_gemv_kernel
    finally:
        setattr(matmul, switch, before)
        set_order(None)
