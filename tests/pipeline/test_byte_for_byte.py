"""Issue 11 item 10: unpack restores FILES byte for byte (whole-file sha256 of every file of the tree), not
only tensors: for every producer fixture, and for a multi-shard checkpoint whose headers, index and config are
written by hand in ways no writer of ours would (key order unlike the data order, spaces, newlines, padding,
non-ASCII `__metadata__`, CRLF config)."""
from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from marlin_convert import pack_checkpoint, unpack_checkpoint, verify_checkpoint
from marlin_convert.checkpoint import dump_manifest
from tests._support.checkpoints import make_gptq_checkpoint
from tests._support.files import content_hashes, tree_hashes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "producers"
PRODUCERS = sorted(p.name for p in FIXTURES.iterdir() if (p / "config.json").is_file())
DTYPE_NAMES = {torch.int32: "I32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}


def _hand_written_shard(path: Path, tensors: dict[str, torch.Tensor], rng: random.Random) -> None:
    """A valid safetensors file laid out unlike any writer's: data in one shuffled order, header keys in
    another, `__metadata__` in the middle, spaces and newlines in the JSON, extra padding."""
    data_order = sorted(tensors)
    rng.shuffle(data_order)
    offsets, blobs, pos = {}, [], 0
    for name in data_order:
        blob = tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        offsets[name] = [pos, pos + len(blob)]
        blobs.append(blob)
        pos += len(blob)
    entries = [f'"{n}":  {{"dtype": "{DTYPE_NAMES[t.dtype]}", "shape": {list(t.shape)}, "data_offsets": {offsets[n]}}}'
               for n, t in tensors.items()]
    rng.shuffle(entries)
    entries.insert(len(entries) // 2, '"__metadata__": ' + json.dumps({"format": "pt", "note": "tést ☃"}, ensure_ascii=False))
    text = ("{\n  " + ",\n  ".join(entries) + "\n}").encode("utf-8")
    text += b" " * (-len(text) % 8 + 16)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def make_odd_multishard(root: Path, seed: int = 11) -> None:
    """The toy GPTQ model in 3 shards, each rewritten by hand; an index and config.json in unusual text,
    a quantize_config.json and README.md (set aside by pack) and a nested tokenizer file (copied)."""
    make_gptq_checkpoint(root, shards=3, sym=False, act_order=True, bias=True, seed=seed)
    rng = random.Random(seed)
    index = json.loads((root / "model.safetensors.index.json").read_text())
    for shard in sorted(set(index["weight_map"].values())):
        _hand_written_shard(root / shard, load_file(str(root / shard)), rng)
    index["metadata"]["producer"] = "by hand"
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=4, ensure_ascii=False) + "\n\n")
    config = json.loads((root / "config.json").read_text())
    (root / "config.json").write_bytes(json.dumps(config, indent="\t").replace("\n", "\r\n").encode() + b"\r\n")
    qc = {k: config["quantization_config"][k] for k in ("bits", "group_size", "desc_act", "sym")}
    (root / "quantize_config.json").write_text(json.dumps(qc))
    (root / "README.md").write_text("# a source card\n\nno trailing newline é")
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.txt").write_bytes(bytes(range(256)))


@pytest.mark.parametrize("fixture", PRODUCERS)
def test_every_producer_file_comes_back_byte_identical(tmp_path, fixture):
    src = FIXTURES / fixture
    before = tree_hashes(src)
    pack_checkpoint(src, tmp_path / "out", device="cpu")
    unpack_checkpoint(tmp_path / "out", tmp_path / "back")
    assert content_hashes(tmp_path / "back") == content_hashes(src)
    assert tree_hashes(src) == before


def test_hand_written_multishard_comes_back_byte_identical(tmp_path):
    src = tmp_path / "src"
    make_odd_multishard(src)
    before = tree_hashes(src)
    pack_checkpoint(src, tmp_path / "out", jobs=3)
    assert verify_checkpoint(tmp_path / "out", src).ok and verify_checkpoint(tmp_path / "out").ok
    unpack_checkpoint(tmp_path / "out", tmp_path / "back", jobs=3)
    assert content_hashes(tmp_path / "back") == content_hashes(src)
    assert tree_hashes(src) == before


