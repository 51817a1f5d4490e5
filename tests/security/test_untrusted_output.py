"""Issue 11 part B: an output directory is untrusted input. Names from its manifest, index and config that
leave it, links that leave it, and manifests with missing or unknown keys are bad input (exit 2), and
nothing is written anywhere."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from marlin_convert.checkpoint import MANIFEST_NAME, dump_manifest
from tests._support.cli import run_console
from tests._support.files import tree_hashes

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "producers" / "autoround_gptq_sym"


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A real output (of a producer's checkpoint), made once; tests work on copies."""
    base = tmp_path_factory.mktemp("packed")
    src = base / "src"
    shutil.copytree(FIXTURE, src)
    (src / "README.md").write_text("# the source's card\n")
    res = run_console("pack", src, "-o", base / "out", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    return base / "out"


@pytest.fixture
def out(packed, tmp_path):
    dst = tmp_path / "work" / "out"
    shutil.copytree(packed, dst, symlinks=True)
    return dst


def rewrite_manifest(out: Path, edit) -> None:
    """Change the manifest and give it a matching sha256, as anyone can."""
    path = out / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(dump_manifest(data))


def _rename_key(d: dict, old: str, new: str) -> None:
    d[new] = d.pop(old)


def _first(d: dict) -> str:
    return next(iter(d))


def _escape_source_shard(target: str):
    def edit(m):
        old = _first(m["source_shards"])
        _rename_key(m["source_shards"], old, target)
    return edit


ESCAPES = {
    "source shard ..": _escape_source_shard("../victim/existing.txt"),
    "source shard absolute": lambda m: _escape_source_shard(str(Path(m["_tmp"]) / "PWNED.safetensors"))(m),
    "source shard in a folder": _escape_source_shard("sub/model.safetensors"),
    "source shard backslash": _escape_source_shard("..\\x.safetensors"),
    "file ..": lambda m: m["files"].append("../../secret.txt"),
    "file absolute": lambda m: m["files"].append("/etc/hostname"),
    "file with NUL": lambda m: m["files"].append("a\0b"),
    "file dot part": lambda m: m["files"].append("./x/../../secret.txt"),
    "set-aside key ..": lambda m: _rename_key(m["set_aside_files"], _first(m["set_aside_files"]), "../evil.md"),
    "set-aside stored_as ..": lambda m: m["set_aside_files"][_first(m["set_aside_files"])].update(stored_as="../../secret.txt"),
    "output shard ..": lambda m: _rename_key(m["output_shards"], _first(m["output_shards"]), "../x.safetensors"),
    "source index shard ..": lambda m: m.update(source_index={"metadata": {}, "weight_map": {
        t: "../x.safetensors" for t in m["source_tensors"]}}),
    "two files with one name": lambda m: m["files"].append(m["files"][0]),
    "file inside a shard's name": lambda m: m["files"].append(_first(m["source_shards"]) + "/x"),
}


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir(exist_ok=True)
    (victim / "existing.txt").write_text("keep me")
    (tmp_path / "secret.txt").write_text("secret")
    return victim


@pytest.mark.parametrize("case", list(ESCAPES))
def test_manifest_names_leaving_the_directory(cli, out, tmp_path, case):
    _victim(tmp_path)
    rewrite_manifest(out, lambda m: (m.__setitem__("_tmp", str(tmp_path)), ESCAPES[case](m), m.pop("_tmp")))
    before = tree_hashes(tmp_path)
    for args in (("unpack", out, "-o", tmp_path / "work" / "back"), ("verify", out), ("inspect", out)):
        res = cli(*args)
        assert res.code == 2, (args[0], res.code, res.out, res.err)
        assert "Traceback" not in res.err and "internal error" not in res.err and len(res.err.strip().splitlines()) == 1
        assert tree_hashes(tmp_path) == before, args[0]
    assert not (tmp_path / "PWNED.safetensors").exists()


def test_manifest_escape_through_the_console_script(out, tmp_path):
    victim = _victim(tmp_path)
    rewrite_manifest(out, _escape_source_shard("../victim/existing.txt"))
    res = run_console("unpack", out, "-o", tmp_path / "work" / "back")
    assert res.returncode == 2 and "source shard" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert (victim / "existing.txt").read_text() == "keep me" and not (tmp_path / "work" / "back").exists()
    res = run_console("verify", out)
    assert res.returncode == 2 and "PASS" not in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize("edit,word", [(lambda m: m.pop("files"), "missing key"),
                                       (lambda m: m.update(extra_key=1), "unknown key"),
                                       (lambda m: m.update(version=4), "version"),
                                       (lambda m: m["layers"][_first(m["layers"])].update(n="many"), "wrong type"),
                                       (lambda m: m["layers"][_first(m["layers"])]["sources"].update(qweight="ghost"), "sources"),
                                       (lambda m: m["source_tensors"].popitem(), "source_shards")])
def test_manifest_keys_missing_or_unknown(cli, out, tmp_path, edit, word):
    rewrite_manifest(out, edit)
    for args in (("unpack", out, "-o", tmp_path / "back"), ("verify", out), ("inspect", out)):
        res = cli(*args)
        assert res.code == 2 and word in res.err and "Traceback" not in res.err, (args[0], res.err)
        assert len(res.err.strip().splitlines()) == 1
    assert not (tmp_path / "back").exists()


@pytest.mark.parametrize("name", ["tokenizer_config.json", "config.json", MANIFEST_NAME, "model.safetensors",
                                  "marlin_convert_source/README.md"])
def test_links_out_of_the_output_are_refused(cli, out, tmp_path, name):
    outside = tmp_path / "shadow"
    shutil.copyfile(out / name, outside)  # same bytes: only the link itself is wrong
    (out / name).unlink()
    (out / name).symlink_to(outside)
    for args in (("unpack", out, "-o", tmp_path / "back"), ("verify", out), ("inspect", out)):
        res = cli(*args)
        assert res.code == 2 and "symbolic link" in res.err, (name, args[0], res.code, res.err)
    assert not (tmp_path / "back").exists()


def test_links_out_of_the_output_through_the_console_script(out, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0")
    (out / "tokenizer_config.json").unlink()
    (out / "tokenizer_config.json").symlink_to(secret)
    res = run_console("verify", out)
    assert res.returncode == 2 and "symbolic link" in res.stderr, res.stdout + res.stderr
    res = run_console("unpack", out, "-o", tmp_path / "back")
    assert res.returncode == 2 and not (tmp_path / "back").exists()


@pytest.mark.parametrize("name", ["config.json", "model.safetensors.index.json"])
def test_pack_refuses_a_linked_config_or_index(cli, tmp_path, name):
    src = tmp_path / "src"
    shutil.copytree(FIXTURE, src)
    outside = tmp_path / "elsewhere.json"
    if name == "config.json":
        shutil.copyfile(src / name, outside)
    else:
        from marlin_convert.checkpoint import read_header
        tensors = read_header(src / "model.safetensors").tensors
        (src / "model-00001-of-00001.safetensors").write_bytes((src / "model.safetensors").read_bytes())
        (src / "model.safetensors").unlink()
        outside.write_text(json.dumps({"metadata": {}, "weight_map": {t: "model-00001-of-00001.safetensors" for t in tensors}}))
    (src / name).unlink(missing_ok=True)
    (src / name).symlink_to(outside)
    res = cli("pack", src, "-o", tmp_path / "out")
    assert res.code == 2 and "symbolic link" in res.err, res.err
    assert not (tmp_path / "out").exists()
