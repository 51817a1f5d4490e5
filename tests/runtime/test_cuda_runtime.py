"""On the GPU: converted checkpoints run through optimum-quanto's Marlin GEMM ('quanto' backend), asked for
first (`QUANTO_FIRST`), and the fixtures also through the Triton GEMM asked for first and through the default
order (called eagerly: optimum-quanto's kernel where it serves; inside a CUDA graph the default order would
put the Triton GEMM first for layers of <= 1024 outputs, which every fixture's are).

Bounds: logits of each producer fixture through the Marlin GEMM within REL 5e-3 of the dense fp16 model
built from the source (per GEMM about 5e-4 from fp16 rounding, see gemm_check; 0.9e-3 to 1.4e-3 measured
on the 2-block fixtures; a layout error gives order 1). The 64-layer model: teacher-forced on the reference path's greedy continuation, the Marlin
path picks the same top-1 token at every step where the reference's top-1 margin is clear (>= 0.1 logit),
and there are at least 32 such steps; its own greedy generation matches until the first unclear step.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch

pytest.importorskip("transformers")

import marlin_convert  # noqa: E402,F401
from marlin_convert import pack_checkpoint  # noqa: E402
from marlin_convert.runtime import MarlinLinear, set_order  # noqa: E402
from tests.runtime.helpers import DECODERS, FIXTURES, available_fixtures, dense_model, tokens, write_random_llama_gptq  # noqa: E402

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(importlib.util.find_spec("optimum") is None,
                                                  reason="needs optimum-quanto (pip install marlin-convert[gpu-verify])")]
REL = 5e-3
REL_BF16 = 8 * 2.0**-8
"""bfloat16 keeps 8 significand bits (unit roundoff 2^-8): the kernel and cuBLAS both hold each weight and
activation to that precision but round partial sums differently, so the logits may differ by a few ulps of
relative error after the model's layers; 8 ulps (3.1e-2) leaves room for that and still fails on a wrong
tile, scale or zero-point order (those give errors of order 1)."""
MARGIN = 0.1
QUANTO_FIRST = ["quanto", "triton", "reference"]
"""optimum-quanto's kernel first, our Triton GEMM where it cannot serve a layer, then the reference path."""


@pytest.fixture
def quanto_first():
    set_order(QUANTO_FIRST)
    yield
    set_order(None)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _backends(model) -> set[str]:
    return {b.name for m in model.modules() if isinstance(m, MarlinLinear) for b in m._chosen.values()}


@pytest.mark.parametrize("order", ["quanto-first", "triton-first", "default"])
@pytest.mark.parametrize("fixture", available_fixtures())
def test_fixture_marlin_gemm_close_to_dense_fp16(tmp_path, fixture, order):
    """Through optimum-quanto's kernel or the Triton GEMM when asked first; by default, called eagerly, through
    optimum-quanto's kernel (it serves every layer of the fixtures in float16: `backends.default_order(eager=True)`;
    inside a CUDA graph the Triton GEMM would serve them, `test_triton_launch`)."""
    from transformers import AutoModelForCausalLM

    src = FIXTURES / fixture
    pack_checkpoint(src, tmp_path / "out", device="cuda")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), dtype=torch.float16).cuda().eval()
    dense = dense_model(src, DECODERS[fixture], torch.float16).cuda()
    ids = tokens(model.config.vocab_size).cuda()
    set_order({"quanto-first": QUANTO_FIRST, "triton-first": ["triton", "reference"], "default": None}[order])
    try:
        with torch.no_grad():
            got, want = model(ids).logits, dense(ids).logits
    finally:
        set_order(None)
    assert _backends(model) == ({"triton"} if order == "triton-first" else {"quanto"})
    err = _rel(got, want)
    print(f"{fixture}: logits rel err {err:.2e} vs dense fp16")
    assert err <= REL


