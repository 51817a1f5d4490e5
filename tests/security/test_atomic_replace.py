"""Issue 11 items 6, 7 and the long name of 13: `--force` never leaves no output, stale temporary
directories are found by a lock and by their literal name, and a 250-character output name works."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from marlin_convert.checkpoint import TMP_MARKER
from tests._support.cli import run_console
from tests._support.files import tree_hashes

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "producers" / "autoround_gptq_sym"

CRASH_BETWEEN_RENAMES = """
import os, sys
from marlin_convert.checkpoint import atomic
from marlin_convert.pipeline import pack_checkpoint
atomic.exchange = lambda a, b: False          # an OS without renameat2(RENAME_EXCHANGE)
real_rename, calls = os.rename, []
def rename(a, b):
    calls.append(a)
    if len(calls) == 2:                        # the old output is aside, the new one not yet in place
        os._exit(9)                            # killed outright: no cleanup runs
    real_rename(a, b)
os.rename = rename
pack_checkpoint(sys.argv[1], sys.argv[2], force=True, device="cpu")
"""


@pytest.fixture(scope="module")
def old_output(tmp_path_factory):
    base = tmp_path_factory.mktemp("old")
    res = run_console("pack", FIXTURE, "-o", base / "out", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    return base / "out"


def _crash_while_replacing(tmp_path, old_output) -> Path:
    out = tmp_path / "out"
    shutil.copytree(old_output, out)
    (out / "note.txt").write_text("the old output")  # tells the old output from a new one
    res = subprocess.run([sys.executable, "-c", CRASH_BETWEEN_RENAMES, str(FIXTURE), str(out)], capture_output=True, text=True)
    assert res.returncode == 9, res.stderr
    assert not out.exists(), "the simulated crash must strike between the two renames"
    return out


def test_a_crash_between_the_renames_is_completed_by_the_next_run(tmp_path, old_output):
    out = _crash_while_replacing(tmp_path, old_output)
    before = tree_hashes(next(tmp_path.glob(".out.marlin-convert-old-*")))
    res = run_console("pack", FIXTURE, "-o", out, "--device", "cpu")  # no --force: the old output comes back first
    assert res.returncode == 2 and "already exists" in res.stderr, res.stderr
    assert tree_hashes(out) == before and (out / "note.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_force_after_a_crash_replaces_the_recovered_output(tmp_path, old_output):
    out = _crash_while_replacing(tmp_path, old_output)
    res = run_console("pack", FIXTURE, "-o", out, "--force", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert not (out / "note.txt").exists() and [p.name for p in tmp_path.iterdir()] == ["out"]
    assert run_console("verify", out).returncode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_force_swaps_in_one_step_on_linux(tmp_path):
    from marlin_convert.checkpoint.atomic import exchange

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    assert exchange(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b" / "x").read_text() == "a" and not (tmp_path / "a" / "x").exists()


def test_force_replaces_and_leaves_nothing(tmp_path, old_output):
    out = tmp_path / "out"
    shutil.copytree(old_output, out)
    (out / "note.txt").write_text("old")
    res = run_console("pack", FIXTURE, "-o", out, "--force", "--device", "cpu")
    assert res.returncode == 0 and not (out / "note.txt").exists(), res.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_locked_temp_dir_of_a_run_elsewhere_is_left_alone(tmp_path):
    """A live run in another PID namespace: its PID means nothing here, its lock does."""
    live = tmp_path / f".out{TMP_MARKER}999999"
    live.mkdir()
    (live / "model.safetensors").write_bytes(b"being written")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        res = run_console("pack", FIXTURE, "-o", tmp_path / "out", "--device", "cpu")
        assert res.returncode == 0, res.stderr
        assert (live / "model.safetensors").read_bytes() == b"being written"
    finally:
        os.close(fd)


def test_output_name_is_matched_literally(tmp_path):
    folder = tmp_path / "gl"
    folder.mkdir()
    other = folder / f".other{TMP_MARKER}999999"  # a stale temp dir of another output
    other.mkdir()
    res = run_console("pack", FIXTURE, "-o", folder / "*", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert other.exists() and (folder / "*").is_dir()


def test_an_output_name_of_250_characters(tmp_path):
    out = tmp_path / ("m" * 250)
    res = run_console("pack", FIXTURE, "-o", out, "--device", "cpu")
    assert res.returncode == 0, res.stderr
    res = run_console("unpack", out, "-o", tmp_path / ("b" * 250))
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b" * 250, "m" * 250]
    assert json.loads((tmp_path / ("b" * 250) / "config.json").read_text()) == json.loads((FIXTURE / "config.json").read_text())
