"""Issue 11 item 5: a source file named like one the output writes itself never overwrites it: it is set
aside in `marlin_convert_source/` and comes back, byte for byte, on unpack."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from marlin_convert.checkpoint import read_header
from tests._support.cli import run_console
from tests._support.files import tree_hashes

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "producers" / "autoround_gptq_sym"
USER_BYTES = b"the user's own file, not ours\n"


def _one_shard_index(src: Path) -> None:
    """The fixture's single file behind a one-shard index, so `model.safetensors` is free for a user file."""
    tensors = read_header(src / "model.safetensors").tensors
    (src / "model.safetensors").rename(src / "model-00001-of-00001.safetensors")
    index = {"metadata": {}, "weight_map": {t: "model-00001-of-00001.safetensors" for t in tensors}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


@pytest.mark.parametrize("name", ["model.safetensors", "marlin_convert_manifest.json", "config.json/inner.txt",
                                  "marlin_convert_source/quantization_config.json", "marlin_convert_source/x/y.txt",
                                  "README.md"])
def test_source_file_named_like_an_output_file(cli, tmp_path, name):
    src = tmp_path / "src"
    shutil.copytree(FIXTURE, src)
    if name == "model.safetensors":
        _one_shard_index(src)
    if name.startswith("config.json/"):  # a folder named like an output file cannot exist beside it in the
        name = "model.safetensors/inner.txt"  # source, but one named like the output's shard can
        _one_shard_index(src)
    (src / name).parent.mkdir(parents=True, exist_ok=True)
    (src / name).write_bytes(USER_BYTES)
    before = tree_hashes(src)
    res = cli("pack", src, "-o", tmp_path / "out", "--device", "cpu")
    assert res.code == 0, res.err
    assert cli("verify", tmp_path / "out").code == 0, "the output's own files must be intact"
    assert cli("verify", src, tmp_path / "out").code == 0
    res = cli("unpack", tmp_path / "out", "-o", tmp_path / "back")
    assert res.code == 0, res.err
    assert (tmp_path / "back" / name).read_bytes() == USER_BYTES
    assert tree_hashes(src) == before


def test_collision_through_the_console_script(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(FIXTURE, src)
    _one_shard_index(src)
    (src / "model.safetensors").write_bytes(USER_BYTES)
    res = run_console("pack", src, "-o", tmp_path / "out", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "marlin_convert_source" / "model.safetensors").read_bytes() == USER_BYTES
    assert run_console("verify", tmp_path / "out").returncode == 0
    assert run_console("unpack", tmp_path / "out", "-o", tmp_path / "back").returncode == 0
    assert (tmp_path / "back" / "model.safetensors").read_bytes() == USER_BYTES
