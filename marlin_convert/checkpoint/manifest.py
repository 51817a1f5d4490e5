"""The `marlin_convert_manifest.json` file: canonical JSON with a sha256 of its own content."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, VerifyMismatch
from .json_file import parse_json, read_json_text

__all__ = ["MANIFEST_NAME", "MANIFEST_KIND", "dump_manifest", "load_manifest"]

MANIFEST_NAME = "marlin_convert_manifest.json"
MANIFEST_KIND = "marlin-convert-manifest"


def _canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, indent=1, ensure_ascii=True) + "\n"


def dump_manifest(data: dict[str, Any]) -> str:
    """Canonical text of the manifest, with `sha256` = hash of the canonical text without it."""
    body = {k: v for k, v in data.items() if k != "sha256"}
    digest = hashlib.sha256(_canonical(body).encode()).hexdigest()
    return _canonical({**body, "sha256": digest})


def load_manifest(path: Path) -> dict[str, Any]:
    """Read and check a manifest: any change to its bytes raises VerifyMismatch."""
    if not os.path.lexists(path):
        raise VerifyMismatch(f"{path}: missing (not a marlin-convert output?)")
    try:
        text = read_json_text(path)
        data = parse_json(text, path)
    except CheckpointError as e:
        raise VerifyMismatch(f"unreadable or corrupt manifest: {e}") from None
    if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND:
        raise VerifyMismatch(f"{path}: not a marlin-convert manifest")
    if dump_manifest(data) != text or not isinstance(data.get("sha256"), str):
        raise VerifyMismatch(f"{path}: content does not match its sha256 (manifest modified or corrupt)")
    return data
