"""AutoRound checkpoints written by auto-round 0.16.1 itself (tests/fixtures/producers/autoround_*):
every packing format, pack -> golden `B` from the test-side decoder -> verify -> byte-exact unpack, with
extra_config override layers copied with their reason, and the gptq/awq exports through those formats."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from marlin_convert import inspect_checkpoint, pack_checkpoint, verify_checkpoint
from marlin_convert.errors import UnknownFormatError
from tests._support.files import tree_hashes
from tests.formats import producer_decoders as dec
from tests.formats.test_producer_fixtures import _marlin_weight, assert_verified_and_restored
from tests._support.reference import seed_pack

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "producers"
_GPTQ_8BIT = "model.layers.1.self_attn.o_proj"
"""The layer auto-round's gptq export of the mixed fixture quantized to 8 bits (a `dynamic` "+:" rule)."""
_AUTO_ROUND_FIXTURES = {
    # packing_format the producer wrote: its fixtures (all detected as auto_round, read by the test decoder)
    "auto_round:auto_gptq": ["autoround_gptq_sym", "autoround_gptq_sym_g32_mixed", "autoround_gptq_asym"],
    "auto_round:auto_awq": ["autoround_awq_asym", "autoround_awq_asym_g64_bf16", "autoround_awq_sym"],
    "auto_round": ["autoround_plain_asym_mixed", "autoround_plain_asym_model_free"],
    "auto_round:gptqmodel": ["autoround_gptqmodel_asym", "autoround_gptqmodel_sym_g32"],
}
CASES = {
    # fixture: (format detected, test-side decoder, packing_format / quant_method the producer wrote)
    **{name: ("auto_round", dec.decode_autoround, packing)
       for packing, names in _AUTO_ROUND_FIXTURES.items() for name in names},
    "autoround_export_gptq": ("gptq", dec.decode_gptq, "gptq"),
    "autoround_export_awq": ("awq", dec.decode_awq, "awq"),
    "autoround_export_gptq_mixed": ("gptq", lambda root: dec.decode_gptq(root, skip=frozenset({_GPTQ_8BIT})), "gptq"),
}


def _available():
    return [name for name in CASES if (FIXTURES / name / "config.json").is_file()]


def _qc(src: Path) -> dict:
    return json.loads((src / "config.json").read_text())["quantization_config"]


def _expected_skips(qc: dict) -> dict[str, str]:
    """Layers that extra_config (or, in a gptq export, a `dynamic` rule) took away from 4 bits, with the
    words their reason must contain."""
    if qc["quant_method"] == "gptq":
        return {_GPTQ_8BIT: "dynamic rule"} if qc.get("dynamic") else {}
    return {name: f"auto-round extra_config keeps this layer at {cfg['bits']} bits" if cfg["bits"] >= 16
            else f"auto-round layer quantized to {cfg['bits']} bits"
            for name, cfg in (qc.get("extra_config") or {}).items() if cfg.get("bits", 4) != 4}


