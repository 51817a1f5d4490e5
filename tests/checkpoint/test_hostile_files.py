"""Hostile safetensors files, indexes and configs: one clear line, exit 2, nothing written or read outside."""
import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from marlin_convert.checkpoint import read_header
from marlin_convert.errors import CheckpointError
from tests._support.files import tree_hashes
from tests._support.checkpoints import make_gptq_checkpoint


def _raw_file(path, header, data=b"", raw_header=None):
    body = raw_header if raw_header is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + data)
    return path


GOOD = {"a": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]}}

BAD_HEADERS = {
    "header length beyond the file": dict(raw=struct.pack("<Q", 10**6) + b"{}", match="runs past the end"),
    "header claiming gigabytes": dict(raw=struct.pack("<Q", 5 * 10**9) + b"{}", match="claims"),
    "too short for a length": dict(raw=b"\x01\x02", match="truncated"),
    "not JSON": dict(header=None, raw_header=b"{not json", match="corrupt"),
    "not an object": dict(header=None, raw_header=b"[1, 2]", match="not a JSON object"),
    "duplicate names": dict(header=None, raw_header=b'{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},'
                                                   b'"a":{"dtype":"F16","shape":[2],"data_offsets":[4,8]}}', data=b"\0" * 8, match="duplicate"),
    "offsets out of range": dict(header={"a": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 80]}}, data=b"\0" * 8, match="outside"),
    "overlapping ranges": dict(header={"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
                                       "b": {"dtype": "F16", "shape": [2], "data_offsets": [2, 6]}}, data=b"\0" * 6, match="overlaps"),
    "gap between ranges": dict(header={"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
                                       "b": {"dtype": "F16", "shape": [2], "data_offsets": [6, 10]}}, data=b"\0" * 10, match="gap"),
    "size disagrees with shape": dict(header={"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 8]}}, data=b"\0" * 8, match="needs 16"),
    "unknown dtype": dict(header={"a": {"dtype": "F12", "shape": [2], "data_offsets": [0, 3]}}, data=b"\0" * 3, match="unknown dtype"),
    "negative dimension": dict(header={"a": {"dtype": "F16", "shape": [-2], "data_offsets": [0, 0]}}, match="malformed shape"),
    "trailing bytes": dict(header=GOOD, data=b"\0" * 12, match="after the last tensor"),
    "metadata not strings": dict(header={"__metadata__": {"x": 1}, **GOOD}, data=b"\0" * 8, match="__metadata__"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_bad_safetensors_header(tmp_path, case):
    spec = BAD_HEADERS[case]
    path = tmp_path / "model.safetensors"
    if "raw" in spec:
        path.write_bytes(spec["raw"])
    else:
        _raw_file(path, spec.get("header"), spec.get("data", b""), spec.get("raw_header"))
    with pytest.raises(CheckpointError, match=spec["match"]) as err:
        read_header(path)
    assert str(path) in str(err.value)


def test_unsorted_but_contiguous_ranges_are_fine(tmp_path):
    header = {"b": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}, "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}
    infos = read_header(_raw_file(tmp_path / "x.safetensors", header, b"\0" * 8)).tensors
    assert list(infos) == ["a", "b"]


def test_bad_header_through_the_cli(cli, tmp_path):
    src = tmp_path / "src"
    make_gptq_checkpoint(src)
    _raw_file(src / "model.safetensors", {"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 40]}}, b"\0" * 4)
    res = cli("pack", src, "-o", tmp_path / "out")
    assert res.code == 2 and "model.safetensors" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ index and config


@pytest.fixture
def sharded(tmp_path):
    src = tmp_path / "src"
    make_gptq_checkpoint(src, shards=2)
    return src


def _edit_index(src, edit):
    path = src / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    edit(index["weight_map"])
    path.write_text(json.dumps(index))


def _escape(kind, tmp_path):
    outside = tmp_path / "outside.safetensors"
    save_file({"secret": torch.zeros(4)}, str(outside))

    def edit(src):
        first = sorted(src.glob("model-*.safetensors"))[0]
        if kind == "dotdot":
            _edit_index(src, lambda wm: wm.update({k: "../outside.safetensors" for k, v in wm.items() if v == first.name}))
        elif kind == "absolute":
            _edit_index(src, lambda wm: wm.update({k: str(outside) for k, v in wm.items() if v == first.name}))
        elif kind == "symlink":
            first.unlink()
            first.symlink_to(outside)
        elif kind == "other file symlink":
            (src / "tokenizer.json").symlink_to(tmp_path / "outside.safetensors")
    return edit


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "other file symlink"])
def test_paths_escaping_the_directory(cli, tmp_path, sharded, kind):
    _escape(kind, tmp_path)(sharded)
    before = tree_hashes(sharded)
    res = cli("pack", sharded, "-o", tmp_path / "out")
    assert res.code == 2 and ("outside" in res.err or "inside the checkpoint" in res.err), res.err
    assert not (tmp_path / "out").exists() and tree_hashes(sharded) == before


def test_tensor_listed_but_missing(cli, tmp_path, sharded):
    _edit_index(sharded, lambda wm: wm.update({"ghost.weight": sorted(set(wm.values()))[0]}))
    res = cli("pack", sharded, "-o", tmp_path / "out")
    assert res.code == 2 and "ghost.weight" in res.err and "missing" in res.err


def test_tensor_in_two_shards(cli, tmp_path, sharded):
    save_file({"model.norm.weight": torch.ones(256, dtype=torch.float16)}, str(sharded / "model-extra.safetensors"))
    _edit_index(sharded, lambda wm: wm.update({"zzz": "model-extra.safetensors"}))
    res = cli("pack", sharded, "-o", tmp_path / "out")
    assert res.code == 2 and "model.norm.weight" in res.err


def test_tensor_missing_from_index(cli, tmp_path, sharded):
    _edit_index(sharded, lambda wm: wm.pop("model.norm.weight"))
    res = cli("pack", sharded, "-o", tmp_path / "out")
    assert res.code == 2 and "model.norm.weight" in res.err and "not listed" in res.err


@pytest.mark.parametrize("content", ['{"model_type": "llama"}', "[1, 2]", "{broken"])
def test_config_without_a_format(cli, tmp_path, sharded, content):
    (sharded / "config.json").write_text(content)
    res = cli("pack", sharded, "-o", tmp_path / "out")
    assert res.code == 2 and "config.json" in res.err and "Traceback" not in res.err


def test_missing_config(cli, tmp_path, sharded):
    os.remove(sharded / "config.json")
    res = cli("inspect", sharded)
    assert res.code == 2 and "config.json" in res.err
