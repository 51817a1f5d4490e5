"""Issue 11, property: mutate the manifest, index and config of a real output (a producer's checkpoint
packed by us) and run unpack, verify and inspect on it. Never a traceback; never a file written outside
BACK; and when verify passes, the output really is what the source was: unpack gives back the source's
tensors (checked with the official safetensors library against the untouched source).

In process with the shared CLI runner (fast), plus subprocess cases through the console script."""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from marlin_convert.checkpoint import MANIFEST_NAME, dump_manifest
from tests._support.checkpoints import make_gptq_checkpoint
from tests._support.cli import run_cli, run_console
from tests._support.files import tree_hashes

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "producers" / "autoround_gptq_sym"
PROPERTY = settings(max_examples=24, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
EVIL = ["../x.safetensors", "/etc/hostname", "", None, 0, -1, 2**64, [], {}, "a\\b", "x/../../y", True,
        "model.safetensors", "config.json", "marlin_convert_source/../../z", "\0", "É" * 300, 1.5]


def _tensor_digests(root: Path) -> dict[str, str]:
    """sha256 of every tensor's bytes in a checkpoint, read with the official safetensors library."""
    out = {}
    for shard in sorted(root.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                out[name] = hashlib.sha256(t.contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def outputs():
    """(source, output) pairs: a producer's one-shard checkpoint, and a sharded one (its output has an index)."""
    base = Path(tempfile.mkdtemp())
    make_gptq_checkpoint(base / "sharded_src", shards=3)
    pairs = {}
    for name, src in (("producer", FIXTURE), ("sharded", base / "sharded_src")):
        res = run_cli("pack", src, "-o", base / name, "--device", "cpu")
        assert res.code == 0, res.err
        pairs[name] = (src, base / name, _tensor_digests(src))
    yield pairs
    shutil.rmtree(base, ignore_errors=True)


def _mutate_json(data, draw):
    """One random change somewhere in a JSON tree: a value replaced, a key removed, renamed or added."""
    node, key = None, None
    cur = data
    while isinstance(cur, (dict, list)) and cur and draw(st.booleans()):
        keys = list(cur) if isinstance(cur, dict) else list(range(len(cur)))
        key = keys[draw(st.integers(0, len(keys) - 1))]
        node, cur = cur, cur[key]
    if node is None:  # the top level itself
        node, key = data, draw(st.sampled_from(sorted(data)))
    op = draw(st.sampled_from(["replace", "remove", "rename", "add"]))
    value = draw(st.sampled_from(EVIL))
    if isinstance(node, list):
        if op == "remove":
            node.pop(key)
        elif op == "add":
            node.append(value)
        else:
            node[key] = value
    elif op == "remove":
        node.pop(key)
    elif op == "rename":
        new = draw(st.sampled_from([e for e in EVIL if isinstance(e, str)]))
        node[new] = node.pop(key)
    elif op == "add":
        node[draw(st.sampled_from(["zzz", "../k", "sha256"]))] = value
    else:
        node[key] = value


@PROPERTY
@given(which=st.sampled_from(["producer", "sharded"]),
       target=st.sampled_from(["manifest rehashed", "manifest rehashed", "manifest as is", "config", "index"]),
       data=st.data())
def test_mutated_output(outputs, which, target, data):
    src, pristine, source_digests = outputs[which]
    work = Path(tempfile.mkdtemp())
    try:
        (work / "victim").mkdir()
        (work / "victim" / "existing.txt").write_text("keep me")
        out = work / "out"
        shutil.copytree(pristine, out)
        name = {"config": "config.json", "index": "model.safetensors.index.json"}.get(target, MANIFEST_NAME)
        path = out / name
        if not path.exists():
            name, path = MANIFEST_NAME, out / MANIFEST_NAME
        doc = json.loads(path.read_text())
        _mutate_json(doc, data.draw)
        if target == "manifest rehashed":
            text = dump_manifest(doc) if isinstance(doc, dict) else json.dumps(doc)
        else:
            text = json.dumps(doc, indent=1)
        path.write_text(text)
        outside = {k: v for k, v in tree_hashes(work).items() if not k.startswith("back")}
        back = work / "back" / "inner"
        (work / "back").mkdir()
        results = {cmd: run_cli(*args) for cmd, args in (("verify", ("verify", out)), ("inspect", ("inspect", out)),
                                                         ("unpack", ("unpack", out, "-o", back)))}
        for cmd, res in results.items():
            assert "Traceback" not in res.err and "internal error" not in res.err, (cmd, res.err)
            assert res.code in (0, 1, 2), (cmd, res.code, res.err)
            if res.code == 2 or (res.code == 1 and cmd != "verify"):  # verify's exit 1 is its table on stdout
                assert len(res.err.strip().splitlines()) == 1, (cmd, res.err)
        after = {k: v for k, v in tree_hashes(work).items() if not k.startswith("back")}
        assert after == outside, "a file outside BACK was written"
        if target == "manifest as is" and text != (pristine / MANIFEST_NAME).read_text():
            assert results["verify"].code != 0, "verify passed a manifest that is not what pack wrote"
        if results["verify"].code == 0:  # then the output must really restore the source's tensors
            assert results["unpack"].code == 0, results["unpack"].err
            assert _tensor_digests(back) == source_digests
        if results["unpack"].code != 0:
            assert not back.exists()
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("edit", [
    lambda m: m["files"].append("../../victim/existing.txt"),
    lambda m: m["source_shards"].update({"/tmp/PWNED-marlin-convert.safetensors": m["source_shards"].popitem()[1]}),
    lambda m: m.pop("warnings"),
])
def test_mutated_manifest_through_the_console_script(tmp_path, edit):
    out = tmp_path / "out"
    assert run_cli("pack", FIXTURE, "-o", out, "--device", "cpu").code == 0
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "existing.txt").write_text("keep me")
    data = json.loads((out / MANIFEST_NAME).read_text())
    edit(data)
    (out / MANIFEST_NAME).write_text(dump_manifest(data))
    for args in (("verify", out), ("unpack", out, "-o", tmp_path / "back"), ("inspect", out)):
        res = run_console(*args)
        assert res.returncode == 2 and res.stderr.startswith("error:") and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "back").exists() and not Path("/tmp/PWNED-marlin-convert.safetensors").exists()
    assert (tmp_path / "victim" / "existing.txt").read_text() == "keep me"
