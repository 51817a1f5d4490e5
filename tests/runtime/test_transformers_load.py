"""from_pretrained of pack's output (CPU): logits equal to a dense model built from the SOURCE files by
the test-side decoders; unconverted layers load dense; bad tensors fail loudly."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

pytest.importorskip("transformers")

import marlin_convert  # noqa: E402,F401  (registers "marlin")
from marlin_convert import pack_checkpoint, unpack_checkpoint  # noqa: E402
from marlin_convert.runtime import MarlinLinear  # noqa: E402
from tests._support.files import content_hashes, tree_hashes  # noqa: E402
from tests.formats import producer_decoders as dec  # noqa: E402
from tests.runtime.helpers import DECODERS, FIXTURES, available_fixtures, dense_model, tokens, write_llama_gptq_with_odd_layers  # noqa: E402


def _load(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("fixture", available_fixtures())
def test_fixture_logits_equal_dense_from_source(tmp_path, fixture, dtype):
    src = FIXTURES / fixture
    pack_checkpoint(src, tmp_path / "out", device="cpu")
    model = _load(tmp_path / "out", dtype)
    marlin = [m for m in model.modules() if isinstance(m, MarlinLinear)]
    assert len(marlin) == len(DECODERS[fixture](src)) == 14
    dense = dense_model(src, DECODERS[fixture], dtype)
    ids = tokens(model.config.vocab_size)
    with torch.no_grad():
        got, want = model(ids).logits, dense(ids).logits
    assert got.dtype == want.dtype == dtype
    assert torch.equal(got, want), f"max |diff| {(got.float() - want.float()).abs().max():.3e}"


def test_unconverted_layers_load_dense(tmp_path):
    from torch import nn

    src = tmp_path / "src"
    write_llama_gptq_with_odd_layers(src)
    report = pack_checkpoint(src, tmp_path / "out", device="cpu")
    assert set(report.skipped) == {f"model.layers.{b}.self_attn.{p}" for b in range(2) for p in ("k_proj", "v_proj", "o_proj")}
    qc = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
    assert set(qc["modules_to_not_convert"]) >= set(report.skipped) | {"lm_head"}
    model = _load(tmp_path / "out", torch.float32)
    attn = model.model.layers[0].self_attn
    assert type(attn.k_proj) is nn.Linear and attn.k_proj.weight.shape == (96, 256)
    assert type(attn.o_proj) is nn.Linear and isinstance(attn.q_proj, MarlinLinear)
    dense = dense_model(src, dec.decode_gptq, torch.float32)
    assert torch.equal(attn.k_proj.weight, dense.model.layers[0].self_attn.k_proj.weight)
    ids = tokens(300)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, dense(ids).logits)


def _rewrite(path: Path, change) -> None:
    file = path / "model.safetensors"
    t = load_file(str(file))
    change(t)
    save_file(t, str(file), metadata={"format": "pt"})


def test_corrupted_B_shape_fails_clearly(tmp_path):
    pack_checkpoint(FIXTURES / "gptqmodel_sym", tmp_path / "out", device="cpu")
    name = "model.layers.1.mlp.up_proj.B"
    _rewrite(tmp_path / "out", lambda t: t.__setitem__(name, t[name][:-1].clone()))
    with pytest.raises(marlin_convert.CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.B: I32 \[15, 1024\].*expected I32 \[16, 1024\]"):
        _load(tmp_path / "out", torch.float32)


def test_missing_tensor_fails_clearly(tmp_path):
    pack_checkpoint(FIXTURES / "gptqmodel_asym", tmp_path / "out", device="cpu")
    _rewrite(tmp_path / "out", lambda t: t.pop("model.layers.0.self_attn.v_proj.z"))
    with pytest.raises(marlin_convert.CheckpointError, match=r"model\.layers\.0\.self_attn\.v_proj\.z: missing"):
        _load(tmp_path / "out", torch.float32)


def test_model_card_and_source_readme_round_trip(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "gptqmodel_sym", src)
    shutil.copyfile(FIXTURES / "quanto_qint4_fp16" / "README.md", src / "README.md")
    before = tree_hashes(src)
    pack_checkpoint(src, tmp_path / "out", device="cpu")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "import marlin_convert" in card and "marlin_convert_source/README.md" in card
    assert (tmp_path / "out" / "marlin_convert_source" / "README.md").read_bytes() == (src / "README.md").read_bytes()
    unpack_checkpoint(tmp_path / "out", tmp_path / "back")
    # every file, model.safetensors included, is byte-identical (whole-file sha256)
    assert content_hashes(tmp_path / "back") == content_hashes(src)
    assert tree_hashes(src) == before


def test_import_does_not_import_transformers(tmp_path):
    import subprocess
    import sys

    code = "import sys, marlin_convert; assert 'transformers' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_verify_forward_cli(tmp_path):
    import subprocess
    import sys
    from pathlib import Path as P

    exe = P(sys.executable).with_name("marlin-convert")
    src = FIXTURES / "ct_asym"
    subprocess.run([str(exe), "pack", str(src), "-o", str(tmp_path / "out"), "--device", "cpu"], check=True, capture_output=True)
    r = subprocess.run([str(exe), "verify", str(src), str(tmp_path / "out"), "--forward", "--device", "cpu", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["forward: logits"]["detail"] == "bit-equal"
    r = subprocess.run([str(exe), "verify", str(tmp_path / "out"), "--forward"], capture_output=True, text=True)
    assert r.returncode == 2 and "needs the source" in r.stderr


def test_forward_check_catches_a_wrong_scale(tmp_path):
    from marlin_convert.runtime.forward_check import forward_checks

    src = FIXTURES / "gptqmodel_sym"
    pack_checkpoint(src, tmp_path / "out", device="cpu")
    name = "model.layers.1.self_attn.o_proj.s"
    _rewrite(tmp_path / "out", lambda t: t[name].__setitem__((0, 5), t[name][0, 5] * 2))
    checks = {c["name"]: c for c in forward_checks(src, tmp_path / "out", torch.device("cpu"))}
    assert checks["forward: logits"]["status"] == "FAIL"
    assert checks["forward: layers 0-0 hidden states"]["status"] == "PASS"
    assert checks["forward: layers 1-1 hidden states"]["status"] == "FAIL"


def test_per_expert_moe_loads_and_matches_dense(tmp_path):
    from marlin_convert.runtime.experts import MarlinExperts
    from tests.runtime.helpers import dense_qwen3_moe, write_qwen3_moe_gptq

    write_qwen3_moe_gptq(tmp_path / "src")
    report = pack_checkpoint(tmp_path / "src", tmp_path / "out", device="cpu")
    assert report.layers_converted == 2 * (4 + 3 * 4) and not report.skipped
    model = _load(tmp_path / "out", torch.float32)
    experts = model.model.layers[0].mlp.experts
    assert isinstance(experts, MarlinExperts) and isinstance(experts[3].down_proj, MarlinLinear)
    dense = dense_qwen3_moe(tmp_path / "src", torch.float32)
    ids = tokens(300, batch=2, length=16)
    with torch.no_grad():
        got, want = model(ids).logits, dense(ids).logits
    # the fused module multiplies by [gate; up] at once, MarlinExperts by gate and up apart: same weights,
    # so only the BLAS blocking of one matmul can differ (1 ulp-level), never a layout error (order 1)
    assert float((got - want).norm() / want.norm()) < 1e-6
