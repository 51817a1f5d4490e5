"""Fuzzing and bit-flip properties (issue #6).

Every mutated input either packs into a checkpoint that verifies, or fails with exit 2, one line, no
traceback and no output. Every single-bit flip in an output tensor or in the manifest fails verify.
CI runs a short bounded number of examples; for a longer local run:

    MARLIN_FUZZ_EXAMPLES=2000 python -m pytest -q tests/test_fuzz.py
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import astuple
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marlin_convert.checkpoint import MANIFEST_NAME, TMP_MARKER, read_header
from tests._support.checkpoints import make_gptq_checkpoint
from tests._support.cli import run_cli

EXAMPLES = int(os.environ.get("MARLIN_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)


@pytest.fixture(scope="module")
def pristine():
    root = Path(tempfile.mkdtemp()) / "src"
    make_gptq_checkpoint(root, sym=False, act_order=True, group_size=64, bias=True)
    yield root
    shutil.rmtree(root.parent, ignore_errors=True)


mutation = st.one_of(
    st.tuples(st.just("header"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("data"), st.integers(0, 10**9), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**9), st.just(0)),
    st.tuples(st.just("config"), st.integers(0, 10**4), st.integers(32, 126)),
)


@FUZZ
@given(mutations=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_input_packs_and_verifies_or_fails_cleanly(pristine, mutations):
    work = Path(tempfile.mkdtemp())
    try:
        src = work / "src"
        shutil.copytree(pristine, src)
        shard = src / "model.safetensors"
        for kind, pos, value in mutations:
            if kind == "config":
                data = bytearray((src / "config.json").read_bytes())
                data[pos % len(data)] = value
                (src / "config.json").write_bytes(bytes(data))
                continue
            data = bytearray(shard.read_bytes())
            header_end = 8 + int.from_bytes(data[:8], "little") if len(data) >= 8 else len(data)
            if kind == "truncate":
                data = data[: pos % max(len(data), 1)]
            elif not data:
                continue
            elif kind == "header":
                data[pos % min(header_end, len(data))] = value
            elif len(data) > header_end:
                data[header_end + pos % (len(data) - header_end)] = value
            shard.write_bytes(bytes(data))
        code, _, err = astuple(run_cli("pack", src, "-o", work / "out"))
        assert "Traceback" not in err and "internal error" not in err, err
        if code == 0:
            vcode, vout, verr = astuple(run_cli("verify", src, work / "out"))
            assert vcode == 0, vout + verr
        else:
            assert code == 2, err
            assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
            assert not (work / "out").exists()
            assert not [p for p in work.iterdir() if TMP_MARKER in p.name]
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def packed(pristine):
    out = pristine.parent / "packed"
    assert run_cli("pack", pristine, "-o", out).code == 0
    return out


def _targets(packed: Path) -> list[tuple[Path, int, int]]:
    """(file, first byte, end byte) of every output tensor's data, and of the whole manifest."""
    spans = [(packed / MANIFEST_NAME, 0, (packed / MANIFEST_NAME).stat().st_size)]
    for shard in sorted(packed.glob("*.safetensors")):
        spans += [(shard, info.start, info.end) for info in read_header(shard).tensors.values() if info.end > info.start]
    return spans


@FUZZ
@given(choice=st.integers(0, 10**6), offset=st.integers(0, 10**9), bit=st.integers(0, 7), with_source=st.booleans())
def test_every_single_bit_flip_fails_verify(pristine, packed, choice, offset, bit, with_source):
    spans = _targets(packed)
    path, start, end = spans[choice % len(spans)]
    where = start + offset % (end - start)
    original = path.read_bytes()
    flipped = bytearray(original)
    flipped[where] ^= 1 << bit
    path.write_bytes(bytes(flipped))
    try:
        args = ("verify", pristine, packed) if with_source else ("verify", packed)
        code, out, err = astuple(run_cli(*args, "--json"))
        assert code == 1, f"flip at {path.name}:{where} bit {bit} not caught: {out}{err}"
        assert "Traceback" not in err
        if out:
            assert json.loads(out)["ok"] is False
    finally:
        path.write_bytes(original)


def test_a_non_utf8_byte_in_the_manifest_is_a_mismatch_not_bad_input(pristine, packed, tmp_path):
    """The first byte of the manifest flipped to 0xFB (not UTF-8): verify says the output was modified
    (exit 1), as for any other flip; only a manifest that is not a regular file is bad input (exit 2)."""
    out = tmp_path / "out"
    shutil.copytree(packed, out)
    path = out / "marlin_convert_manifest.json"
    raw = bytearray(path.read_bytes())
    raw[0] ^= 1 << 7
    path.write_bytes(bytes(raw))
    res = run_cli("verify", out)
    assert res.code == 1 and "manifest" in res.err, res.err
