"""Only regular files are read, JSON with a size cap and a depth limit, shapes by safetensors' rules (issue 11, item 3)."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors

from marlin_convert.checkpoint import read_header
from marlin_convert.checkpoint.json_file import MAX_JSON_DEPTH, read_json
from marlin_convert.errors import CheckpointError
from tests._support.checkpoints import make_gptq_checkpoint

EXE = str(Path(sys.executable).with_name("marlin-convert"))


def _console(*args: object, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real console script; a hang fails the test instead of the suite."""
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _one_clean_line(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code and len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    for word in words:
        assert word in lines[0], r.stderr


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    src = tmp_path_factory.mktemp("special") / "src"
    make_gptq_checkpoint(src, shards=2)
    return src


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "src"
    shutil.copytree(src, dst)
    return dst


def test_index_that_is_a_fifo_is_refused_without_hanging(sharded, tmp_path):
    src = _copy(sharded, tmp_path)
    os.remove(src / "model.safetensors.index.json")
    os.mkfifo(src / "model.safetensors.index.json")
    _one_clean_line(_console("inspect", src, timeout=30), 2, "model.safetensors.index.json", "not a regular file")


def test_safetensors_fifo_is_refused_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="not a regular file"):
        read_header(tmp_path / "x.safetensors")


def test_manifest_linked_to_dev_zero_is_refused(sharded, tmp_path):
    out = tmp_path / "out"
    assert _console("pack", sharded, "-o", out, "--device", "cpu").returncode == 0
    manifest = out / "marlin_convert_manifest.json"
    manifest.unlink()
    manifest.symlink_to("/dev/zero")
    for command in (("verify", out), ("unpack", out, "-o", tmp_path / "back")):
        r = _console(*command, timeout=60)
        _one_clean_line(r, 2, "marlin_convert_manifest.json", "not a regular file")  # bad input (issue 11 item 1)
    assert not (tmp_path / "back").exists()


def test_json_size_cap(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"pad": "x" * 100}))
    assert read_json(path, max_bytes=1000)["pad"] == "x" * 100
    with pytest.raises(CheckpointError, match="more than the 50 bytes"):
        read_json(path, max_bytes=50)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5000, 100_000])
def test_deeply_nested_config_is_one_line(sharded, tmp_path, depth):
    src = _copy(sharded, tmp_path)
    (src / "config.json").write_text('{"a": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}")
    _one_clean_line(_console("inspect", src), 2, "config.json", "nested more than 127 levels")


def test_nesting_up_to_the_limit_is_read(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    assert read_json(path) is not None


def test_empty_weight_map_is_one_line(sharded, tmp_path):
    src = _copy(sharded, tmp_path)
    (src / "model.safetensors.index.json").write_text('{"metadata": {}, "weight_map": {}}')
    for command in (("inspect", src), ("pack", src, "-o", tmp_path / "out")):
        _one_clean_line(_console(*command), 2, "model.safetensors.index.json", "weight_map is empty")
    assert not (tmp_path / "out").exists()


def _file(path: Path, header: dict, data: bytes = b"") -> bytes:
    body = json.dumps(header).encode()
    raw = struct.pack("<Q", len(body)) + body + data
    path.write_bytes(raw)
    return raw


@pytest.mark.parametrize("shape", [[2**64, 0], [2**40, 2**40, 0], [2**63, 2, 0], [2**61], [-1, 0], [0.0]])
def test_shapes_safetensors_refuses_are_refused(tmp_path, shape):
    raw = _file(tmp_path / "x.safetensors", {"t": {"dtype": "F64", "shape": shape, "data_offsets": [0, 0]}})
    with pytest.raises(safetensors.SafetensorError):
        safetensors.deserialize(raw)
    with pytest.raises(CheckpointError, match="x.safetensors"):
        read_header(tmp_path / "x.safetensors")


@pytest.mark.parametrize("shape", [[0, 2**40, 2**40], [2**64 - 1, 0], [2**62, 0, 2**62, 2**62], [0]])
def test_empty_shapes_safetensors_accepts_are_read(tmp_path, shape):
    raw = _file(tmp_path / "x.safetensors", {"t": {"dtype": "U8", "shape": shape, "data_offsets": [0, 0]}})
    assert [(n, t["shape"]) for n, t in safetensors.deserialize(raw)] == [("t", shape)]
    assert read_header(tmp_path / "x.safetensors").tensors["t"].shape == tuple(shape)


def test_huge_shape_through_the_cli(sharded, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(sharded / "config.json", src / "config.json")
    _file(src / "model.safetensors", {"t": {"dtype": "F16", "shape": [2**64, 0], "data_offsets": [0, 0]}})
    _one_clean_line(_console("inspect", src), 2, "model.safetensors", "tensor t")


def test_newer_safetensors_dtypes_are_copied_byte_for_byte(tmp_path):
    """F8_E8M0, F8_E4M3FNUZ and C64 (which the official reader accepts) are read and copied, not refused."""
    import torch
    from safetensors.torch import load_file, save_file

    from marlin_convert.pipeline import pack_checkpoint, unpack_checkpoint

    src = tmp_path / "src"
    make_gptq_checkpoint(src)
    tensors = load_file(str(src / "model.safetensors"))
    g = torch.Generator().manual_seed(11)
    raw = torch.randint(0, 255, (3, 8), generator=g, dtype=torch.uint8)
    tensors["extra.e8m0"] = raw[0].view(torch.float8_e8m0fnu)
    tensors["extra.fnuz"] = raw[1].view(torch.float8_e4m3fnuz)
    tensors["extra.c64"] = raw[2].view(torch.complex64)
    save_file(tensors, str(src / "model.safetensors"))
    pack_checkpoint(src, tmp_path / "out", device="cpu")
    unpack_checkpoint(tmp_path / "out", tmp_path / "back")
    restored = dict(safetensors.deserialize((tmp_path / "back" / "model.safetensors").read_bytes()))
    for i, (name, dtype) in enumerate((("extra.e8m0", "F8_E8M0"), ("extra.fnuz", "F8_E4M3FNUZ"), ("extra.c64", "C64"))):
        assert restored[name]["dtype"] == dtype and bytes(restored[name]["data"]) == raw[i].numpy().tobytes()


def test_manifest_claiming_a_huge_copied_tensor_fails_verify_and_unpack(tmp_path):
    """A rehashed manifest that says a copied tensor is [2**40]: verify and unpack fail (exit 1) on the
    mismatch with the file, without trying to allocate it, and nothing is written."""
    from marlin_convert.checkpoint.manifest import dump_manifest

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "producers" / "gptqmodel_sym"
    out = tmp_path / "out"
    assert _console("pack", fixture, "-o", out, "--device", "cpu").returncode == 0
    path = out / "marlin_convert_manifest.json"
    manifest = json.loads(path.read_text())
    manifest["source_tensors"]["model.embed_tokens.weight"]["shape"] = [2**40]
    manifest["output_tensors"]["model.embed_tokens.weight"]["shape"] = [2**40]
    manifest.pop("sha256")
    path.write_text(dump_manifest(manifest))
    for command in (("verify", out), ("verify", fixture, out), ("unpack", out, "-o", tmp_path / "back")):
        r = _console(*command, timeout=120)
        _one_clean_line(r, 1, "model.embed_tokens.weight")
    assert not (tmp_path / "back").exists()
