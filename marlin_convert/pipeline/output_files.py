"""Source files the output must not show under their own names: those that describe the source's
quantization (AutoGPTQ's `quantize_config.json`, quanto's `quanto_qmap.json`), which would tell a loader the
weights are still in that format, and the source's model card `README.md` when the output gets its own. They
are set aside in `marlin_convert_source/`, hashed in the manifest, and put back by `unpack`."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from ..errors import VerifyMismatch
from ..formats import MARKER_FILES

__all__ = ["SET_ASIDE_DIR", "SOURCE_QUANTIZATION_FILES", "SOURCE_CARD", "split_source_files", "set_aside_source_files",
           "restore_source_files", "copy_files"]

SET_ASIDE_DIR = "marlin_convert_source"
SOURCE_QUANTIZATION_FILES = MARKER_FILES
"""Top-level files that describe the source's quantization (the marker files the formats declare)."""
SOURCE_CARD = "README.md"


def split_source_files(files: list[str], *, with_card: bool, owned: set[str] = frozenset()) -> tuple[list[str], list[str]]:
    """(files copied verbatim, files set aside) of a checkpoint's other files; `with_card`: the output gets
    its own model card, so the source's `README.md` is set aside too. `owned`: the names the output writes
    itself (shards, index, config, manifest): a source file of such a name, or under a folder of such a name
    or under `marlin_convert_source/`, is set aside too, so it can neither overwrite the output's own file
    nor be mistaken for it, and unpack puts it back."""
    names = set(SOURCE_QUANTIZATION_FILES) | ({SOURCE_CARD} if with_card else set())
    aside = [f for f in files if f in names or _collides(f, owned)]
    return [f for f in files if f not in aside], aside


def _collides(rel: str, owned: set[str]) -> bool:
    """True when `rel` is a name the output writes itself, lies under one, or lies in the set-aside folder."""
    first = rel.split("/", 1)[0]
    return rel in owned or first in owned or first == SET_ASIDE_DIR


def set_aside_source_files(src_root: Path, dst_root: Path, files: list[str]) -> dict[str, dict[str, str]]:
    """Copy `files` into `dst_root/marlin_convert_source/`; returns the manifest entries (where, sha256)."""
    entries = {}
    for rel in files:
        stored = f"{SET_ASIDE_DIR}/{rel}"
        data = (src_root / rel).read_bytes()
        target = dst_root / stored
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        entries[rel] = {"stored_as": stored, "sha256": hashlib.sha256(data).hexdigest()}
    return entries


def restore_source_files(marlin_root: Path, dst_root: Path, entries: dict[str, Any]) -> None:
    """Put set-aside files back at their source paths; a changed or missing one raises VerifyMismatch."""
    for rel, entry in entries.items():
        stored = marlin_root / entry["stored_as"]
        try:
            data = stored.read_bytes()
        except OSError as e:
            raise VerifyMismatch(f"{stored}: cannot read the set-aside source file ({e.strerror or e})") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise VerifyMismatch(f"{stored}: differs from the source's {rel} (sha256 mismatch)")
        target = dst_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stored, target)


def copy_files(src_root: Path, dst_root: Path, files: list[str]) -> None:
    """Copy files (relative paths) from one checkpoint directory to another, as they are."""
    for rel in files:
        target = dst_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_root / rel, target)
