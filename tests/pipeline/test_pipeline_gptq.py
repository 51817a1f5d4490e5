"""GPTQ variants through pack -> unpack -> sha256 equality, pack -> verify, and golden Marlin bytes."""
import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from marlin_convert import pack_checkpoint, unpack_checkpoint, verify_checkpoint
from tests._support.files import content_hashes, tree_hashes
from tests._support.checkpoints import make_gptq_checkpoint
from tests._support.reference import marlin_permute_scales, marlin_zero_points, seed_pack
from tests._support.seeds import stable_seed

VARIANTS = {
    "v1-sym-g128-fp16": dict(sym=True, v2=False, group_size=128),
    "v1-asym-g64": dict(sym=False, v2=False, group_size=64),
    "v2-sym-g32-bf16": dict(sym=True, v2=True, group_size=32, scale_dtype=torch.bfloat16),
    "v2-asym-g128-actorder": dict(sym=False, v2=True, group_size=128, act_order=True),
    "v1-sym-channel-bias": dict(sym=True, v2=False, group_size=-1, bias=True),
    "v1-sym-actorder-bf16-bias": dict(sym=True, v2=False, group_size=128, act_order=True, scale_dtype=torch.bfloat16, bias=True),
    "v1-asym-no-g_idx": dict(sym=False, v2=False, group_size=128, with_g_idx=False),
}