@pytest.mark.parametrize("fixture", _available())
def test_autoround_fixture(tmp_path, fixture):
    fmt, decode, written = CASES[fixture]
    src = FIXTURES / fixture
    qc = _qc(src)
    assert qc.get("packing_format", qc["quant_method"]) == written, "the fixture is not the packing it stands for"
    before = tree_hashes(src)
    truth = decode(src)
    assert truth, "the test-side decoder found no 4-bit layer"
    report = pack_checkpoint(src, tmp_path / "out", device="cpu")
    assert report.format == fmt and report.layers_converted == len(truth)
    expected_skips = _expected_skips(qc)
    assert set(report.skipped) == set(expected_skips)
    for prefix, words in expected_skips.items():
        assert words in report.skipped[prefix], report.skipped[prefix]
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    orig = load_file(str(src / "model.safetensors"))
    for prefix in expected_skips:  # override layers: every tensor copied as is, nothing packed
        names = [n for n in orig if n.startswith(prefix + ".")]
        assert names and not any(f"{prefix}.{s}" in out for s in ("B", "s", "z"))
        for name in names:
            assert torch.equal(out[name].view(torch.uint8), orig[name].view(torch.uint8)), name
    for prefix, t in truth.items():
        n, k = t.codes.shape
        assert f"{prefix}.perm" not in out  # auto-round never writes act-order
        np.testing.assert_array_equal(t.g_idx, np.arange(k) // (k if t.group_size == -1 else t.group_size))
        np.testing.assert_array_equal(out[f"{prefix}.B"].numpy(), seed_pack(np.ascontiguousarray(t.codes)), err_msg=prefix)
        w = _marlin_weight(out, prefix, n, k, t.group_size)
        assert np.array_equal(w.view(np.int32), t.weight.view(np.int32)), f"{prefix}: dequantized weights differ"
    assert_verified_and_restored(src, tmp_path, before)


def test_symmetric_scales_are_signed():
    """auto-round's symmetric scale is ±max/8: about half of them are negative, and they survive packing."""
    scales = torch.cat([v.float().flatten() for n, v in load_file(str(FIXTURES / "autoround_gptq_sym" / "model.safetensors")).items()
                        if n.endswith(".scales")])
    assert 0.3 < float((scales < 0).float().mean()) < 0.7


def test_exports_are_labelled_by_auto_round():
    for fixture, method in (("autoround_export_gptq", "gptq"), ("autoround_export_awq", "awq")):
        qc = _qc(FIXTURES / fixture)
        assert qc["quant_method"] == method and qc["provider"] == "auto-round" and "checkpoint_format" not in qc


def test_symmetric_awq_export_is_copied_with_the_reason(tmp_path):
    """auto-round's `auto_awq` export of a symmetric model says `zero_point: false` (its qzeros hold 8):
    the AWQ path copies every layer with that reason rather than guessing."""
    src = FIXTURES / "autoround_export_awq_sym"
    if not (src / "config.json").is_file():
        pytest.skip("fixture missing")
    qc = _qc(src)
    assert qc["quant_method"] == "awq" and qc["zero_point"] is False and qc["provider"] == "auto-round"
    report = inspect_checkpoint(src)
    assert report.format == "awq" and report.layers and not any(layer["eligible"] for layer in report.layers)
    assert all("zero_point: false" in layer["reason"] for layer in report.layers)


def test_inspect_names_the_override_layers():
    report = inspect_checkpoint(FIXTURES / "autoround_plain_asym_mixed")
    assert report.format == "auto_round"
    reasons = {layer["prefix"]: layer["reason"] for layer in report.layers if not layer["eligible"]}
    assert set(reasons) == {"model.layers.0.mlp.down_proj", "model.layers.1.self_attn.o_proj"}
    copied = {t["name"]: t["reason"] for t in report.tensors if t["layer"] == "model.layers.1.self_attn.o_proj"}
    assert set(copied) == {f"model.layers.1.self_attn.o_proj.{r}" for r in ("qweight", "qzeros", "scales")}
    assert all("8 bits" in r for r in copied.values())


def _rewrite_config(src: Path, dst: Path, **changes) -> None:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["quantization_config"].update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))


def test_unsupported_packing_format_is_refused(tmp_path):
    _rewrite_config(FIXTURES / "autoround_gptq_sym", tmp_path / "src", packing_format="auto_round:fp8")
    with pytest.raises(UnknownFormatError, match="packing_format 'auto_round:fp8'"):
        inspect_checkpoint(tmp_path / "src")


def test_undeclared_8bit_layer_is_copied_not_misread(tmp_path):
    """A layer stored as 8-bit words whose override the config lost: its shapes say so, and it is copied."""
    _rewrite_config(FIXTURES / "autoround_gptq_sym_g32_mixed", tmp_path / "src",
                    extra_config={"model.layers.0.mlp.down_proj": {"bits": 16}})
    layers = {layer["prefix"]: layer for layer in inspect_checkpoint(tmp_path / "src").layers}
    o_proj = layers["model.layers.1.self_attn.o_proj"]
    assert not o_proj["eligible"] and "8-bit words" in o_proj["reason"]


def test_regex_override_applies(tmp_path):
    """extra_config keys that name no layer are regexes searched in the layer name (auto-round's loader)."""
    _rewrite_config(FIXTURES / "autoround_gptq_sym_g32_mixed", tmp_path / "src",
                    extra_config={"model.layers.0.mlp.down_proj": {"bits": 16}, r".*layers\.1\.self_attn\.o_pr.*": {"bits": 8}})
    layers = {layer["prefix"]: layer for layer in inspect_checkpoint(tmp_path / "src").layers}
    assert "8 bits" in layers["model.layers.1.self_attn.o_proj"]["reason"]
    assert layers["model.layers.1.self_attn.q_proj"]["eligible"]


