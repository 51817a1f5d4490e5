"""Issue 11 item 13 (CLI edges): a full disk names the file being written; a reader that stops early
(`inspect | head -1`) ends the command quietly with exit 0."""
from __future__ import annotations

import json
import resource
import shutil
import subprocess
from pathlib import Path

import pytest

from tests._support.cli import run_console

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "producers" / "autoround_gptq_sym"
LIMIT = 600_000  # bytes: above the fixture's shard (about 300 kB), below the big file each test adds


def _file_size_limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))  # the CLI ignores SIGXFSZ: writes fail with EFBIG


@pytest.mark.parametrize("big", ["big_vocab.txt", "config.json"])
def test_a_full_disk_names_the_file(tmp_path, big):
    src = tmp_path / "src"
    shutil.copytree(FIXTURE, src)
    if big == "config.json":
        config = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps({**config, "padding": "x" * 2 * LIMIT}))
    else:
        (src / big).write_bytes(b"\0" * 2 * LIMIT)
    res = run_console("pack", src, "-o", tmp_path / "out", "--device", "cpu", preexec_fn=_file_size_limit)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error: ") and "too large" in line.lower(), line
    written = line[len("error: "):].split(" ", 1)[0].rstrip(":")  # the file named first: the one being written
    assert ".out.marlin-convert-tmp-" in written and written.endswith(f"/{big}"), line
    assert [p.name for p in tmp_path.iterdir()] == ["src"]


@pytest.mark.parametrize("args", [["inspect"], ["inspect", "--all"], ["inspect", "--json"]])
def test_reader_gone_exits_quietly(args):
    """`marlin-convert inspect X | head -1`: stdout is closed before the command writes."""
    exe = run_console.__globals__["sys"].executable  # the venv's python: the console script sits beside it
    script = str(Path(exe).parent / "marlin-convert")
    proc = subprocess.Popen([script, *args, str(FIXTURE)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0 and err == "", err


def test_pipe_into_head_through_a_shell(tmp_path):
    script = Path(run_console.__globals__["sys"].executable).parent / "marlin-convert"
    res = subprocess.run(["bash", "-c", f"set -o pipefail; '{script}' inspect --all '{FIXTURE}' | head -1"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stderr == "" and len(res.stdout.splitlines()) == 1, res.stderr