def _read_all(root):
    out = {}
    for f in sorted(root.glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            for name in h.keys():
                out[name] = h.get_tensor(name)
    return out


def _sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's bytes as safetensors stores them (little-endian, C order)."""
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _assert_same_tensors(got: dict, want: dict) -> None:
    """Same names, and each tensor the same dtype, shape and bytes."""
    assert sorted(got) == sorted(want)
    for name, t in want.items():
        assert got[name].dtype == t.dtype and got[name].shape == t.shape, name
        assert torch.equal(got[name].contiguous().view(torch.uint8), t.contiguous().view(torch.uint8)), name


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_round_trip_and_golden_bytes(tmp_path, variant):
    kwargs = VARIANTS[variant]
    src = tmp_path / "src"
    truth = make_gptq_checkpoint(src, seed=stable_seed(variant), shards=2, **kwargs)
    before = tree_hashes(src)
    report = pack_checkpoint(src, tmp_path / "out")
    assert report.layers_converted == len(truth)
    out = _read_all(tmp_path / "out")
    for prefix, t in truth.items():
        codes = t.codes.T  # [N, K]
        perm_key = f"{prefix}.perm"
        if kwargs.get("act_order"):
            perm = np.argsort(t.g_idx, kind="stable")
            np.testing.assert_array_equal(out[perm_key].numpy(), perm)
            np.testing.assert_array_equal(out[f"{prefix}.g_idx"].numpy(), t.g_idx)
            codes = codes[:, perm]
        else:
            assert perm_key not in out
        np.testing.assert_array_equal(out[f"{prefix}.B"].numpy(), seed_pack(np.ascontiguousarray(codes)))
        k = codes.shape[1]
        want_s = marlin_permute_scales(t.scales.view(torch.int16).numpy(), k, kwargs["group_size"])
        np.testing.assert_array_equal(out[f"{prefix}.s"].view(torch.int16).numpy(), want_s)
        assert out[f"{prefix}.s"].dtype == t.scales.dtype
        if kwargs["sym"]:
            assert f"{prefix}.z" not in out
        else:
            np.testing.assert_array_equal(out[f"{prefix}.z"].numpy(), marlin_zero_points(t.zeros))
    assert verify_checkpoint(tmp_path / "out", src).ok
    assert verify_checkpoint(tmp_path / "out").ok
    unpack_checkpoint(tmp_path / "out", tmp_path / "back")
    _assert_same_tensors(_read_all(tmp_path / "back"), _read_all(src))
    assert content_hashes(tmp_path / "back") == content_hashes(src)  # every file byte for byte: shards, index, config
    assert tree_hashes(src) == before


def test_output_config_and_manifest(tmp_path):
    make_gptq_checkpoint(tmp_path / "src", sym=False, act_order=True, group_size=64)
    pack_checkpoint(tmp_path / "src", tmp_path / "out")
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["quantization_config"] == {
        "quant_method": "marlin", "bits": 4, "group_size": 64, "sym": False, "desc_act": True,
        # what the transformers loader needs (runtime.spec / runtime.serving_config)
        "zero_point": "int", "scale_dtype": "float16", "layer_overrides": {},
        "modules_to_not_convert": ["lm_head", "model.embed_tokens"], "dense_on_load": {}, "unloadable_layers": {},
    }
    assert cfg["marlin_convert"]["source_format"] == "gptq"
    assert cfg["marlin_convert"]["source_quantization_config"]["quant_method"] == "gptq"
    manifest = json.loads((tmp_path / "out" / "marlin_convert_manifest.json").read_text())
    src, out = _read_all(tmp_path / "src"), _read_all(tmp_path / "out")
    assert manifest["source_tensors"] == {
        name: {"dtype": {torch.int32: "I32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}[t.dtype],
               "shape": list(t.shape), "sha256": _sha256(t)} for name, t in src.items()}
    assert {name: m["sha256"] for name, m in manifest["output_tensors"].items()} == {name: _sha256(t) for name, t in out.items()}
    assert (tmp_path / "out" / "tokenizer_config.json").read_bytes() == (tmp_path / "src" / "tokenizer_config.json").read_bytes()


@pytest.mark.parametrize("jobs", [1, 2, 5])
def test_same_input_gives_same_bytes_for_any_jobs(tmp_path, jobs):
    make_gptq_checkpoint(tmp_path / "src", sym=False, act_order=True, shards=3)
    pack_checkpoint(tmp_path / "src", tmp_path / "a", jobs=1)
    pack_checkpoint(tmp_path / "src", tmp_path / "b", jobs=jobs)
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b")
    unpack_checkpoint(tmp_path / "a", tmp_path / "back1", jobs=1)
    unpack_checkpoint(tmp_path / "b", tmp_path / "back2", jobs=jobs)
    assert tree_hashes(tmp_path / "back1") == tree_hashes(tmp_path / "back2")


def test_mislabelled_v2_converts_with_warning(tmp_path):
    truth = make_gptq_checkpoint(tmp_path / "src", sym=True, v2=True, config_v2=False)
    report = pack_checkpoint(tmp_path / "src", tmp_path / "out")
    assert any("0x88888888" in w for w in report.warnings)
    assert report.layers_converted == len(truth)
    assert verify_checkpoint(tmp_path / "out", tmp_path / "src").ok
    out = _read_all(tmp_path / "out")
    for prefix, t in truth.items():  # the stored v2 zeros are the true zeros: symmetric, so no z and the seed's B
        assert f"{prefix}.z" not in out
        np.testing.assert_array_equal(out[f"{prefix}.B"].numpy(), seed_pack(np.ascontiguousarray(t.codes.T)))
    unpack_checkpoint(tmp_path / "out", tmp_path / "back")
    _assert_same_tensors(_read_all(tmp_path / "back"), _read_all(tmp_path / "src"))


def test_output_is_readable_by_safetensors_and_aligned(tmp_path):
    truth = make_gptq_checkpoint(tmp_path / "src", bias=True, ineligible=True)
    pack_checkpoint(tmp_path / "src", tmp_path / "out")
    from marlin_convert.checkpoint import read_header

    header = read_header(tmp_path / "out" / "model.safetensors")
    for info in header.tensors.values():
        assert info.start % {"I32": 4, "F16": 2, "BF16": 2}.get(info.dtype, 1) == 0, info
    src, out = _read_all(tmp_path / "src"), _read_all(tmp_path / "out")  # read back by the official reader
    packed = [p for p in truth if p != "model.layers.0.mlp.odd_proj"]
    sources = {f"{p}.{role}" for p in packed for role in ("qweight", "qzeros", "scales", "g_idx")}
    _assert_same_tensors({n: t for n, t in out.items() if n in src}, {n: t for n, t in src.items() if n not in sources})
    for prefix in packed:
        np.testing.assert_array_equal(out[f"{prefix}.B"].numpy(), seed_pack(np.ascontiguousarray(truth[prefix].codes.T)))
        np.testing.assert_array_equal(out[f"{prefix}.s"].view(torch.int16).numpy(),
                                      marlin_permute_scales(truth[prefix].scales.view(torch.int16).numpy(), truth[prefix].codes.shape[0], 128))
    assert set(out) - set(src) == {f"{p}.{s}" for p in packed for s in ("B", "s")}
