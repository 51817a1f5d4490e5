"""The `marlin_convert_manifest.json` file: canonical JSON with a sha256 of its own content."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import VerifyMismatch

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
    try:
        text = path.read_bytes().decode("utf-8")
        data = json.loads(text)
    except FileNotFoundError:
        raise VerifyMismatch(f"{path}: missing (not a marlin-convert output?)") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise VerifyMismatch(f"{path}: unreadable or corrupt ({e})") from None
    if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND:
        raise VerifyMismatch(f"{path}: not a marlin-convert manifest")
    if dump_manifest(data) != text or not isinstance(data.get("sha256"), str):
        raise VerifyMismatch(f"{path}: content does not match its sha256 (manifest modified or corrupt)")
    return data
