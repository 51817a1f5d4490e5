"""Whether an existing directory may be replaced by `--force`: only an empty one or a previous output
of marlin-convert (recognised by its manifest). Anything else is left untouched."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointError, OutputExistsError
from .json_file import read_json
from .manifest import MANIFEST_KIND, MANIFEST_NAME

__all__ = ["is_marlin_output", "check_not_current_directory", "check_replaceable"]


def is_marlin_output(path: Path) -> bool:
    """True when `path` is a directory holding a marlin-convert manifest (its kind field; the hash is not checked)."""
    manifest = path / MANIFEST_NAME
    if not manifest.is_file():
        return False
    try:
        data = read_json(manifest)  # regular files only, size-capped
    except CheckpointError:
        return False
    return isinstance(data, dict) and data.get("kind") == MANIFEST_KIND


def _is_cwd(path: Path) -> bool:
    try:
        return path.resolve() == Path(os.getcwd()).resolve()
    except OSError:
        return False


def check_not_current_directory(out: Path) -> None:
    """The current directory cannot be renamed away (`-o .`): refuse it with a way forward."""
    if _is_cwd(out):
        raise OutputExistsError(f"{out}: is the current directory, which cannot be replaced; "
                                "choose a new directory for -o (e.g. -o ./marlin) or run from its parent")


def check_replaceable(out: Path) -> None:
    """Raise OutputExistsError unless the existing `out` may be replaced by --force."""
    check_not_current_directory(out)
    if out.is_symlink() or not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a directory; --force replaces only an empty directory "
                                "or a previous marlin-convert output (remove it yourself or choose another -o)")
    if any(out.iterdir()) and not is_marlin_output(out):
        raise OutputExistsError(f"{out}: not empty and not a marlin-convert output (no {MANIFEST_NAME}); --force "
                                "replaces only an empty directory or a previous output (remove it yourself or choose another -o)")
