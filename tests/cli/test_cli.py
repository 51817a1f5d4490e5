"""The command line end to end, and every bad input of issue #2 point 8."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests._support.files import tree_hashes
from tests._support.checkpoints import make_gptq_checkpoint


@pytest.fixture
def sharded(tmp_path):
    src = tmp_path / "src"
    make_gptq_checkpoint(src, shards=3, ineligible=True, sym=False, act_order=True, bias=True)
    return src


def test_end_to_end(cli, sharded, tmp_path):
    res = cli("inspect", sharded)
    assert res.code == 0 and "N=96 not a multiple of 64" in res.out
    res = cli("pack", sharded, "-o", tmp_path / "out")
    assert res.code == 0 and "layers converted" in res.out and "odd_proj" in res.out
    res = cli("verify", sharded, tmp_path / "out")
    assert res.code == 0 and "PASS" in res.out
    res = cli("verify", tmp_path / "out")
    assert res.code == 0
    res = cli("unpack", tmp_path / "out", "-o", tmp_path / "back")
    assert res.code == 0
    res = cli("verify", sharded, tmp_path / "out", "--json")
    assert json.loads(res.out)["ok"] is True


def test_json_reports(cli, sharded, tmp_path):
    res = cli("inspect", sharded, "--json")
    report = json.loads(res.out)
    odd = [t for t in report["tensors"] if t["layer"] == "model.layers.0.mlp.odd_proj"]
    assert odd and all(t["action"] == "copy" and "N=96" in t["reason"] for t in odd)
    res = cli("pack", sharded, "-o", tmp_path / "out", "--json")
    assert res.code == 0 and json.loads(res.out)["layers_converted"] == 8 and res.err == ""
    res = cli("unpack", tmp_path / "out", "-o", tmp_path / "back", "--json")
    assert res.code == 0 and json.loads(res.out)["layers_restored"] == 8


def test_version_and_help(cli):
    res = cli("--version")
    assert res.code == 0 and "marlin-convert" in res.out
    assert subprocess.run([sys.executable, "-m", "marlin_convert.cli", "--help"], capture_output=True).returncode == 0


def test_force_replaces_output(cli, sharded, tmp_path):
    out = tmp_path / "out"
    assert cli("pack", sharded, "-o", out).code == 0
    res = cli("pack", sharded, "-o", out)
    assert res.code == 2 and "--force" in res.err
    assert cli("pack", sharded, "-o", out, "--force").code == 0
    assert cli("verify", sharded, out).code == 0


def _flip_bit(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_flipped_bit_in_a_packed_tensor_fails_verify(cli, sharded, tmp_path):
    out = tmp_path / "out"
    cli("pack", sharded, "-o", out)
    from marlin_convert.checkpoint import read_header

    shard = sorted(out.glob("*.safetensors"))[0]
    info = next(i for i in read_header(shard).tensors.values() if i.name.endswith(".B"))
    _flip_bit(shard, info.start + (info.end - info.start) // 2)
    res = cli("verify", sharded, out)
    assert res.code == 1 and info.name in res.out
    res = cli("verify", out, "--json")
    assert res.code == 1 and info.name in res.out


def test_flipped_bit_in_a_copied_tensor_fails_verify(cli, sharded, tmp_path):
    out = tmp_path / "out"
    cli("pack", sharded, "-o", out)
    from marlin_convert.checkpoint import read_header

    for shard in sorted(out.glob("*.safetensors")):
        infos = [i for i in read_header(shard).tensors.values() if i.name.endswith("embed_tokens.weight")]
        if infos:
            _flip_bit(shard, infos[0].start + 3)
    res = cli("verify", sharded, out)
    assert res.code == 1 and "embed_tokens" in res.out


def test_unpack_refuses_a_corrupt_output(cli, sharded, tmp_path):
    out = tmp_path / "out"
    cli("pack", sharded, "-o", out)
    shard = sorted(out.glob("*.safetensors"))[0]
    _flip_bit(shard, shard.stat().st_size - 5)
    res = cli("unpack", out, "-o", tmp_path / "back")
    assert res.code == 1 and not (tmp_path / "back").exists()


# ------------------------------------------------------------------ bad input: exit 2, one line, nothing left


def _truncate(src):
    shard = sorted(src.glob("*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-100])
    return shard.name


def _corrupt_header(src):
    shard = sorted(src.glob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[10:14] = b"@@@@"
    shard.write_bytes(bytes(data))
    return shard.name


def _rewrite(src, edit):
    """Rewrite the checkpoint's tensors through `edit(dict)` with the official writer."""
    from safetensors.torch import load_file, save_file

    index = json.loads((src / "model.safetensors.index.json").read_text())
    for shard in sorted(src.glob("*.safetensors")):
        tensors = load_file(str(shard))
        edit(tensors)
        save_file(tensors, str(shard))
        index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard.name}
        index["weight_map"].update({k: shard.name for k in tensors})
    (src / "model.safetensors.index.json").write_text(json.dumps(index))


