"""Differential test of our safetensors reader against the official `safetensors` library (issue 11, item 12).

Hypothesis builds valid files and corrupts them (header length, JSON text and tokens, dtypes, shapes,
offsets, overlaps, gaps, trailing bytes, metadata, names). Whatever the library refuses, `read_header`
refuses with CheckpointError (exit 2 at the CLI); whatever it accepts, we read to the same names,
dtypes, shapes, bytes and metadata. Two deliberate exceptions, where we refuse what the library reads:
duplicate JSON keys (the library silently keeps the last one) and the sub-byte dtypes F4/F6_* (no torch
dtype to hold them). Derandomized so CI always runs the same examples.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marlin_convert.checkpoint.safetensors_file import read_bytes, read_header
from marlin_convert.dtypes import TORCH_DTYPES
from marlin_convert.errors import CheckpointError

EXAMPLES = int(os.environ.get("MARLIN_FUZZ_EXAMPLES", "400"))
DIFF = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
         "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}
"""Element sizes of the dtypes valid files are built from, restated from the safetensors format."""
ODD_DTYPES = ["F4", "F6_E2M3", "F6_E3M2", "F8_E4M3FNUZ", "F12", "f16", "", "I128"]
STRICTER_DTYPES = {"F4", "F6_E2M3", "F6_E3M2"}


@dataclass(frozen=True)
class Raw:
    """A JSON token written verbatim (NaN, -0, a lone surrogate escape, 1e400, ...)."""

    text: str


def dump(value: Any) -> str:
    """JSON text; a dict is given as a list of pairs (`Pairs`) so duplicate keys can be written."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{dump(k)}:{dump(v)}" for k, v in value.items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


@dataclass
class Pairs:
    items: list


names = st.one_of(st.text(alphabet="abc._0", min_size=1, max_size=6), st.sampled_from(["", "a\nb", "\x1b[0m", "é", "__x__"]))
tensor_specs = st.lists(
    st.tuples(names, st.sampled_from(sorted(SIZES)), st.lists(st.integers(0, 3), max_size=3)),
    max_size=4, unique_by=lambda t: t[0])
metadata = st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2))

odd_ints = st.sampled_from([-1, 2**64, 2**64 - 1, 2**63, 2**40, 7])
odd_tokens = st.sampled_from([Raw("NaN"), Raw("-0"), Raw("1e400"), Raw("1.0"), Raw('"\\ud800"'), Raw("null"), Raw("true"),
                              Raw("[" * 130 + "]" * 130), Raw("[" * 126 + "]" * 126), Raw('"\\ud83d\\ude00"'), Raw("-1")])
mutation = st.one_of(
    st.tuples(st.just("dtype"), st.integers(0, 3), st.sampled_from(ODD_DTYPES + sorted(SIZES))),
    st.tuples(st.just("shape dim"), st.integers(0, 3), st.one_of(odd_ints, odd_tokens)),
    st.tuples(st.just("shape"), st.integers(0, 3), st.sampled_from([[], [0], [2**64, 0], [2**40, 2**40, 0], [0, 2**40, 2**40], Raw('"2"')])),
    st.tuples(st.just("offset"), st.integers(0, 7), st.one_of(st.integers(-3, 3), odd_ints)),
    st.tuples(st.just("offsets"), st.integers(0, 3), st.sampled_from([[0], [0, 0, 0], Raw("null"), Raw("[1.0, 2]")])),
    st.tuples(st.just("extra key"), st.integers(0, 3), odd_tokens),
    st.tuples(st.just("duplicate"), st.integers(0, 3), st.just(None)),
    st.tuples(st.just("metadata"), st.just(0), st.sampled_from([Raw("[]"), Raw('{"a": 1}'), Raw('{"a": null}'), Raw("null"), Raw('{"a": "\\ud800"}')])),
    st.tuples(st.just("header length"), st.integers(-9, 9), st.just(None)),
    st.tuples(st.just("text byte"), st.integers(0, 10**6), st.sampled_from(list(b'{}[]",:0 \\x-.'))),
    st.tuples(st.just("trailing"), st.integers(-5, 5), st.just(None)),
    st.tuples(st.just("padding"), st.integers(0, 3), st.sampled_from([b" ", b"\0", b"\n", b"\t"])),
    st.tuples(st.just("prefix"), st.just(0), st.sampled_from([" ", "\ufeff", "\n"])),
)


