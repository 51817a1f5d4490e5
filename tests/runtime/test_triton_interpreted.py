"""The Triton GEMM's kernels on the CPU, in Triton's interpreter with their inline PTX emulated
(`tests._support.ptx_emulation`), against float64 `x @ W.T` from the source record with `test_triton_gemm`'s
bounds: the served launch shapes of every mode (and the launch-shape variants that rules pick) checked by CI
without a GPU. Marked `interpret`; they run only where `TRITON_INTERPRET=1` was set before Triton was imported
and numpy is older than 2.3 (Triton 3.6's interpreter takes `int()` of one-element arrays, which numpy 2.3
refuses): `.ci/run`'s second environment (`pip install -e '.[test,interpret]'`). Layers are small: the
interpreter runs each program in numpy. The GPU runs the same kernels in `test_triton_gemm` (`-m cuda`)."""
from __future__ import annotations

import os
import zlib

import pytest
import torch

pytestmark = [pytest.mark.interpret,  # the interpreter's own `int()` of one-element arrays (numpy 1.25+ warns)
              pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")]

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("needs TRITON_INTERPRET=1 before Triton is imported", allow_module_level=True)
pytest.importorskip("triton")
np = pytest.importorskip("numpy")
if tuple(int(v) for v in np.__version__.split(".")[:2]) >= (2, 3):
    pytest.skip(f"Triton 3.6's interpreter needs numpy < 2.3, not {np.__version__}", allow_module_level=True)

from marlin_convert.runtime.triton_gemm import KernelConfig  # noqa: E402
from tests._support import ptx_emulation  # noqa: E402
from tests.runtime.test_triton_gemm import _failures, _make_layer, _run  # noqa: E402

ptx_emulation.install()

CASES = [  # (N, K, group, mode, act-order, dtype, rows): the served shape for each
    (64, 128, 128, "sym", False, torch.float16, (1, 7)),
    (192, 384, 128, "asym", False, torch.float16, (1, 16, 64)),
    (192, 384, 128, "shift", False, torch.bfloat16, (1, 70)),
    (192, 384, -1, "sym", False, torch.bfloat16, (5, 130)),
    (192, 384, -1, "asym", False, torch.float16, (1, 70)),
    (256, 512, 32, "asym", False, torch.float16, (3, 33)),
    (256, 512, 64, "shift", False, torch.float16, (1,)),
    (256, 512, 128, "sym", True, torch.float16, (1, 70)),
    (256, 512, 128, "asym", True, torch.bfloat16, (16,)),
    (512, 1024, 128, "sym", False, torch.float16, (1, 32, 130)),  # re-split to one wave (rounds 20, 21)
]


@pytest.mark.parametrize("n,k,group_size,mode,act_order,dtype,rows", CASES,
                         ids=[f"{c[0]}x{c[1]}-g{c[2]}-{c[3]}{'-act' if c[4] else ''}-{str(c[5])[6:]}" for c in CASES])
def test_served_launch_shapes_match_the_source_dequant(n, k, group_size, mode, act_order, dtype, rows):
    seed = zlib.crc32(repr((n, k, group_size, mode, act_order, str(dtype))).encode())
    layer = _make_layer(n, k, group_size, mode, act_order, dtype, seed, with_bias=group_size == -1, device="cpu")
    gen = torch.Generator().manual_seed(seed + 1)
    bad = {}
    for m in rows:
        x = torch.randn(m, k, generator=gen).to(dtype)
        fails = _failures(layer, x, _run(layer, x))
        if fails:
            bad[m] = fails
    assert not bad, bad


VARIANTS = [  # launch shapes that rules take for other layers: balanced grids, K splits, folded zero points
    KernelConfig(16, 8, 2, maxnreg=128, balance=-3),
    KernelConfig(16, 8, 2, fold=True, balance=-5),
    KernelConfig(16, 8, 2, fold=True, split_k=4),
    KernelConfig(64, 8, 1, xperm=True, split_k=4),
    KernelConfig(64, 8, 2, xperm=True, balance=-3),
    KernelConfig(128, 8, 2, warps=8, xperm=True, fold=True, zlate=True, split_k=2),
    KernelConfig(16, 8, 2, fold=True, zpre=True, xsum=True, split_k=2),
    KernelConfig(16, 8, 2, maxnreg=128, xperm=True, zred=True, split_k=2),
]


@pytest.mark.parametrize("config", VARIANTS, ids=[f"v{i}" for i in range(len(VARIANTS))])
def test_launch_shape_variants_match_the_source_dequant(config):
    layer = _make_layer(256, 1024, 128, "asym", False, torch.float16, 22, with_bias=True, device="cpu")
    gen = torch.Generator().manual_seed(23)
    for m in (1, 9) if config.bm == 16 else (40, 130):
        x = torch.randn(m, 1024, generator=gen).to(torch.float16)
        assert not _failures(layer, x, _run(layer, x, config)), (config, m)


def test_eager_launch_shapes_match_the_source_dequant():
    """`plan(..., eager=True)`: `for_eager`'s shape (no K split for small layers up to 16 rows, plain loads)."""
    from marlin_convert.runtime import triton_gemm

    for mode, m in (("asym", 1), ("sym", 16), ("shift", 40)):
        layer = _make_layer(192, 1024, 128, mode, False, torch.bfloat16, 26, with_bias=True, device="cpu")
        t = layer.marlin
        p = triton_gemm.plan(m, torch.bfloat16, torch.device("cpu"), t["B"], t["s"], group_size=128, z=t.get("z"),
                             shift=t.get("shift"), bias=layer.bias, eager=True)
        x = torch.randn(m, 1024, generator=torch.Generator().manual_seed(27)).to(torch.bfloat16)
        assert not _failures(layer, x, p(x)), (mode, m)


def test_the_one_row_gemv_matches_the_source_dequant():
    """The one-row GEMV (`KernelConfig.gemv`, float16 sums: the GEMV's bounds), float16 and bfloat16 x: one and
    two column blocks a program, uneven and single splits, bias, one group, Marlin zero points; and `plan` takes
    it, split by `gemv_config`, for one float16 row of a symmetric layer of 2**24 weights (bfloat16: 2**25)."""
    from marlin_convert.runtime import triton_gemm
    from marlin_convert.runtime._triton_gemv_kernel import marlin_gemv_kernel

    for dtype, n, k, group_size, mode, nb, split, bias in (
            (torch.float16, 192, 512, 128, "sym", 1, 3, True), (torch.float16, 256, 1024, -1, "sym", 2, 3, False),
            (torch.float16, 256, 384, 128, "sym", 2, 1, True), (torch.float16, 256, 1024, 128, "asym", 2, 3, True),
            (torch.float16, 192, 512, -1, "asym", 1, 2, False), (torch.bfloat16, 192, 512, 128, "sym", 1, 3, True),
            (torch.bfloat16, 256, 1024, -1, "sym", 2, 3, False), (torch.bfloat16, 256, 1024, 128, "asym", 2, 3, True)):
        layer = _make_layer(n, k, group_size, mode, False, dtype, 31, with_bias=bias, device="cpu")
        x = torch.randn(1, k, generator=torch.Generator().manual_seed(32)).to(dtype)
        y = _run(layer, x, KernelConfig(1, 8, nb, split_k=split, gemv=True))
        assert not _failures(layer, x, y, gemv=True), (dtype, n, k, group_size, mode, nb, split)
    for dtype, n, grid in ((torch.float16, 4096, (32, 8, 1)), (torch.bfloat16, 8192, (64, 8, 1))):
        B, s = torch.zeros(256, 2 * n, dtype=torch.int32), torch.ones(32, n, dtype=dtype)
        gemv = triton_gemm.plan(1, dtype, torch.device("cpu"), B, s, group_size=128).launches[0]
        assert gemv.fn is marlin_gemv_kernel and gemv.grid == grid
        assert gemv.consts["X_BF16"] == (dtype == torch.bfloat16)
        assert triton_gemm.plan(2, dtype, torch.device("cpu"), B, s, group_size=128).launches[0].fn is not gemv.fn


def test_plans_off_a_cuda_device_launch_nothing_dependently():
    """`KernelConfig.pdl` (the rules give it to the GEMV and to K splits up to 16 rows, round 25) needs sm_90's
    `griddepcontrol`: off CUDA no launch carries `launch_pdl`, `TRIGGER` or `WAIT_PRIOR`, and the plans still
    compute within the bounds."""
    from marlin_convert.runtime import triton_gemm

    layer = _make_layer(256, 1024, 128, "sym", False, torch.float16, 35, with_bias=True, device="cpu")
    t = layer.marlin
    for m, cfg in ((1, KernelConfig(1, 8, 2, split_k=3, gemv=True, pdl=True)),
                   (5, KernelConfig(16, 8, 2, split_k=2, pdl=True))):
        p = triton_gemm.plan(m, torch.float16, torch.device("cpu"), t["B"], t["s"], group_size=128, bias=layer.bias,
                             config=cfg)
        assert len(p.launches) == 2 and all(not {"launch_pdl", "TRIGGER", "WAIT_PRIOR"} & set(launch.consts)
                                            for launch in p.launches), cfg
        x = torch.randn(m, 1024, generator=torch.Generator().manual_seed(36)).to(torch.float16)
        assert not _failures(layer, x, p(x), gemv=cfg.gemv), cfg


def test_the_gemv_takes_activations_up_to_its_overflow_limits():
    """The GEMV's fp16 chains stay finite and within its bounds for |x| up to 30000 (symmetric) and 17000 (zero
    points) in float16, 480000 and 270000 in bfloat16 (entering as x / 16): below the limits its docstring
    derives (32752, 17467; 16 times those)."""
    for dtype, mode, largest in ((torch.float16, "sym", 30000.0), (torch.float16, "asym", 17000.0),
                                 (torch.bfloat16, "sym", 480000.0), (torch.bfloat16, "asym", 270000.0)):
        layer = _make_layer(256, 1024, 128, mode, False, dtype, 33, with_bias=False, device="cpu")
        x = torch.randn(1, 1024, generator=torch.Generator().manual_seed(34))
        x = (x / x.abs().max() * largest).to(dtype)
        y = _run(layer, x, KernelConfig(1, 8, 2, split_k=2, gemv=True))
        assert not _failures(layer, x, y, gemv=True), (dtype, mode)


def test_the_gemv_bounds_reject_layout_damage():
    """The GEMV's check can fail: a swapped 64-column block, scales or zero points in source order."""
    from marlin_convert.layout import pack_nibbles
    from tests.runtime.test_triton_gemm import _swap_block

    layer = _make_layer(256, 1024, 128, "asym", False, torch.float16, 12, with_bias=False, device="cpu")
    x = torch.randn(1, 1024, generator=torch.Generator().manual_seed(4)).to(torch.float16)
    cfg = KernelConfig(1, 8, 2, split_k=3, gemv=True)
    assert not _failures(layer, x, _run(layer, x, cfg), gemv=True)
    for what, override in {"swapped block": {"B": _swap_block(layer.marlin["B"])},
                           "scales in source order": {"s": layer.rec.scales.contiguous()},
                           "zero points in source order": {"z": pack_nibbles(layer.rec.zeros)}}.items():
        assert _failures(layer, x, _run(layer, x, cfg, **override), gemv=True), what


def test_the_bounds_reject_a_swapped_column_block():
    """The check can fail: two 64-column blocks of `B` swapped move their outputs by O(|y|)."""
    layer = _make_layer(192, 384, 128, "asym", False, torch.float16, 24, with_bias=False, device="cpu")
    B = layer.marlin["B"].clone()
    B[:, :128], B[:, 128:256] = layer.marlin["B"][:, 128:256], layer.marlin["B"][:, :128]
    x = torch.randn(1, 384, generator=torch.Generator().manual_seed(25)).to(torch.float16)
    assert _failures(layer, x, _run(layer, x, B=B))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_a_layer_leaves_the_gemv_when_pytorch_forbids_reduced_precision_sums(dtype, monkeypatch):
    """The Triton backend's call (`backends._triton_forward`, outside graph capture) keeps a plan per state of
    PyTorch's switch for x's dtype: one row of a symmetric layer runs the GEMV within its bounds while the
    switch is on, and the tensor-core kernel within the float32-sum bounds once it is off (the GEMV's size floors
    lowered to the interpreter's layer)."""
    from marlin_convert.runtime import MarlinLinear, gemm_rules
    from marlin_convert.runtime._triton_gemv_kernel import marlin_gemv_kernel
    from marlin_convert.runtime.backends import _triton_forward
    from marlin_convert.runtime.spec import LayerSpec

    monkeypatch.setattr(gemm_rules, "GEMV_MIN_WEIGHTS", 1)
    monkeypatch.setattr(gemm_rules, "GEMV_MIN_WEIGHTS_BF16", 1)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)  # no CUDA here
    layer = _make_layer(256, 1024, 128, "sym", False, dtype, 36, with_bias=True, device="cpu")
    lin = MarlinLinear(1024, 256, LayerSpec(128, None, False, str(dtype).removeprefix("torch.")), bias=True,
                       device="cpu", dtype=dtype)
    lin.load_state_dict({**layer.marlin, "bias": layer.bias.to(dtype)})
    x = torch.randn(1, 1024, generator=torch.Generator().manual_seed(37)).to(dtype)
    matmul = torch.backends.cuda.matmul
    switch = f"allow_{'fp16' if dtype == torch.float16 else 'bf16'}_reduced_precision_reduction"
    before = getattr(matmul, switch)  # (not monkeypatch: PyTorch's object answers these names by __getattr__)
    try:
        setattr(matmul, switch, True)
        assert not _failures(layer, x, _triton_forward(lin, x), gemv=True)
        setattr(matmul, switch, False)
        assert not _failures(layer, x, _triton_forward(lin, x))
    finally:
        setattr(matmul, switch, before)
    first = {key[4]: entry.gemm.launches[0].fn for key, entry in lin._prepared[("triton-plans",)].items()}
    assert first[True] is marlin_gemv_kernel and first[False] is not marlin_gemv_kernel
