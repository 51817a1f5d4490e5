"""Hashes of a directory tree, to prove an input directory was left untouched."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["tree_hashes", "content_hashes"]


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root, with modes, to prove an input directory was left untouched."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for fn in files:
            p = Path(dirpath) / fn
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
    return out


def content_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root (contents only, not modes: what "byte-identical" promises)."""
    return {rel: digest[:64] for rel, digest in tree_hashes(root).items()}
