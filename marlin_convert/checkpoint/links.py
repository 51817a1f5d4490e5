"""Which files of an input directory may be read: those that stay inside its trust boundary.

The boundary is the directory itself, except for a Hugging Face cache snapshot
(`.../models--org--name/snapshots/REV`), whose files are links into the repo's own cache folder
(`../../blobs/`): there the boundary is that `models--org--name/` folder.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["is_inside", "trust_root", "stays_inside", "outside_link_message"]

_CACHE_REPO_PREFIXES = ("models--", "datasets--", "spaces--")


def is_inside(inner: Path, outer: Path) -> bool:
    """True when `inner`, with links resolved, is `outer` or lies below it."""
    try:
        inner.resolve().relative_to(outer.resolve())
    except (ValueError, OSError):
        return False
    return True


def trust_root(root: Path) -> Path:
    """The folder links inside `root` may resolve into: the repo's cache folder for a cache snapshot, else `root`."""
    resolved = root.resolve()
    snapshots = resolved.parent
    repo = snapshots.parent
    if snapshots.name == "snapshots" and repo.name.startswith(_CACHE_REPO_PREFIXES) and (repo / "blobs").is_dir():
        return repo
    return root


def stays_inside(path: Path, root: Path) -> bool:
    """True when `path`, with links resolved, lies inside `root`'s trust boundary."""
    return is_inside(path, trust_root(root))


def outside_link_message(path: Path, root: Path) -> str:
    """One line naming the link, where it leads and how to proceed."""
    try:
        target = path.resolve()
    except OSError:
        target = path
    return (f"{path}: symbolic link points outside the checkpoint directory (to {target}); copy the files into "
            f"{root} (e.g. `hf download ORG/NAME --local-dir DIR`) or pass the Hugging Face cache snapshot itself")
