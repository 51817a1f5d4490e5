"""The `marlin_convert_manifest.json` file: its schema (built by pack, read by unpack, verify and inspect),
written as canonical JSON with a sha256 of its own content."""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ..dtypes import DTYPE_SIZES
from ..errors import CheckpointError, NotAnOutputError, VerifyMismatch
from .json_file import MAX_JSON_BYTES, parse_json, read_regular_file
from .links import outside_link_message, stays_inside

if TYPE_CHECKING:  # ownership (imported by source's imports) reads MANIFEST_NAME from here: no import cycle
    from .source import Checkpoint
    from .writer import ShardPlan

__all__ = ["MANIFEST_NAME", "MANIFEST_KIND", "MANIFEST_VERSION", "MANIFEST_KEYS", "check_manifest_version", "build_manifest",
           "check_manifest", "check_relative_name", "check_output_paths", "dump_manifest", "load_manifest", "open_output"]

MANIFEST_NAME = "marlin_convert_manifest.json"
MANIFEST_KIND = "marlin-convert-manifest"
MANIFEST_VERSION = 3
"""3: a source shard in `source_files` has no whole-file sha256 (its header text, size and tensors' sha256 prove
it: each source byte is hashed once). 2: `source_files` and `output_files` (whole files, see `file_records`).
Version 1 recorded tensors only."""
READ_VERSIONS = (2, 3)
"""Versions read: version 2's extra shard sha256 is not needed (not checked)."""


def _canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, indent=1, ensure_ascii=True) + "\n"


def dump_manifest(data: dict[str, Any]) -> str:
    """Canonical text of the manifest, with `sha256` = hash of the canonical text without it."""
    body = {k: v for k, v in data.items() if k != "sha256"}
    digest = hashlib.sha256(_canonical(body).encode()).hexdigest()
    return _canonical({**body, "sha256": digest})


def load_manifest(path: Path) -> dict[str, Any]:
    """Read and check a manifest: any change to its bytes raises VerifyMismatch; one that is not a regular
    file, or is too large to be a manifest, is bad input (CheckpointError)."""
    if not os.path.lexists(path):
        raise VerifyMismatch(f"{path}: missing (not a marlin-convert output?)")
    raw = read_regular_file(path, MAX_JSON_BYTES)  # a special or oversized file is bad input (CheckpointError)
    try:
        text = raw.decode("utf-8")
        data = parse_json(text, path)
    except UnicodeDecodeError as e:
        raise VerifyMismatch(f"{path}: corrupt manifest (not UTF-8: {e.reason} at byte {e.start})") from None
    except CheckpointError as e:
        raise VerifyMismatch(f"corrupt manifest: {e}") from None
    if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND:
        raise VerifyMismatch(f"{path}: not a marlin-convert manifest")
    if dump_manifest(data) != text or not isinstance(data.get("sha256"), str):
        raise VerifyMismatch(f"{path}: content does not match its sha256 (manifest modified or corrupt)")
    check_manifest_version(data, path)
    check_manifest(data, path)
    return data


def check_manifest_version(data: dict[str, Any], path: Path) -> None:
    """Versions 2 and 3 are read: a version 1 manifest (marlin-convert 0.1.0 before files were recorded) cannot
    give back the source files byte for byte, so it is refused (exit 2) with the way out, as is a newer one."""
    version = data.get("version")
    if type(version) is not int or version not in READ_VERSIONS:
        raise CheckpointError(f"{path}: manifest version {version!r} is not supported (this marlin-convert reads versions "
                              f"{READ_VERSIONS[0]}-{READ_VERSIONS[-1]}, which record whole files); pack the source again "
                              "with this version")