def build(specs, meta, mutations, data_seed: int) -> bytes:
    """A safetensors file from `specs` (back to back, header keys in reverse order), then corrupted."""
    entries, offset = [], 0
    for name, dtype, shape in specs:
        nbytes = SIZES[dtype]
        for d in shape:
            nbytes *= d
        entries.append([name, {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}])
        offset += nbytes
    data = bytes((data_seed * 31 + 7 * i) % 256 for i in range(offset))
    pairs = [[name, Pairs([list(kv) for kv in entry.items()])] for name, entry in reversed(entries)]
    if meta is not None:
        pairs.insert(0, ["__metadata__", Pairs([list(kv) for kv in meta.items()])])
    len_delta, trailing, pad, prefix, text_edits = 0, 0, b"", "", []
    for kind, pos, value in mutations:
        tensors = [p for p in pairs if p[0] != "__metadata__"]
        target = tensors[pos % len(tensors)][1].items if tensors else None
        field = {k: i for i, (k, _) in enumerate(target)} if target else {}
        if kind == "dtype" and target:
            target[field["dtype"]][1] = value
        elif kind == "shape dim" and target and isinstance(target[field["shape"]][1], list) and target[field["shape"]][1]:
            shape = target[field["shape"]][1]
            shape[pos % len(shape)] = value
        elif kind == "shape" and target:
            target[field["shape"]][1] = value
        elif kind == "offset" and target and isinstance(target[field["data_offsets"]][1], list) \
                and len(target[field["data_offsets"]][1]) == 2:
            offsets = list(target[field["data_offsets"]][1])
            offsets[pos % 2] = value if value >= 2**40 or value < 0 else offsets[pos % 2] + value
            target[field["data_offsets"]][1] = offsets
        elif kind == "offsets" and target:
            target[field["data_offsets"]][1] = value
        elif kind == "extra key" and target:
            target.append(["extra", value])
        elif kind == "duplicate" and pairs:
            pairs.append(list(pairs[pos % len(pairs)]))
        elif kind == "metadata":
            pairs = [p for p in pairs if p[0] != "__metadata__"] + [["__metadata__", value]]
        elif kind == "header length":
            len_delta = pos
        elif kind == "text byte":
            text_edits.append((pos, value))
        elif kind == "trailing":
            trailing = pos
        elif kind == "padding":
            pad = value * pos
        elif kind == "prefix":
            prefix = value
    text = bytearray((prefix + dump(Pairs(pairs))).encode("utf-8", "surrogatepass") + pad)
    for pos, byte in text_edits:
        text[pos % len(text)] = byte
    body = data[: len(data) + trailing] if trailing < 0 else data + b"\x01" * trailing
    return struct.pack("<Q", max(0, len(text) + len_delta)) + bytes(text) + body


def official(raw: bytes, path: Path) -> tuple[dict, dict | None] | None:
    """name -> (dtype, shape, bytes) and the metadata as the library reads them, or None when it refuses."""
    try:
        tensors = {name: (t["dtype"], list(t["shape"]), bytes(t["data"])) for name, t in safetensors.deserialize(raw)}
        with safetensors.safe_open(str(path), framework="numpy") as f:
            meta = f.metadata()
    except Exception:  # noqa: BLE001 - any refusal counts
        return None
    return tensors, meta


def ours(path: Path) -> tuple[dict, dict | None] | None:
    try:
        header = read_header(path)
        with open(path, "rb") as f:
            tensors = {name: (info.dtype, list(info.shape), bytes(read_bytes(f, info))) for name, info in header.tensors.items()}
    except CheckpointError:
        return None
    return tensors, header.metadata


def has_duplicate_keys(raw: bytes) -> bool:
    found = []

    def hook(items):
        keys = [k for k, _ in items]
        found.append(len(keys) != len(set(keys)))
        return dict(items)

    try:
        (n,) = struct.unpack("<Q", raw[:8])
        json.loads(raw[8 : 8 + n].decode("utf-8"), object_pairs_hook=hook)
    except Exception:  # noqa: BLE001
        return False
    return any(found)


@DIFF
@given(specs=tensor_specs, meta=metadata, mutations=st.lists(mutation, max_size=3), data_seed=st.integers(0, 255))
def test_reader_agrees_with_the_official_library(specs, meta, mutations, data_seed):
    raw = build(specs, meta, mutations, data_seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.safetensors"
        path.write_bytes(raw)
        theirs, mine = official(raw, path), ours(path)
    if theirs is None:
        assert mine is None, f"the library refuses this file, we read it: {raw[:300]!r}"
        return
    if mine is None:
        stricter = has_duplicate_keys(raw) or any(d in STRICTER_DTYPES or d not in TORCH_DTYPES for d, _, _ in theirs[0].values())
        assert stricter, f"the library reads this file, we refuse it: {raw[:300]!r}"
        return
    assert mine[0] == theirs[0]
    assert (mine[1] or None) == (theirs[1] or None)


def test_generator_makes_both_kinds():
    """The strategy reaches both accepted and refused files (else the test above would be vacuous)."""
    valid = build([("a", "F16", [2, 3]), ("b", "U8", [])], {"k": "v"}, [], 1)
    assert official(valid, _write(valid)) is not None
    corrupt = build([("a", "F16", [2, 3])], None, [("shape", 0, [2**64, 0])], 1)
    assert official(corrupt, _write(corrupt)) is None


def _write(raw: bytes) -> Path:
    path = Path(tempfile.mkdtemp()) / "x.safetensors"
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("mutation", [("metadata", 0, Raw('{"a": 1}')), ("shape dim", 0, Raw("-0")), ("extra key", 0, Raw("NaN"))])
def test_refused_files_exit_2_through_the_cli(cli, tmp_path, mutation):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text('{"quantization_config": {"quant_method": "gptq", "bits": 4}}')
    raw = build([("a", "F16", [2, 3])], None, [mutation], 1)
    (src / "model.safetensors").write_bytes(raw)
    assert official(raw, src / "model.safetensors") is None
    r = cli("inspect", src)
    assert r.code == 2 and "model.safetensors" in r.err and len(r.err.strip().splitlines()) == 1, r.err
