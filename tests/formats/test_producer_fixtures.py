"""Every real-producer fixture: pack, golden Marlin bytes from an independent decoder, dequantized
equality through an independent Marlin decoder, verify, and byte-exact unpack."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from marlin_convert import pack_checkpoint, unpack_checkpoint, verify_checkpoint
from tests._support.files import tree_hashes
from tests.formats import producer_decoders as dec
from tests._support.reference import marlin_unpack_zero_points, marlin_unpermute_scales, seed_pack, seed_unpack

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "producers"
DECODERS = {
    "gptqmodel_sym": ("gptq", dec.decode_gptq),
    "gptqmodel_asym": ("gptq", dec.decode_gptq),
    "gptqmodel_actorder": ("gptq", dec.decode_gptq),
    "transformers_gptq_v2": ("gptq", dec.decode_gptq),
    "autoawq_gemm": ("awq", dec.decode_awq),
    "ct_sym": ("compressed_tensors", dec.decode_compressed_tensors),
    "ct_asym": ("compressed_tensors", dec.decode_compressed_tensors),
    "llmc_w4a16": ("compressed_tensors", dec.decode_compressed_tensors),
    "llmc_w4a16_asym": ("compressed_tensors", dec.decode_compressed_tensors),
    "quanto_qint4_fp16": ("quanto", dec.decode_quanto),
    "quanto_qint4_bf16": ("quanto", dec.decode_quanto),
}


def _available():
    return [name for name in DECODERS if (FIXTURES / name / "config.json").is_file()]


def assert_verified_and_restored(src: Path, tmp_path: Path, before: dict) -> None:
    """`tmp_path/out` (packed from `src`) verifies, unpacks into `tmp_path/back` with every tensor's bytes and
    every JSON file's content, and `src` still hashes to `before`."""
    assert verify_checkpoint(tmp_path / "out", src).ok
    unpack_checkpoint(tmp_path / "out", tmp_path / "back")
    orig, back = load_file(str(src / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert orig.keys() == back.keys()
    for name, tensor in orig.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape, name
        assert torch.equal(back[name].reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), name
    for path in src.glob("*.json"):
        assert json.loads((tmp_path / "back" / path.name).read_text()) == json.loads(path.read_text()), path.name
    assert tree_hashes(src) == before


def _marlin_weight(out: dict, prefix: str, n: int, k: int, group_size: int) -> np.ndarray:
    """Float32 [N, K] from the Marlin tensors, decoded on the test side."""
    codes = seed_unpack(out[f"{prefix}.B"].numpy(), n, k)
    if f"{prefix}.perm" in out:
        restored = np.empty_like(codes)
        restored[:, out[f"{prefix}.perm"].numpy()] = codes
        codes = restored
        g_idx = out[f"{prefix}.g_idx"].numpy().astype(np.int64)
    else:
        g_idx = np.arange(k) // (k if group_size == -1 else group_size)
    raw_s = out[f"{prefix}.s"]
    s = torch.from_numpy(marlin_unpermute_scales(raw_s.view(torch.int16).numpy(), k, group_size)).view(raw_s.dtype).float().numpy()
    q = codes.astype(np.float32)
    if f"{prefix}.shift" in out:
        raw = out[f"{prefix}.shift"]
        shift = torch.from_numpy(marlin_unpermute_scales(raw.view(torch.int16).numpy(), k, group_size)).view(raw.dtype).float().numpy()
        return s.T[:, g_idx] * q - shift.T[:, g_idx]
    z = marlin_unpack_zero_points(out[f"{prefix}.z"].numpy()).astype(np.float32) if f"{prefix}.z" in out else np.full(s.shape, 8, np.float32)
    return (q - z.T[:, g_idx]) * s.T[:, g_idx]


@pytest.mark.parametrize("fixture", _available())
def test_producer_fixture(tmp_path, fixture):
    fmt, decode = DECODERS[fixture]
    src = FIXTURES / fixture
    before = tree_hashes(src)
    truth = decode(src)
    assert truth, "the test-side decoder found no quantized layer"
    report = pack_checkpoint(src, tmp_path / "out", device="cpu")
    assert report.format == fmt and report.layers_converted == len(truth) and not report.skipped
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    for prefix, t in truth.items():
        n, k = t.codes.shape
        codes = t.codes
        if f"{prefix}.perm" in out:
            perm = np.argsort(t.g_idx, kind="stable")
            np.testing.assert_array_equal(out[f"{prefix}.perm"].numpy(), perm)
            codes = codes[:, perm]
        else:
            np.testing.assert_array_equal(t.g_idx, np.arange(k) // (k if t.group_size == -1 else t.group_size))
        np.testing.assert_array_equal(out[f"{prefix}.B"].numpy(), seed_pack(np.ascontiguousarray(codes)), err_msg=prefix)
        w = _marlin_weight(out, prefix, n, k, t.group_size)
        assert np.array_equal(w.view(np.int32), t.weight.view(np.int32)), f"{prefix}: dequantized weights differ"
    assert_verified_and_restored(src, tmp_path, before)


def test_actorder_fixture_really_has_act_order():
    g_idx = load_file(str(FIXTURES / "gptqmodel_actorder" / "model.safetensors"))
    ks = [v for n, v in g_idx.items() if n.endswith(".g_idx")]
    assert any(not torch.equal(v, torch.sort(v).values) for v in ks)