MANIFEST_KEYS = frozenset({
    "kind", "version", "tool_version", "source_format", "source_config_text", "source_index", "source_shards",
    "source_tensors", "output_shards", "output_tensors", "layers", "skipped_layers", "files", "set_aside_files",
    "warnings", "source_files", "output_files", "sha256",
})
"""Every key of a manifest (versions 2 and 3): a manifest with a key missing or an unknown one is bad input."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_relative_name(name: Any, where: Path, what: str, *, plain: bool = False) -> str:
    """`name` as a safe relative path (what pack accepts as input): a non-empty string, `/`-separated, not
    absolute, no `..`, `.` or empty part, no backslash or NUL; with `plain`, a bare file name (no folder).
    Raises CheckpointError naming `where` and `what` otherwise."""
    ok = isinstance(name, str) and name != "" and "\\" not in name and "\0" not in name and not name.startswith("/")
    parts = name.split("/") if ok else []
    if not ok or any(p in ("", ".", "..") for p in parts) or (plain and len(parts) != 1):
        kind = "a file name" if plain else "a relative path"
        raise CheckpointError(f"{where}: {what} {name!r} leaves the directory or is not {kind} in it "
                              "(no '..', no absolute path)")
    return name


def _bad(where: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{where}: malformed manifest: {problem}")


def _require(cond: bool, where: Path, problem: str) -> None:
    if not cond:
        raise _bad(where, problem)


def _check_tensor_table(table: Any, where: Path, key: str) -> None:
    _require(isinstance(table, dict), where, f"{key} must be an object")
    for name, meta in table.items():
        _require(isinstance(meta, dict) and set(meta) == {"dtype", "shape", "sha256"}, where,
                 f"{key}[{name!r}] must have exactly dtype, shape, sha256")
        _require(isinstance(meta["dtype"], str) and meta["dtype"] in DTYPE_SIZES, where, f"{key}[{name!r}]: unknown dtype {meta['dtype']!r}")
        shape = meta["shape"]
        _require(isinstance(shape, list) and all(type(d) is int and 0 <= d < 2**63 for d in shape), where,
                 f"{key}[{name!r}]: shape must be a list of non-negative integers")
        _require(isinstance(meta["sha256"], str) and _SHA256.fullmatch(meta["sha256"]) is not None, where,
                 f"{key}[{name!r}]: sha256 must be 64 lowercase hex digits")


def _check_shard_lists(shards: dict[str, list[str]], tensors: dict[str, Any], where: Path, key: str) -> None:
    """Every tensor of `tensors` listed in exactly one shard, nothing else listed."""
    listed: list[str] = [t for names in shards.values() for t in names]
    _require(all(isinstance(t, str) for t in listed), where, f"{key}: tensor names must be strings")
    _require(len(listed) == len(set(listed)) and set(listed) == set(tensors), where,
             f"{key} must list every tensor exactly once")


def _check_distinct_files(names: list[str], where: Path) -> None:
    """The files unpack writes: no name twice, none inside another one's path (`a` and `a/b`)."""
    seen = set(names)
    _require(len(seen) == len(names), where, "a file is listed twice")
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            _require("/".join(parts[:i]) not in seen, where, f"{name!r} lies inside the file {'/'.join(parts[:i])!r}")


def _check_file_texts(records: dict[str, Any], where: Path) -> None:
    """A source file kept as text (config, index) must be the file its sha256 and size describe."""
    for name, record in records.items():
        if isinstance(record, dict) and "text" in record:
            text = record["text"]
            data = text.encode("utf-8", errors="surrogatepass") if isinstance(text, str) else None
            _require(data is not None and hashlib.sha256(data).hexdigest() == record.get("sha256")
                     and len(data) == record.get("size"), where, f"source_files[{name!r}]: text does not match its sha256")


