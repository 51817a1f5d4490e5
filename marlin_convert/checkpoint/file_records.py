"""Whole files in the manifest (its `source_files` and `output_files`), so that `unpack` restores files and
not only tensors, and `verify` covers every byte of an output.

`source_files`: every file of the source checkpoint by relative path: its `size`; for config.json and the
index also their exact `text`; for a shard its `header` (the JSON text after the 8-byte length, exactly as
stored: key order, spacing, `__metadata__`, padding); for every other file its `sha256` (of the whole file).
A shard is its header followed by its tensors back to back in offset order (the reader accepts nothing else),
so header text + size + each tensor's sha256 (in `source_tensors`) prove it byte for byte: since manifest
version 3 a shard has no whole-file sha256, which hashed every source byte a second time (version 2's is
still read, and not needed).

`output_files`: every file pack wrote except the manifest: `sha256` and `size`; for a shard `header_sha256`
(its first 8 + N bytes) and `size`, its tensors being hashed one by one in `output_tensors`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import CheckpointError, VerifyMismatch
from .chunked_hash import hash_file
from .safetensors_file import SafetensorsHeader, parse_header, read_header_bytes
from .source import CONFIG_NAME, INDEX_NAME, SKIPPED_DIRS, Checkpoint

__all__ = ["HUB_FILES", "hash_file", "source_file_records", "output_file_records", "check_output_structure",
           "check_output_files", "check_source_files", "source_shard_header", "check_restored_files"]

HUB_FILES = (".gitattributes",)
"""Files a Hub repository adds to what was uploaded; verify names them as not checked instead of failing."""


def _text_record(text: str) -> dict[str, Any]:
    data = text.encode("utf-8")
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "text": text}


def source_file_records(ckpt: Checkpoint, other_files: list[str]) -> dict[str, Any]:
    """`source_files` of a pack: shards by header text and size (their tensors' sha256 are recorded one by one),
    config.json and the index by their text, `other_files` hashed whole here."""
    records: dict[str, Any] = {}
    if ckpt.config_text is not None:
        records[CONFIG_NAME] = _text_record(ckpt.config_text)
    if ckpt.index_text is not None:
        records[INDEX_NAME] = _text_record(ckpt.index_text)
    for shard, header in ckpt.headers.items():
        size = len(header.raw) + sum(t.nbytes for t in header.tensors.values())
        if _file_size(ckpt.root / shard) != size:
            raise CheckpointError(f"{ckpt.root / shard}: changed while reading it")
        records[shard] = {"size": size, "header": header.raw[8:].decode("utf-8")}
    for rel in other_files:
        sha, size = hash_file(ckpt.root / rel)
        records[rel] = {"sha256": sha, "size": size}
    return records


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None


def _walk(root: Path) -> list[str]:
    """Relative paths of every file below root (links included, not followed), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if (here / d).relative_to(root).as_posix() not in SKIPPED_DIRS)
        out += [(here / fn).relative_to(root).as_posix() for fn in filenames]
    return sorted(out)


def output_file_records(root: Path, shards: list[str], skip: str) -> dict[str, Any]:
    """`output_files` of a finished output directory: every file in it but `skip` (the manifest)."""
    records: dict[str, Any] = {}
    for rel in _walk(root):
        if rel == skip:
            continue
        if rel in shards:
            raw = read_header_bytes(root / rel)
            records[rel] = {"header_sha256": hashlib.sha256(raw).hexdigest(), "size": (root / rel).stat().st_size}
        else:
            sha, size = hash_file(root / rel)
            records[rel] = {"sha256": sha, "size": size}
    return records


def _safe_name(name: Any, where: Path) -> str:
    """A manifest's file name: a relative path that stays inside the directory (else bad input, exit 2)."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise CheckpointError(f"{where}: file name {name!r} in the manifest is not a relative path")
    p = PurePosixPath(name)
    if p.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise CheckpointError(f"{where}: file name {name!r} in the manifest leaves the directory")
    return name


def _records(manifest: dict[str, Any], key: str, where: Path) -> dict[str, Any]:
    records = manifest.get(key)
    if not isinstance(records, dict) or not all(isinstance(r, dict) for r in records.values()):
        raise CheckpointError(f"{where}: manifest has no valid {key!r}")
    for name in records:
        _safe_name(name, where)
    return records


def _differs(path: Path, record: dict[str, Any], *, follow_links: bool = False, shard: bool = False) -> str | None:
    """Why the file at `path` is not the one `record` describes (None when it is). Links are refused unless
    `follow_links` (a source checkpoint, whose links `open_checkpoint` has checked: e.g. a Hub cache snapshot).
    A source `shard` is checked by header bytes and size only: its tensors are checked one by one against
    `source_tensors` by the caller."""
    if (path.is_symlink() and not follow_links) or not path.is_file():
        return f"{path}: missing or not a regular file"
    if shard:
        return _shard_differs(path, record)
    sha, size = hash_file(path)
    if sha != record.get("sha256") or size != record.get("size"):
        return f"{path}: differs from the manifest (sha256)"
    return None


def _shard_differs(path: Path, record: dict[str, Any]) -> str | None:
    """A shard's header bytes and size against its record (a recorded header that is no string never matches)."""
    text = record.get("header")
    expected = text.encode("utf-8", errors="surrogatepass") if isinstance(text, str) else None
    try:
        raw = read_header_bytes(path)
    except CheckpointError as e:
        return str(e)
    if expected is None or raw[8:] != expected:
        return f"{path}: header (tensor list, __metadata__) differs from the manifest"
    if _file_size(path) != record.get("size"):
        return f"{path}: size differs from the manifest"
    return None


