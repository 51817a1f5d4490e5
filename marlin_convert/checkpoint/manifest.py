"""The `marlin_convert_manifest.json` file: its schema (built by pack, read by unpack, verify and inspect),
written as canonical JSON with a sha256 of its own content."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import CheckpointError, NotAnOutputError, VerifyMismatch
from .json_file import parse_json, read_json_text

if TYPE_CHECKING:  # ownership (imported by source's imports) reads MANIFEST_NAME from here: no import cycle
    from .source import Checkpoint
    from .writer import ShardPlan

__all__ = ["MANIFEST_NAME", "MANIFEST_KIND", "MANIFEST_VERSION", "check_manifest_version", "build_manifest", "dump_manifest", "load_manifest", "open_output"]

MANIFEST_NAME = "marlin_convert_manifest.json"
MANIFEST_KIND = "marlin-convert-manifest"
MANIFEST_VERSION = 2
"""2: `source_files` and `output_files` (whole files, see `file_records`). Version 1 recorded tensors only."""


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
    text = read_json_text(path)
    try:
        data = parse_json(text, path)
    except CheckpointError as e:
        raise VerifyMismatch(f"corrupt manifest: {e}") from None
    if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND:
        raise VerifyMismatch(f"{path}: not a marlin-convert manifest")
    if dump_manifest(data) != text or not isinstance(data.get("sha256"), str):
        raise VerifyMismatch(f"{path}: content does not match its sha256 (manifest modified or corrupt)")
    check_manifest_version(data, path)
    return data


def check_manifest_version(data: dict[str, Any], path: Path) -> None:
    """Only this version's manifests are read: a version 1 manifest (marlin-convert 0.1.0 before files were
    recorded) cannot give back the source files byte for byte, so it is refused (exit 2) with the way out."""
    version = data.get("version")
    if version != MANIFEST_VERSION:
        raise CheckpointError(f"{path}: manifest version {version!r} is not supported (this marlin-convert reads version "
                              f"{MANIFEST_VERSION}, which records whole files); pack the source again with this version")


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

    manifest = load_manifest(path / MANIFEST_NAME)
    from .file_records import check_output_structure

    check_output_structure(path, manifest, MANIFEST_NAME)
    try:
        ckpt = open_checkpoint(path, marker_files=marker_files)
    except CheckpointError as e:
        raise VerifyMismatch(str(e)) from None
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