def check_manifest(data: dict[str, Any], where: Path) -> None:
    """The manifest's schema: every key present and none unknown, each value of its type, and every name of a
    file it leads unpack or verify to (source and output shards, files, set-aside files, the source index's
    shards) a safe relative path. Raises CheckpointError (bad input, exit 2) naming the first problem."""
    missing, unknown = sorted(MANIFEST_KEYS - set(data)), sorted(set(data) - MANIFEST_KEYS)
    _require(not missing, where, f"missing key {missing[:1]}")
    _require(not unknown, where, f"unknown key {unknown[:1]}")
    _require(type(data["version"]) is int, where, f"unsupported version {data['version']!r}")
    for key in ("tool_version", "source_format"):
        _require(isinstance(data[key], str), where, f"{key} must be a string")
    _require(data["source_config_text"] is None or isinstance(data["source_config_text"], str), where,
             "source_config_text must be a string or null")
    _check_tensor_table(data["source_tensors"], where, "source_tensors")
    _check_tensor_table(data["output_tensors"], where, "output_tensors")
    shards = data["source_shards"]
    _require(isinstance(shards, dict) and bool(shards), where, "source_shards must be a non-empty object")
    for shard, meta in shards.items():
        check_relative_name(shard, where, "source shard", plain=True)
        _require(isinstance(meta, dict) and set(meta) == {"metadata", "tensors"} and isinstance(meta["tensors"], list),
                 where, f"source_shards[{shard!r}] must have exactly metadata and a tensors list")
        md = meta["metadata"]
        _require(md is None or (isinstance(md, dict) and all(isinstance(v, str) for v in md.values())), where,
                 f"source_shards[{shard!r}].metadata must be null or an object of strings")
    _check_shard_lists({s: m["tensors"] for s, m in shards.items()}, data["source_tensors"], where, "source_shards")
    out_shards = data["output_shards"]
    _require(isinstance(out_shards, dict) and bool(out_shards) and all(isinstance(v, list) for v in out_shards.values()),
             where, "output_shards must be a non-empty object of tensor lists")
    for shard in out_shards:
        check_relative_name(shard, where, "output shard", plain=True)
    _check_shard_lists(out_shards, data["output_tensors"], where, "output_shards")
    index = data["source_index"]
    if index is not None:
        _require(isinstance(index, dict) and isinstance(index.get("weight_map"), dict), where,
                 "source_index must be null or an object with a weight_map")
        for shard in index["weight_map"].values():
            check_relative_name(shard, where, "shard in source_index", plain=True)
            _require(shard in shards, where, f"source_index names shard {shard!r}, which is not in source_shards")
    _require(isinstance(data["layers"], dict) and all(isinstance(v, dict) for v in data["layers"].values()), where,
             "layers must be an object of objects")
    skipped = data["skipped_layers"]
    _require(isinstance(skipped, dict) and all(v is None or isinstance(v, str) for v in skipped.values()), where,
             "skipped_layers must be an object of strings")
    _require(isinstance(data["warnings"], list) and all(isinstance(w, str) for w in data["warnings"]), where,
             "warnings must be a list of strings")
    files = data["files"]
    _require(isinstance(files, list), where, "files must be a list")
    for name in files:
        check_relative_name(name, where, "file")
    aside = data["set_aside_files"]
    _require(isinstance(aside, dict), where, "set_aside_files must be an object")
    for name, entry in aside.items():
        check_relative_name(name, where, "set-aside file")
        _require(isinstance(entry, dict) and set(entry) == {"stored_as", "sha256"}, where,
                 f"set_aside_files[{name!r}] must have exactly stored_as and sha256")
        check_relative_name(entry["stored_as"], where, "set-aside file")
        _require(isinstance(entry["sha256"], str) and _SHA256.fullmatch(entry["sha256"]) is not None, where,
                 f"set_aside_files[{name!r}]: sha256 must be 64 lowercase hex digits")
    for key in ("source_files", "output_files"):  # their records are checked by `file_records`
        _require(isinstance(data[key], dict), where, f"{key} must be an object")
        for name in data[key]:
            check_relative_name(name, where, f"file in {key}")
    _check_file_texts(data["source_files"], where)
    written = list(shards) + files + list(aside) + ["config.json"] * (data["source_config_text"] is not None)
    written += ["model.safetensors.index.json"] * (index is not None)
    _check_distinct_files(written, where)


def check_output_paths(manifest: dict[str, Any], root: Path, also: Iterable[str] = ()) -> None:
    """Every file of the output that unpack, verify or inspect reads (config, index, shards, copied and
    set-aside files, `also`) stays inside `root` with links resolved (pack's link rule, `links.stays_inside`)."""
    read = ["config.json", "model.safetensors.index.json", *also, *manifest["output_shards"], *manifest["files"]]
    read += [e["stored_as"] for e in manifest["set_aside_files"].values()]
    for name in read:
        path = root / name
        if not stays_inside(path, root):
            raise CheckpointError(outside_link_message(path, root))