def _drop(suffix):
    def edit(tensors):
        for name in [n for n in tensors if n == f"model.layers.1.mlp.up_proj.{suffix}"]:
            del tensors[name]
    return lambda src: _rewrite(src, edit) or f"model.layers.1.mlp.up_proj.{suffix}"


def _wrong_dtype(src):
    import torch

    def edit(tensors):
        name = "model.layers.0.mlp.down_proj.scales"
        if name in tensors:
            tensors[name] = tensors[name].to(torch.float32)
    _rewrite(src, edit)
    return "model.layers.0.mlp.down_proj.scales"


def _wrong_shape(src):
    def edit(tensors):
        name = "model.layers.0.mlp.down_proj.scales"
        if name in tensors:
            tensors[name] = tensors[name][:1].contiguous()
    _rewrite(src, edit)
    return "model.layers.0.mlp.down_proj.scales"


def _config(edit):
    def apply(src):
        cfg = json.loads((src / "config.json").read_text())
        edit(cfg["quantization_config"])
        (src / "config.json").write_text(json.dumps(cfg))
        return "config" if "bits" not in edit.__name__ else "bits=8"
    return apply


def _unknown_method(qc):
    qc["quant_method"] = "bitsandbytes"


def _bits8(qc):
    qc["bits"] = 8


BAD_INPUTS = {
    "truncated shard": _truncate,
    "corrupt header": _corrupt_header,
    "missing scales": _drop("scales"),
    "missing qzeros": _drop("qzeros"),
    "wrong dtype": _wrong_dtype,
    "wrong shape": _wrong_shape,
    "unknown quant method": _config(_unknown_method),
    "non-4-bit": _config(_bits8),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(cli, sharded, tmp_path, case):
    expect = BAD_INPUTS[case](sharded)
    before = tree_hashes(sharded)
    out = tmp_path / "out"
    res = cli("pack", sharded, "-o", out)
    assert res.code == 2, res.err
    assert "Traceback" not in res.err and res.err.startswith("error:")
    assert len(res.err.strip().splitlines()) == 1, res.err
    if case in ("missing scales", "missing qzeros", "wrong dtype", "wrong shape"):
        assert expect in res.err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    assert tree_hashes(sharded) == before
    res = cli("inspect", sharded)
    assert res.code == 2 and "Traceback" not in res.err


def test_output_inside_input(cli, sharded):
    before = tree_hashes(sharded)
    res = cli("pack", sharded, "-o", sharded / "marlin")
    assert res.code == 2 and "inside the input" in res.err
    assert not (sharded / "marlin").exists() and tree_hashes(sharded) == before


def test_marlin_output_is_not_packed_twice(cli, sharded, tmp_path):
    cli("pack", sharded, "-o", tmp_path / "out")
    res = cli("pack", tmp_path / "out", "-o", tmp_path / "again")
    assert res.code == 2 and "unpack" in res.err


def test_strict_exits_3_when_nothing_is_eligible(cli, tmp_path):
    src = tmp_path / "src"
    make_gptq_checkpoint(src, sym=False)
    from safetensors.torch import load_file, save_file

    tensors = {k: v for k, v in load_file(str(src / "model.safetensors")).items() if ".layers." not in k or "norm" in k}
    save_file(tensors, str(src / "model.safetensors"))
    assert cli("pack", src, "-o", tmp_path / "out", "--strict").code == 3
    assert not (tmp_path / "out").exists()


def test_console_script_prints_no_traceback(tmp_path):
    exe = shutil.which("marlin-convert")
    if exe is None:
        pytest.skip("package not installed")
    res = subprocess.run([exe, "pack", str(tmp_path / "missing"), "-o", str(tmp_path / "o")], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 2 and "Traceback" not in res.stderr and "no such directory" in res.stderr