def test_64_layer_greedy_tokens_marlin_equal_reference(tmp_path):
    from transformers import AutoModelForCausalLM

    write_random_llama_gptq(tmp_path / "src", layers=64, hidden=512, intermediate=1024, heads=8, kv_heads=4, vocab=512)
    pack_checkpoint(tmp_path / "src", tmp_path / "out", device="cuda")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), dtype=torch.float16).cuda().eval()
    prompt = tokens(512, batch=1, length=8, seed=3).cuda()
    new = 64
    try:
        set_order(["reference"])
        ref = model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                             output_scores=True, return_dict_in_generate=True)
        assert _backends(model) == {"reference"}
        set_order(["quanto"])
        with torch.no_grad():
            forced = model(ref.sequences).logits[0, prompt.shape[1] - 1 : -1]  # teacher-forced on the reference
        mar = model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        assert "quanto" in _backends(model)
    finally:
        set_order(None)
    scores = torch.stack(ref.scores)[:, 0].float()
    top2 = scores.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) >= MARGIN
    ref_tokens = ref.sequences[0, prompt.shape[1]:]
    assert int(clear.sum()) >= 32, f"only {int(clear.sum())} clear steps: the test model is too flat"
    agree = forced.argmax(-1) == ref_tokens
    assert bool(agree[clear].all()), f"Marlin top-1 differs at clear steps {torch.nonzero(clear & ~agree).flatten().tolist()}"
    first_unclear = int((~clear).nonzero()[0]) if bool((~clear).any()) else new
    assert torch.equal(mar[0, prompt.shape[1]: prompt.shape[1] + first_unclear], ref_tokens[:first_unclear])
    print(f"64 layers: {int(clear.sum())} clear steps of {new}, all agree; free-running greedy equal for {first_unclear} steps")


def test_bf16_runs_triton_within_bound_reference_exactly_and_says_so_once(tmp_path, caplog, quanto_first):
    """bfloat16 activations: optimum-quanto's kernel, asked first, refuses them (said once); our Triton kernel
    serves them within the bound of the dense bf16 model; with Triton left out, the reference path is bit-equal
    to it."""
    from transformers import AutoModelForCausalLM

    from marlin_convert.runtime import backends

    src = FIXTURES / "gptqmodel_asym"
    pack_checkpoint(src, tmp_path / "out", device="cuda")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), dtype=torch.bfloat16).cuda().eval()
    dense = dense_model(src, DECODERS["gptqmodel_asym"], torch.bfloat16).cuda()
    ids = tokens(model.config.vocab_size).cuda()
    backends._said.clear()
    with caplog.at_level("WARNING", logger="marlin_convert"), torch.no_grad():
        got, want = model(ids).logits, dense(ids).logits
        model(ids)
    assert _backends(model) == {"triton"}
    assert _rel(got, want) <= REL_BF16
    said = [r.getMessage() for r in caplog.records if "'quanto' backend cannot serve" in r.getMessage()]
    assert len(said) == 1 and "bfloat16" in said[0] and "'triton'" in said[0], said
    backends.set_order(["quanto", "reference"])
    with torch.no_grad():
        got = model(ids).logits
    assert _backends(model) >= {"reference"}
    assert torch.equal(got, want)


def test_moe_experts_through_marlin(tmp_path, quanto_first):
    from transformers import AutoModelForCausalLM
    from tests.runtime.helpers import dense_qwen3_moe, write_qwen3_moe_gptq

    write_qwen3_moe_gptq(tmp_path / "src")
    pack_checkpoint(tmp_path / "src", tmp_path / "out", device="cuda")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), dtype=torch.float16).cuda().eval()
    dense = dense_qwen3_moe(tmp_path / "src", torch.float16).cuda()
    ids = tokens(300, batch=2, length=16).cuda()
    with torch.no_grad():
        err = _rel(model(ids).logits, dense(ids).logits)
    assert _backends(model) == {"quanto", "triton"}  # N = 128 layers (k/v, expert gate/up) run on Triton
    print(f"qwen3-moe: logits rel err {err:.2e} vs dense fp16")
    assert err <= REL


def test_forward_check_on_gpu(tmp_path):
    from marlin_convert.runtime.forward_check import MARLIN_BOUND, forward_checks

    src = FIXTURES / "gptqmodel_actorder"
    pack_checkpoint(src, tmp_path / "out", device="cuda")
    checks = forward_checks(src, tmp_path / "out", torch.device("cuda"))
    print("verify --forward on GPU:", [(c["name"], c["detail"]) for c in checks])
    assert all(c["status"] == "PASS" for c in checks) and str(f"{MARLIN_BOUND:.0e}") in checks[-1]["detail"]