def build_manifest(*, tool_version: str, source_format: str, source: Checkpoint, source_sha: dict[str, str],
                   shards: list[ShardPlan], out_sha: dict[str, str], layers: dict[str, dict[str, Any]],
                   skipped_layers: dict[str, str | None], files: list[str], set_aside_files: dict[str, Any],
                   warnings: list[str], source_files: dict[str, Any], output_files: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a pack: what the source was (config text, index, shards, every tensor's sha256),
    what was written (every output tensor's sha256) and how each layer was converted (`layers`); whole files
    in `source_files` and `output_files` (see `file_records`)."""
    return {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "tool_version": tool_version,
        "source_format": source_format,
        "source_config_text": source.config_text,
        "source_index": source.index,
        "source_shards": {
            shard: {"metadata": h.metadata, "tensors": list(h.tensors)} for shard, h in source.headers.items()
        },
        "source_tensors": {
            name: {"dtype": s.dtype, "shape": list(s.shape), "sha256": source_sha[name]} for name, s in source.specs().items()
        },
        "output_shards": {s.name: [e.name for e in s.entries] for s in shards},
        "output_tensors": {
            e.name: {"dtype": e.dtype, "shape": list(e.shape), "sha256": out_sha[e.name]}
            for s in shards for e in s.entries
        },
        "layers": layers,
        "skipped_layers": skipped_layers,
        "files": files,
        "set_aside_files": set_aside_files,
        "warnings": warnings,
        "source_files": source_files,
        "output_files": output_files,
    }


def _check_output_shards(manifest: dict[str, Any], ckpt: Checkpoint) -> None:
    """The output's shards are the manifest's, each holding the tensors the manifest lists for it."""
    for shard, header in ckpt.headers.items():
        if sorted(header.tensors) != sorted(manifest["output_shards"].get(shard, [])):
            ckpt.close()
            raise VerifyMismatch(f"{ckpt.root / shard}: shard or its tensors differ from the manifest")
    if set(ckpt.headers) != set(manifest["output_shards"]):
        ckpt.close()
        raise VerifyMismatch(f"{ckpt.root}: shards differ from the manifest's {sorted(manifest['output_shards'])}")


def open_output(path: Path, *, marker_files: Iterable[str] = ()) -> tuple[dict[str, Any], Checkpoint]:
    """The manifest and the opened Marlin checkpoint (see `open_checkpoint` for `marker_files`); any
    inconsistency is a VerifyMismatch."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory")
    if not os.path.lexists(path / MANIFEST_NAME):
        raise NotAnOutputError(f"{path}: not a marlin-convert output (no {MANIFEST_NAME}); give the directory "
                               "written by `marlin-convert pack`")
    from .source import open_checkpoint

    if (path / MANIFEST_NAME).is_file() and not stays_inside(path / MANIFEST_NAME, path):  # else: not a regular file
        raise CheckpointError(outside_link_message(path / MANIFEST_NAME, path))
    manifest = load_manifest(path / MANIFEST_NAME)
    check_output_paths(manifest, path, marker_files)
    from .file_records import check_output_structure

    check_output_structure(path, manifest, MANIFEST_NAME)
    try:
        ckpt = open_checkpoint(path, marker_files=marker_files)
    except CheckpointError as e:
        raise VerifyMismatch(str(e)) from None
    _check_output_shards(manifest, ckpt)
    expected = manifest["output_tensors"]
    specs = ckpt.specs()
    for name, meta in expected.items():
        spec = specs.get(name)
        if spec is None or spec.dtype != meta["dtype"] or list(spec.shape) != meta["shape"]:
            ckpt.close()
            raise VerifyMismatch(f"{path}: tensor {name} missing or changed (dtype/shape differ from the manifest)")
    extra = sorted(set(specs) - set(expected))
    if extra:
        ckpt.close()
        raise VerifyMismatch(f"{path}: tensor {extra[0]} is not in the manifest")
    return manifest, ckpt
