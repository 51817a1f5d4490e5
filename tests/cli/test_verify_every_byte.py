"""Issue 11 item 11: verify covers every byte of OUT. Seeded random bit flips in each output file that is not
tensor data (config.json, the index, each shard's header and its `__metadata__`, the model card, set-aside and
copied source files) make `verify OUT` exit 1 naming the file; a file pack did not write fails too, except the
Hub's `.gitattributes`, which verify names as not checked."""
from __future__ import annotations

import json
import random
import shutil
import struct
from pathlib import Path

import pytest

from marlin_convert import pack_checkpoint
from tests._support.seeds import stable_seed
from tests.pipeline.test_byte_for_byte import make_odd_multishard

FLIPS = 20


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("every-byte")
    make_odd_multishard(root / "src")
    pack_checkpoint(root / "src", root / "out")
    return root / "out"


def _header_range(path: Path, within_metadata: bool) -> range:
    """Byte offsets of a shard's header (length prefix included), or of its `__metadata__` value only."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    if not within_metadata:
        return range(0, 8 + n)
    text = raw[8 : 8 + n]
    start = text.index(b'"__metadata__"') + len(b'"__metadata__"')
    end = text.index(b"}", start) + 1
    return range(8 + start, 8 + end)


TARGETS = {
    "config.json": None,
    "model.safetensors.index.json": None,
    "README.md": None,
    "marlin_convert_source/README.md": None,
    "marlin_convert_source/quantize_config.json": None,
    "tokenizer/vocab.txt": None,
    "tokenizer_config.json": None,
    "model-00001-of-00003.safetensors": "header",
    "model-00003-of-00003.safetensors": "metadata",
}


@pytest.mark.parametrize("target", list(TARGETS))
def test_bit_flips_outside_tensor_data_fail_verify_naming_the_file(cli, packed, target):
    path = packed / target
    assert path.is_file(), sorted(p.name for p in packed.rglob("*"))
    original = path.read_bytes()
    where = range(len(original)) if TARGETS[target] is None else _header_range(path, TARGETS[target] == "metadata")
    rng = random.Random(stable_seed("verify-every-byte", target))
    try:
        for _ in range(FLIPS):
            offset, bit = rng.choice(where), rng.randrange(8)
            data = bytearray(original)
            data[offset] ^= 1 << bit
            path.write_bytes(bytes(data))
            res = cli("verify", packed, "--json")
            said = res.out + res.err
            assert res.code == 1, f"flip of bit {bit} at byte {offset} of {target} passed verify: {said[-500:]}"
            assert target in said, f"flip at byte {offset} of {target}: failure does not name the file: {said[-500:]}"
            assert "Traceback" not in said
    finally:
        path.write_bytes(original)
    assert cli("verify", packed).code == 0


def test_a_file_pack_did_not_write_fails_and_hub_files_are_named(cli, packed):
    extra = packed / "modeling_extra.py"
    extra.write_text("print('hi')\n")
    try:
        res = cli("verify", packed, "--json")
        assert res.code == 1 and "modeling_extra.py" in res.out and "not written by pack" in res.out
    finally:
        extra.unlink()
    hub = packed / ".gitattributes"
    hub.write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (packed / ".cache" / "huggingface").mkdir(parents=True)
    (packed / ".cache" / "huggingface" / "download.lock").write_text("")
    try:
        res = cli("verify", packed, "--json")
        assert res.code == 0, res.out + res.err
        checks = {c["name"]: c for c in json.loads(res.out)["checks"]}
        assert ".gitattributes" in checks["not checked"]["detail"] and ".cache/huggingface/" in checks["not checked"]["detail"]
    finally:
        hub.unlink()
        shutil.rmtree(packed / ".cache")


def test_verify_with_source_checks_every_source_file(cli, packed, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(packed.parent / "src", src)
    assert cli("verify", src, packed).code == 0
    with open(src / "config.json", "ab") as f:  # same JSON data, one more byte: not the file that was packed
        f.write(b" ")
    res = cli("verify", src, packed, "--json")
    assert res.code == 1 and "config.json" in res.out


def _tensor_ranges(path: Path) -> dict[str, range]:
    """Each tensor's bytes in a safetensors file (restated from the format: 8-byte length, JSON, data)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    return {name: range(8 + n + m["data_offsets"][0], 8 + n + m["data_offsets"][1])
            for name, m in header.items() if name != "__metadata__" and m["data_offsets"][1] > m["data_offsets"][0]}


@pytest.mark.parametrize("cached", [True, False], ids=["hashed-ahead", "hashed-from-the-read"])
def test_verify_with_source_names_any_source_tensor_whose_bytes_changed(cli, packed, tmp_path, monkeypatch, cached):
    """Since manifest version 3 a source shard has no whole-file sha256: each tensor's own (layer members and
    copied tensors alike) and the header bytes must catch a change anywhere in it, whether a layer tensor was
    hashed by the pass ahead (in the page cache) or from the layer check's own read."""
    from marlin_convert.checkpoint import Checkpoint

    if not cached:
        monkeypatch.setattr(Checkpoint, "is_cached", lambda self, name: False)
    src = tmp_path / "src"
    shutil.copytree(packed.parent / "src", src)
    shard = src / "model-00002-of-00003.safetensors"
    original = shard.read_bytes()
    ranges = _tensor_ranges(shard)
    assert any(".qweight" in n for n in ranges) and any("qweight" not in n and "scales" not in n for n in ranges)
    rng = random.Random(stable_seed("verify-source-tensors"))
    try:
        for name, where in ranges.items():
            data = bytearray(original)
            data[rng.choice(where)] ^= 1 << rng.randrange(8)
            shard.write_bytes(bytes(data))
            res = cli("verify", src, packed, "--json")
            said = res.out + res.err
            assert res.code == 1 and name in said and "Traceback" not in said, (name, said[-800:])
    finally:
        shard.write_bytes(original)
    for where in (_header_range(shard, within_metadata=True),):  # same tensors, another header
        data = bytearray(original)
        data[where[len(where) // 2]] ^= 0x01
        shard.write_bytes(bytes(data))
        res = cli("verify", src, packed, "--json")
        said = res.out + res.err
        assert res.code in (1, 2) and shard.name in said and "Traceback" not in said, said[-800:]