@pytest.mark.parametrize("cached", [True, False], ids=["hashed-ahead", "hashed-from-the-read"])
def test_manifest_records_every_byte_of_each_source_file_once(tmp_path, monkeypatch, cached):
    """A shard: its exact header text, its size, and each tensor's sha256 in source_tensors, which together cover
    every byte of it (restated here from the safetensors layout: 8-byte length, JSON, data); any other file:
    sha256 of the whole file (the Hub's LFS oid). Layer tensors in the page cache are hashed by pack's pass
    ahead of the conversion, others from the conversion's read: the same digests."""
    import hashlib
    import struct

    from marlin_convert.checkpoint import Checkpoint

    if not cached:
        monkeypatch.setattr(Checkpoint, "is_cached", lambda self, name: False)
    src = tmp_path / "src"
    make_odd_multishard(src)
    pack_checkpoint(src, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "marlin_convert_manifest.json").read_text())
    assert manifest["version"] == 3
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    assert sorted(manifest["source_files"]) == files
    shards = [rel for rel in files if rel.endswith(".safetensors")]
    assert len(shards) >= 2 and set(shards) == set(manifest["source_shards"])
    for rel in files:
        data = (src / rel).read_bytes()
        record = manifest["source_files"][rel]
        assert record["size"] == len(data), rel
        if rel not in shards:
            assert record["sha256"] == hashlib.sha256(data).hexdigest(), rel
            continue
        assert "sha256" not in record, rel
        (n,) = struct.unpack("<Q", data[:8])
        assert record["header"].encode() == data[8 : 8 + n], rel
        covered = 8 + n
        for name, meta in json.loads(data[8 : 8 + n]).items():
            if name == "__metadata__":
                continue
            start, end = meta["data_offsets"]
            assert manifest["source_tensors"][name]["sha256"] == hashlib.sha256(data[8 + n + start : 8 + n + end]).hexdigest()
            covered += end - start
        assert covered == len(data), rel


def _console_script() -> str:
    return str(Path(sys.executable).with_name("marlin-convert"))


@pytest.mark.parametrize("which", ["hand-written", "quanto_qint4_bf16"])
def test_console_script_round_trip_is_byte_identical(tmp_path, which):
    src = tmp_path / "src"
    if which == "hand-written":
        make_odd_multishard(src)
    else:
        src = FIXTURES / which
    before = content_hashes(src)
    run = lambda *a: subprocess.run([_console_script(), *map(str, a)], capture_output=True, text=True)  # noqa: E731
    res = run("pack", src, "-o", tmp_path / "out", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    res = run("unpack", tmp_path / "out", "-o", tmp_path / "back")
    assert res.returncode == 0, res.stderr
    assert content_hashes(tmp_path / "back") == before


def test_unpack_refuses_a_restored_file_that_differs(cli, tmp_path):
    """A copied file changed in OUT would come back changed: unpack names it (exit 1) and writes nothing."""
    src = tmp_path / "src"
    make_odd_multishard(src)
    pack_checkpoint(src, tmp_path / "out")
    path = tmp_path / "out" / "tokenizer" / "vocab.txt"
    data = bytearray(path.read_bytes())
    data[100] ^= 0x10
    path.write_bytes(bytes(data))
    res = cli("unpack", tmp_path / "out", "-o", tmp_path / "back")
    assert res.code == 1 and "vocab.txt" in res.err, res.err
    assert not (tmp_path / "back").exists()


def test_version_1_manifest_is_refused_clearly(cli, tmp_path):
    pack_checkpoint(FIXTURES / "ct_sym", tmp_path / "out", device="cpu")
    path = tmp_path / "out" / "marlin_convert_manifest.json"
    manifest = json.loads(path.read_text())
    for key in ("source_files", "output_files"):
        del manifest[key]
    manifest["version"] = 1
    path.write_text(dump_manifest(manifest))
    for args in (("unpack", tmp_path / "out", "-o", tmp_path / "back"), ("verify", tmp_path / "out")):
        res = cli(*args)
        assert res.code == 2 and "manifest version 1" in res.err and "pack the source again" in res.err, res.err
    assert not (tmp_path / "back").exists()


def test_version_2_manifest_is_still_read(cli, tmp_path):
    """An output of the previous manifest version (source shards with a whole-file sha256) unpacks byte for
    byte and verifies, with and without the source."""
    import hashlib

    src = tmp_path / "src"
    make_odd_multishard(src)
    pack_checkpoint(src, tmp_path / "out")
    path = tmp_path / "out" / "marlin_convert_manifest.json"
    manifest = json.loads(path.read_text())
    for shard in manifest["source_shards"]:
        manifest["source_files"][shard]["sha256"] = hashlib.sha256((src / shard).read_bytes()).hexdigest()
    manifest["version"] = 2
    path.write_text(dump_manifest(manifest))
    for args in (("verify", tmp_path / "out"), ("verify", src, tmp_path / "out"), ("unpack", tmp_path / "out", "-o", tmp_path / "back")):
        res = cli(*args)
        assert res.code == 0, (args[0], res.out, res.err)
    assert content_hashes(tmp_path / "back") == content_hashes(src)


@pytest.mark.parametrize("field", ["source_files", "output_files"])
@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"])
def test_file_names_in_the_new_manifest_fields_must_stay_inside(cli, tmp_path, field, name):
    pack_checkpoint(FIXTURES / "ct_sym", tmp_path / "out", device="cpu")
    path = tmp_path / "out" / "marlin_convert_manifest.json"
    manifest = json.loads(path.read_text())
    manifest[field][name] = {"sha256": "0" * 64, "size": 1}
    path.write_text(dump_manifest(manifest))
    for args in (("unpack", tmp_path / "out", "-o", tmp_path / "back"), ("verify", tmp_path / "out")):
        res = cli(*args)
        assert res.code == 2 and "leaves the directory" in res.err, res.err
    assert not (tmp_path / "back").exists() and not (tmp_path / "evil.txt").exists()
