"""Atomic output directories: everything is written into a temporary directory beside the output,
which is renamed into place only when complete. Interrupted runs leave only a clearly named
temporary directory, which the next run for the same output removes."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import CheckpointError, OutputExistsError
from .links import is_inside
from .ownership import check_not_current_directory, check_replaceable

__all__ = ["atomic_directory", "check_output_path", "is_inside", "TMP_MARKER"]

TMP_MARKER = ".marlin-convert-tmp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output_path(out: Path, *, inputs: list[Path], force: bool) -> None:
    """Refuse an output that lies inside an input or contains one, or that exists (without force; with force,
    unless it is an empty directory or a previous marlin-convert output)."""
    for src in inputs:
        if is_inside(out, src):
            raise OutputExistsError(f"{out}: output must not be inside the input directory {src}")
        if is_inside(src, out):
            raise OutputExistsError(f"{out}: output must not contain the input directory {src}")
    if out.exists() or out.is_symlink():
        check_not_current_directory(out)
        if not force:
            raise OutputExistsError(f"{out}: already exists (use --force to replace it)")
        check_replaceable(out)
    if not out.parent.is_dir():
        raise OutputExistsError(f"{out.parent}: parent directory of the output does not exist")


def _remove_stale(out: Path) -> None:
    for stale in out.parent.glob(f".{out.name}{TMP_MARKER}*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def atomic_directory(out: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory that becomes `out` when the block ends without error.

    On any error or interruption the temporary directory is removed and `out` is left as it was.
    With `force`, an existing `out` is replaced only after the new one is complete.
    """
    out = Path(out)
    _remove_stale(out)
    tmp = out.parent / f".{out.name}{TMP_MARKER}{os.getpid()}"
    try:
        tmp.mkdir()
    except OSError as e:
        raise CheckpointError(f"{tmp}: cannot create the temporary output directory ({e.strerror or e})") from None
    try:
        yield tmp
        if out.exists() or out.is_symlink():
            if not force:
                raise OutputExistsError(f"{out}: appeared while converting (use --force to replace it)")
            check_replaceable(out)
            old = out.parent / f".{out.name}{TMP_MARKER}old-{os.getpid()}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
