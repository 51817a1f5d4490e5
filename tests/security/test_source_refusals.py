"""Issue 11 items 8 and 9: what pack cannot read is an error naming it; what it cannot round-trip is
refused up front (or, for an empty layer, kept as it is so that it does round-trip)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from marlin_convert.checkpoint import read_header
from tests._support.cli import run_console
from tests._support.empty_layer import write_empty_layer_checkpoint
from tests._support.files import tree_hashes

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "producers" / "autoround_gptq_sym"


def _reads_despite_permissions() -> bool:
    """True for root with its file-permission override (then chmod 000 proves nothing; run the file under
    `setpriv --inh-caps=-dac_override,-dac_read_search --bounding-set=-dac_override,-dac_read_search` to test it)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0)
        try:
            os.listdir(tmp)
            return True
        except PermissionError:
            return False
        finally:
            os.chmod(tmp, 0o700)


AS_ROOT = _reads_despite_permissions()


@pytest.fixture
def src(tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(FIXTURE, dst)
    return dst


def test_dangling_link_in_a_subfolder_is_an_error(cli, src, tmp_path):
    """A path nobody can read, root included: the test runs the same as root and as a user."""
    (src / "extra").mkdir()
    (src / "extra" / "vocab.txt").symlink_to(src / "extra" / "gone.txt")
    res = cli("pack", src, "-o", tmp_path / "out")
    assert res.code == 2 and "extra/vocab.txt" in res.err and "dangling" in res.err, res.err
    assert not (tmp_path / "out").exists()


def test_a_fifo_is_an_error_not_a_hang(cli, src, tmp_path):
    os.mkfifo(src / "pipe.json")
    res = cli("pack", src, "-o", tmp_path / "out")
    assert res.code == 2 and "pipe.json" in res.err and "not a regular file" in res.err, res.err


@pytest.mark.skipif(AS_ROOT, reason="root reads a chmod 000 folder anyway (the dangling-link test covers root)")
def test_unreadable_subfolder_is_an_error(src, tmp_path):
    sub = src / "private"
    sub.mkdir()
    (sub / "notes.txt").write_text("x")
    sub.chmod(0)
    try:
        res = run_console("pack", src, "-o", tmp_path / "out", "--device", "cpu")
    finally:
        sub.chmod(0o755)
    assert res.returncode == 2 and "private" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(AS_ROOT, reason="root reads a chmod 000 file anyway")
def test_unreadable_file_is_an_error(cli, src, tmp_path):
    (src / "tokenizer_config.json").chmod(0)
    try:
        res = cli("pack", src, "-o", tmp_path / "out")
    finally:
        (src / "tokenizer_config.json").chmod(0o644)
    assert res.code == 2 and "tokenizer_config.json" in res.err


def test_dangling_link_through_the_console_script(src, tmp_path):
    (src / "sub").mkdir()
    (src / "sub" / "merges.txt").symlink_to("missing-merges.txt")  # inside, but gone
    res = run_console("pack", src, "-o", tmp_path / "out", "--device", "cpu")
    assert res.returncode == 2 and "sub/merges.txt" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_shards_in_a_subfolder_are_refused_up_front(cli, src, tmp_path):
    tensors = read_header(src / "model.safetensors").tensors
    (src / "weights").mkdir()
    (src / "model.safetensors").rename(src / "weights" / "part.safetensors")
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
        t: "weights/part.safetensors" for t in tensors}}))
    before = tree_hashes(src)
    res = run_console("pack", src, "-o", tmp_path / "out", "--device", "cpu")
    assert res.returncode == 2 and "weights/part.safetensors" in res.stderr and "subfolder" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists() and tree_hashes(src) == before


@pytest.mark.parametrize("k,n", [(0, 64), (128, 0), (0, 0)])
def test_an_empty_layer_round_trips(cli, tmp_path, k, n):
    write_empty_layer_checkpoint(tmp_path / "src", k=k, n=n)
    res = cli("pack", tmp_path / "src", "-o", tmp_path / "out", "--device", "cpu")
    assert res.code == 0 and "empty layer" in res.out, res.out + res.err
    assert cli("verify", tmp_path / "src", tmp_path / "out").code == 0
    assert cli("unpack", tmp_path / "out", "-o", tmp_path / "back").code == 0
    restored = read_header(tmp_path / "back" / "model.safetensors").tensors
    original = read_header(tmp_path / "src" / "model.safetensors").tensors
    assert {t: (i.dtype, i.shape) for t, i in restored.items()} == {t: (i.dtype, i.shape) for t, i in original.items()}


def test_a_deeply_nested_folder_tree_is_one_line_not_a_crash(tmp_path):
    """Python's directory walk recurses: a tree ~1000 folders deep used to end in an internal RecursionError.
    Folders deeper than 32 are refused (200 here, so that the test's own cleanup stays within the stack)."""
    src = tmp_path / "src"
    shutil.copytree(FIXTURE, src)
    deep = src
    try:
        for _ in range(200):
            deep = deep / "d"
            deep.mkdir()
        (deep / "notes.txt").write_text("x")
        res = run_console("pack", src, "-o", tmp_path / "out", "--device", "cpu")
    finally:
        shutil.rmtree(src / "d")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "nested more than 32 deep" in lines[0] and "internal error" not in lines[0]
    assert not (tmp_path / "out").exists()
    shallow = src.joinpath(*["e"] * 10)  # a modest tree still packs
    shallow.mkdir(parents=True)
    (shallow / "notes.txt").write_text("y")
    assert run_console("pack", src, "-o", tmp_path / "out", "--device", "cpu").returncode == 0
    assert (tmp_path / "out" / "e").joinpath(*["e"] * 9, "notes.txt").read_text() == "y"