def check_output_structure(root: Path, manifest: dict[str, Any], manifest_name: str) -> None:
    """Before any of it is parsed: config.json, the index and every shard's header bytes and size are as
    pack wrote them. Raises VerifyMismatch naming the first file that is not."""
    where = root / manifest_name
    records = _records(manifest, "output_files", where)
    for rel in (CONFIG_NAME, INDEX_NAME):
        if rel in records:
            problem = _differs(root / rel, records[rel])
            if problem:
                raise VerifyMismatch(problem)
        elif (root / rel).exists() or (root / rel).is_symlink():
            raise VerifyMismatch(f"{root / rel}: not written by pack (not in the manifest)")
    for shard in manifest["output_shards"]:
        record = records.get(_safe_name(shard, where))
        path = root / shard
        if record is None:
            raise VerifyMismatch(f"{where}: shard {shard} has no entry in output_files")
        if path.is_symlink() or not path.is_file():
            raise VerifyMismatch(f"{path}: missing or not a regular file")
        try:
            raw = read_header_bytes(path)
        except CheckpointError as e:
            raise VerifyMismatch(str(e)) from None
        if hashlib.sha256(raw).hexdigest() != record.get("header_sha256"):
            raise VerifyMismatch(f"{path}: header (tensor list, __metadata__) differs from the manifest (sha256)")
        if path.stat().st_size != record.get("size"):
            raise VerifyMismatch(f"{path}: size differs from the manifest")


def check_output_files(root: Path, manifest: dict[str, Any], manifest_name: str) -> tuple[list[str], list[str], int]:
    """(problems, files not checked, files checked) of every non-shard output file (model card, config, index,
    copied and set-aside source files) against its sha256, and of files in `root` that pack did not write.
    Files the Hub adds (`.gitattributes`) and a `--local-dir` download's `.cache/huggingface/` are not checked:
    they are named instead."""
    records = _records(manifest, "output_files", root / manifest_name)
    shards = set(manifest["output_shards"])
    problems = [p for rel, rec in records.items() if rel not in shards and (p := _differs(root / rel, rec))]
    unchecked = [f"{d}/" for d in SKIPPED_DIRS if (root / d).is_dir()]
    for rel in _walk(root):
        if rel in records or rel == manifest_name:
            continue
        if rel in HUB_FILES:
            unchecked.append(rel)
        else:
            problems.append(f"{root / rel}: not written by pack (not in the manifest)")
    return problems, unchecked, len(records) - len(shards)


def check_source_files(src: Checkpoint, manifest: dict[str, Any]) -> list[str]:
    """Every file of the source checkpoint `src` against the manifest: shards by header bytes and size (the
    caller checks their tensors' sha256), every other file by its whole-file sha256; extra or missing files too."""
    records = _records(manifest, "source_files", src.root)
    present = {CONFIG_NAME, *src.weight_files(), *src.other_files()}
    problems = [f"{src.root / rel}: missing" for rel in sorted(set(records) - present)]
    problems += [f"{src.root / rel}: not in the checkpoint this output was made from" for rel in sorted(present - set(records))]
    shards = manifest["source_shards"]
    problems += [p for rel in sorted(present & set(records))
                 if (p := _differs(src.root / rel, records[rel], follow_links=True, shard=rel in shards))]
    return problems


def source_shard_header(manifest: dict[str, Any], shard: str, where: Path) -> SafetensorsHeader:
    """The recorded header of source shard `shard`, checked: it lists exactly the shard's tensors with the
    manifest's dtypes and shapes, back to back to the recorded file size. Raises VerifyMismatch."""
    records = _records(manifest, "source_files", where)
    record = records.get(shard)
    if record is None or not isinstance(record.get("header"), str) or not isinstance(record.get("size"), int):
        raise VerifyMismatch(f"{where}: no recorded header for source shard {shard}")
    text = record["header"].encode("utf-8", errors="surrogatepass")
    raw = len(text).to_bytes(8, "little") + text
    try:
        header = parse_header(raw, record["size"], Path(shard))
    except CheckpointError as e:
        raise VerifyMismatch(f"{where}: recorded header of {e}") from None
    tensors = manifest["source_tensors"]
    expected = manifest["source_shards"][shard]["tensors"]
    if sorted(header.tensors) != sorted(expected) or any(
            (t.dtype, list(t.shape)) != (tensors.get(n, {}).get("dtype"), tensors.get(n, {}).get("shape"))
            for n, t in header.tensors.items()):
        raise VerifyMismatch(f"{where}: recorded header of {shard} does not list the manifest's tensors")
    return header


def check_restored_files(root: Path, manifest: dict[str, Any]) -> None:
    """Every restored file is the source's and nothing else is there: shards by header bytes and size (the
    caller has checked each restored tensor's sha256), every other file by its whole-file sha256. Raises
    VerifyMismatch naming the first that is not."""
    records = _records(manifest, "source_files", root)
    present = set(_walk(root))
    for rel in sorted(present - set(records)):
        raise VerifyMismatch(f"{root / rel}: restored but not a source file")
    for rel, record in records.items():
        problem = _differs(root / rel, record, shard=rel in manifest["source_shards"])
        if problem:
            raise VerifyMismatch(f"restored {problem.replace('differs from the manifest', 'differs from the source file')}")