def test_console_script_round_trip(tmp_path):
    """The real `marlin-convert` console script: pack, verify, unpack gives the source bytes back."""
    exe = shutil.which("marlin-convert")
    if exe is None:
        pytest.skip("package not installed")
    src = FIXTURES / "autoround_plain_asym_mixed"
    env = {**os.environ, "COLUMNS": "200"}

    def run(*args):
        return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env)

    res = run("pack", src, "-o", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    assert "model.layers.1.self_attn.o_proj" in res.stdout + res.stderr
    res = run("verify", src, tmp_path / "out")
    assert res.returncode == 0, res.stdout + res.stderr
    res = run("unpack", tmp_path / "out", "-o", tmp_path / "back")
    assert res.returncode == 0, res.stderr
    orig, back = load_file(str(src / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert orig.keys() == back.keys()
    for name, tensor in orig.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape, name
        assert torch.equal(back[name].reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), name


def test_malformed_extra_config_is_one_line_exit_2(cli, tmp_path):
    _rewrite_config(FIXTURES / "autoround_gptq_sym", tmp_path / "src", extra_config={"model.layers.0.mlp.down_proj": 16})
    res = cli("pack", tmp_path / "src", "-o", tmp_path / "out")
    assert res.code == 2 and "extra_config" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "out").exists()


def test_zero_convention_follows_the_stored_words(tmp_path):
    """A file whose label says v1 (auto_gptq) but whose symmetric qzeros are 0x88888888 is read as true zeros,
    with a warning, and still converts exactly."""
    _rewrite_config(FIXTURES / "autoround_gptqmodel_sym_g32", tmp_path / "src", packing_format="auto_round:auto_gptq")
    report = pack_checkpoint(tmp_path / "src", tmp_path / "out", device="cpu")
    assert report.layers_converted == 14 and any("0x88888888" in w for w in report.warnings)
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert not any(name.endswith(".z") for name in out)  # true zero 8 everywhere: symmetric, no zero points
    assert verify_checkpoint(tmp_path / "out", tmp_path / "src").ok


def test_gptq_export_override_rules():
    """auto-round's gptq export writes its overrides as GPTQModel `dynamic` rules: the 8-bit layer is copied
    with the rule as its reason, the 16-bit one (a plain weight) is left alone."""
    qc = _qc(FIXTURES / "autoround_export_gptq_mixed")
    assert qc["quant_method"] == "gptq" and {v.get("bits") for v in qc["dynamic"].values()} == {8, None}
    layers = {layer["prefix"]: layer for layer in inspect_checkpoint(FIXTURES / "autoround_export_gptq_mixed").layers}
    assert "8 bits" in layers[_GPTQ_8BIT]["reason"] and "+:" in layers[_GPTQ_8BIT]["reason"]
    assert "model.layers.0.mlp.down_proj" not in layers and sum(layer["eligible"] for layer in layers.values()) == 12


def test_missing_packing_format_reads_as_auto_gptq_with_a_warning(tmp_path):
    """auto-round's loader defaults a missing packing_format to auto_round:auto_gptq (inference/convert_model.py)."""
    shutil.copytree(FIXTURES / "autoround_gptq_asym", tmp_path / "src")
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    del cfg["quantization_config"]["packing_format"]
    (tmp_path / "src" / "config.json").write_text(json.dumps(cfg))
    report = pack_checkpoint(tmp_path / "src", tmp_path / "out", device="cpu")
    assert report.layers_converted == 14 and any("no packing_format" in w for w in report.warnings)
    assert verify_checkpoint(tmp_path / "out", tmp_path / "src").ok


def test_gptq_dynamic_rule_matching():
    """GPTQModel's `dynamic`: first matching rule in file order, regex anchored at the start of the name."""
    from marlin_convert.errors import CheckpointError
    from marlin_convert.formats.gptq import dynamic_override

    qc = {"dynamic": {r"-:.*\.mlp\.down_proj": {}, r"+:.*\.mlp\..*": {"bits": 8}, r"model\.layers\.1\..*": {"group_size": 32},
                      r"+:self_attn": {"bits": 2}}}
    assert dynamic_override(qc, "model.layers.0.mlp.down_proj") == {"bits": None, "rule": r"-:.*\.mlp\.down_proj"}
    assert dynamic_override(qc, "model.layers.0.mlp.up_proj")["bits"] == 8
    assert dynamic_override(qc, "model.layers.1.self_attn.q_proj")["group_size"] == 32
    assert dynamic_override(qc, "model.layers.0.self_attn.q_proj") == {}  # "self_attn" does not match at the start
    assert dynamic_override({"dynamic": None}, "x") == {}
    with pytest.raises(CheckpointError, match="is not valid"):
        dynamic_override({"dynamic": {"+:(": {"bits": 8}}}, "x")


def test_every_autoround_fixture_is_committed():
    assert _available() == list(CASES)
    assert (FIXTURES / "autoround_export_awq_sym" / "config.json").is_file()
