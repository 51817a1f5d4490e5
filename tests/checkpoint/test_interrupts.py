"""Interrupted runs (SIGINT, SIGKILL at random moments), disk-full and permission errors: never an
output at the final path unless it is complete; leftovers are clearly named and cleaned up."""
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from marlin_convert.checkpoint import TMP_MARKER
from tests._support.files import content_hashes, tree_hashes
from tests._support.seeds import stable_seed

CMD = [sys.executable, "-c", "from marlin_convert.cli import main; main()"]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A ~100 MB symmetric GPTQ checkpoint in 4 shards (random words: no ground truth needed here)."""
    root = tmp_path_factory.mktemp("big") / "src"
    root.mkdir()
    n, k, g = 4096, 4096, 32
    weight_map = {}
    gen = torch.Generator().manual_seed(0)
    for shard in range(4):
        tensors = {}
        for layer in range(3):
            p = f"model.layers.{shard * 3 + layer}.mlp.down_proj"
            tensors[f"{p}.qweight"] = torch.randint(-2**31, 2**31 - 1, (k // 8, n), dtype=torch.int32, generator=gen)
            tensors[f"{p}.qzeros"] = torch.full((g, n // 8), 0x77777777, dtype=torch.int32)
            tensors[f"{p}.scales"] = torch.rand(g, n, generator=gen).half()
        name = f"model-{shard + 1:05d}-of-00004.safetensors"
        save_file(tensors, str(root / name))
        weight_map.update(dict.fromkeys(tensors, name))
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    qc = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": False}
    (root / "config.json").write_text(json.dumps({"quantization_config": qc}))
    return root


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if TMP_MARKER in p.name]


def _start(*args, **kw):
    return subprocess.Popen([*CMD, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
@pytest.mark.parametrize("command", ["pack", "unpack"])
def test_interrupt_at_a_random_moment(tmp_path, big, sig, command):
    before = tree_hashes(big)
    src = big
    if command == "unpack":
        src = tmp_path / "packed"
        assert subprocess.run([*CMD, "pack", str(big), "-o", str(src)], capture_output=True).returncode == 0
    out = tmp_path / "out"
    proc = _start(command, src, "-o", out)
    deadline = time.monotonic() + 60
    while not _leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)  # wait until the run is writing its temporary output
    time.sleep(random.Random(stable_seed(sig, command)).uniform(0.0, 0.4))  # then strike at a moment of the work
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if out.exists():  # finished before the signal took effect: then it must be complete
        assert subprocess.run([*CMD, "verify", str(out if command == "pack" else src)], capture_output=True).returncode == 0
        if command == "unpack":  # a restored source is no marlin-convert output: --force rightly refuses to replace it
            assert content_hashes(out) == content_hashes(big)
            shutil.rmtree(out)
    else:
        assert proc.returncode != 0
        assert b"Traceback" not in err
        if sig != signal.SIGKILL:
            assert not _leftovers(tmp_path), "an interrupted run must clean up after itself"
            assert proc.returncode == 130 and b"interrupted: the output is complete or absent" in err, err
    res = subprocess.run([*CMD, command, str(src), "-o", str(out), "--force"], capture_output=True)
    assert res.returncode == 0, res.stderr
    assert not _leftovers(tmp_path), "the next run removes what a killed run left"
    assert tree_hashes(big) == before


def test_stale_temp_dir_is_clearly_named_and_removed(tmp_path, big):
    stale = tmp_path / f".out{TMP_MARKER}999999"  # a pid that does not run
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    res = subprocess.run([*CMD, "pack", str(big), "-o", str(tmp_path / "out")], capture_output=True)
    assert res.returncode == 0 and not stale.exists()


def _fsize_limit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 * 2**20, 4 * 2**20))


def test_disk_full_ends_cleanly(tmp_path, big):
    res = subprocess.run([*CMD, "pack", str(big), "-o", str(tmp_path / "out")], capture_output=True, text=True,
                         preexec_fn=_fsize_limit)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.startswith("error:") and "too large" in res.stderr.lower()
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_permission_error_ends_cleanly(cli, tmp_path, monkeypatch):
    from tests._support.checkpoints import make_gptq_checkpoint

    make_gptq_checkpoint(tmp_path / "src")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out"))

    monkeypatch.setattr(os, "rename", refuse)
    res = cli("pack", tmp_path / "src", "-o", tmp_path / "out")
    assert res.code == 2 and "Permission denied" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_ctrl_c_through_the_console_script(tmp_path, big):
    """Issue 9 item 5: the installed command prints the interrupted message, exits 130 and removes its temp dir."""
    exe = Path(sys.executable).parent / "marlin-convert"
    exe = str(exe) if exe.exists() else shutil.which("marlin-convert")
    assert exe, "the marlin-convert console script is not installed"
    out = tmp_path / "out"
    proc = subprocess.Popen([exe, "pack", str(big), "-o", str(out), "--jobs", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not _leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if out.exists():
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == 130, err
    assert b"interrupted: the output is complete or absent" in err and b"Traceback" not in err
    assert not _leftovers(tmp_path)
