"""Malformed configs and tensor names: one line naming the file, exit 2, never an internal error or a
hang; config regexes run in linear time (issue 11, items 4 and 13). Run through the real console script."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests._support.checkpoints import make_gptq_checkpoint

EXE = str(Path(sys.executable).with_name("marlin-convert"))
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "producers"
GROUP_SIZES = ["128", None, [128], {"a": 1}, 128.0, True]
"""The first runs through the console script, the others through the CLI in process (same `main`)."""


def _console(*args: object, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _fails_cleanly(r: subprocess.CompletedProcess, *words: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    for word in words:
        assert word in lines[0], r.stderr
    return lines[0]


def _fixture(tmp_path: Path, name: str, edit) -> Path:
    src = tmp_path / name
    shutil.copytree(FIXTURES / name, src)
    config = json.loads((src / "config.json").read_text())
    edit(config)
    (src / "config.json").write_text(json.dumps(config))
    return src


def _ct_group(config: dict) -> dict:
    return config["quantization_config"]["config_groups"]["group_0"]


@pytest.mark.parametrize("group_size", GROUP_SIZES, ids=repr)
@pytest.mark.parametrize("fixture, edit", [
    ("gptqmodel_sym", lambda c, v: c["quantization_config"].update(group_size=v)),
    ("autoawq_gemm", lambda c, v: c["quantization_config"].update(group_size=v)),
    ("ct_asym", lambda c, v: _ct_group(c)["weights"].update(group_size=v)),
    ("autoround_gptq_sym", lambda c, v: c["quantization_config"].update(group_size=v)),
], ids=["gptq", "awq", "compressed_tensors", "auto_round"])
def test_group_size_of_the_wrong_type(cli, tmp_path, fixture, edit, group_size):
    src = _fixture(tmp_path, fixture, lambda c: edit(c, group_size))
    if group_size == GROUP_SIZES[0]:
        _fails_cleanly(_console("inspect", src), "config.json", "group_size", "not an integer")
    else:
        r = cli("inspect", src)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "internal error" not in r.err, r.err
        assert "config.json" in r.err and "group_size" in r.err and "not an integer" in r.err, r.err


@pytest.mark.parametrize("targets, words", [
    (["re:("], ["regex '('", "not valid"]),
    (["re:(a)\\1"], ["backreference"]),
    ("Linear", ["must be a list of strings"]),
    (5, ["must be a list of strings"]),
    ([5], ["must be a list of strings"]),
], ids=["invalid re", "backreference", "string", "int", "list of int"])
def test_compressed_tensors_bad_targets(tmp_path, targets, words):
    src = _fixture(tmp_path, "ct_asym", lambda c: _ct_group(c).update(targets=targets))
    _fails_cleanly(_console("inspect", src), "config.json", "config_groups.group_0", *words)


def test_unsupported_regex_in_gptq_dynamic_and_autoround_extra_config(tmp_path):
    src = _fixture(tmp_path, "gptqmodel_sym", lambda c: c["quantization_config"].update(dynamic={"-:(?=x)y": {}}))
    _fails_cleanly(_console("inspect", src), "config.json", "GPTQ dynamic rule", "(?=x)y", "lookahead")
    src = _fixture(tmp_path, "autoround_gptq_sym",
                   lambda c: c["quantization_config"].update(extra_config={"(mlp)\\1": {"bits": 8}}))
    _fails_cleanly(_console("inspect", src), "config.json", "extra_config", "backreference")


@pytest.mark.parametrize("value", [-256, 0, "256", True])
def test_quanto_bad_hidden_size(tmp_path, value):
    src = _fixture(tmp_path, "quanto_qint4_fp16", lambda c: (c.update(hidden_size=value), c.pop("head_dim", None)))
    _fails_cleanly(_console("pack", src, "-o", tmp_path / "out"), "config.json", "hidden_size", "positive integer")
    assert not (tmp_path / "out").exists()


def _rename_in_shard(shard: Path, old: str, new_json: str) -> None:
    """Rename tensor `old` to the raw JSON string `new_json` (escapes kept as written) in the header."""
    raw = shard.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = raw[8 : 8 + n].decode().replace(json.dumps(old), new_json, 1).encode()
    header += b" " * (-len(header) % 8)
    shard.write_bytes(struct.pack("<Q", len(header)) + header + raw[8 + n :])


@pytest.fixture(scope="module")
def gptq_src(tmp_path_factory):
    src = tmp_path_factory.mktemp("names") / "src"
    make_gptq_checkpoint(src)
    return src


@pytest.mark.parametrize("name_json, shown", [
    (r'"lm\nhead.weight"', r"lm\nhead.weight"),
    (r'"lm\u001b[31mhead.weight"', r"lm\x1b[31mhead.weight"),
], ids=["newline", "escape"])
def test_odd_tensor_names_are_printed_escaped_on_one_line(tmp_path, gptq_src, name_json, shown):
    src = tmp_path / "src"
    shutil.copytree(gptq_src, src)
    _rename_in_shard(src / "model.safetensors", "lm_head.weight", name_json)
    assert _console("inspect", src).returncode == 0  # a valid safetensors name: read as is
    listed = _console("inspect", src, "--all")
    assert listed.returncode == 0 and shown in listed.stdout and "\x1b" not in listed.stdout  # one escaped row
    assert not any(line.strip().startswith("head.weight") for line in listed.stdout.splitlines())
    index = {"metadata": {}, "weight_map": {"ghost" + json.loads(name_json): "model.safetensors"}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    line = _fails_cleanly(_console("inspect", src), "ghost" + shown)
    assert "\x1b" not in line


def test_lone_surrogate_tensor_name_is_refused_on_one_line(tmp_path, gptq_src):
    src = tmp_path / "src"
    shutil.copytree(gptq_src, src)
    _rename_in_shard(src / "model.safetensors", "lm_head.weight", r'"lm\ud800head.weight"')
    _fails_cleanly(_console("inspect", src), "model.safetensors", "lone surrogate")


def test_exponential_regex_on_a_41_character_name_is_fast_and_right(tmp_path, gptq_src):
    """`(a|aa)+$` takes Python's `re` many seconds on 40 a's and a b; the rule must not apply (no match)."""
    src = tmp_path / "src"
    shutil.copytree(gptq_src, src)
    name = "a" * 40 + "b"
    for role in ("qweight", "qzeros", "scales", "g_idx"):
        _rename_in_shard(src / "model.safetensors", f"model.layers.0.mlp.up_proj.{role}", json.dumps(f"{name}.{role}"))
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"]["dynamic"] = {"-:(a|aa)+$": {}, "-:(a|aa)+b$": {"bits": 8}}
    (src / "config.json").write_text(json.dumps(config))
    r = _console("inspect", src, "--json", timeout=20)
    assert r.returncode == 0, r.stderr
    layers = {layer["prefix"]: layer for layer in json.loads(r.stdout)["layers"]}
    assert layers[name]["eligible"] is False and "(a|aa)+b$" in layers[name]["reason"]


@pytest.mark.parametrize("call", [
    "from marlin_convert.formats.gptq import dynamic_override as f; "
    "assert f({'dynamic': {'-:(a|aa)+$': {}}}, NAME) == {}",
    "from marlin_convert.formats.compressed_tensors import _match_group as f; "
    "assert f(NAME, {'g': {'targets': ['re:(a|aa)+$']}}) is None",
    "from marlin_convert.formats.autoround import _layer_schemes as f; "
    "assert f({'extra_config': {'(a|aa)+$': {'bits': 8}}}, [NAME], set())[NAME]['bits'] is None",
], ids=["gptq dynamic", "compressed-tensors target", "auto-round extra_config"])
def test_each_config_regex_site_is_linear(call):
    code = f"NAME = 'a' * 60 + 'b'\n{call}"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20)
