"""Atomic output directories: everything is written into a temporary directory beside the output,
which is renamed into place only when complete. Interrupted runs leave only a clearly named
temporary directory, which the next run for the same output removes.

A live run holds an exclusive `flock` on its temporary directory for as long as it runs (a lock on the
directory itself, not on a file in it, so nothing of it ends up in the output): a later run removes only
temporary directories nobody holds, whatever PID namespace or machine the owner runs in, and finds them
by their literal name (never a glob of the output name). `--force` swaps the new directory with the old one
in one step (`renameat2(RENAME_EXCHANGE)`, Linux); elsewhere it renames the old one aside first, and a run
killed between the two renames leaves the old output aside, which the next run for that output puts back.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import secrets
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import CheckpointError, OutputExistsError
from .links import is_inside
from .ownership import check_not_current_directory, check_replaceable

__all__ = ["atomic_directory", "check_output_path", "is_inside", "recover_interrupted", "temp_prefix", "TMP_MARKER",
           "OLD_MARKER"]

TMP_MARKER = ".marlin-convert-tmp-"
OLD_MARKER = ".marlin-convert-old-"
_TOKEN = re.compile(r"[0-9a-f]{1,32}")
_NAME_BYTES = 160
"""Longest output name kept whole in a temporary name (file names have at most 255 bytes)."""


def temp_prefix(out: Path, marker: str = TMP_MARKER) -> str:
    """`.NAME.marlin-convert-tmp-` for output NAME; a long NAME is cut and a hash of it added."""
    name = out.name
    if len(name.encode()) > _NAME_BYTES:
        cut = name.encode()[:_NAME_BYTES - 17].decode(errors="ignore")
        name = f"{cut}-{hashlib.sha256(out.name.encode()).hexdigest()[:16]}"
    return f".{name}{marker}"


def _ours(out: Path, marker: str) -> list[Path]:
    """This output's temporary (or set-aside) directories, matched by literal name."""
    prefix = temp_prefix(out, marker)
    try:
        names = os.listdir(out.parent)
    except OSError:
        return []
    return sorted(out.parent / n for n in names if n.startswith(prefix) and _TOKEN.fullmatch(n[len(prefix):]))


def _lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on directory `path`, or None when another process holds it."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _rmtree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover_interrupted(out: Path) -> None:
    """Finish what a killed run for `out` left: an old output set aside by `--force` goes back to `out` when
    `out` is absent (and is removed when the new one is in place); temporary directories nobody holds go."""
    for aside in _ours(out, OLD_MARKER):
        try:
            fd = _lock(aside)
        except OSError:
            continue
        if fd is None:
            continue  # a live run is replacing `out` right now
        try:
            if not (out.exists() or out.is_symlink()):
                os.rename(aside, out)
            else:
                _rmtree(aside)
        finally:
            _unlock(fd)
    for stale in _ours(out, TMP_MARKER):
        try:
            fd = _lock(stale)
        except OSError:
            continue
        if fd is not None:
            try:
                _rmtree(stale)
            finally:
                _unlock(fd)


def check_output_path(out: Path, *, inputs: list[Path], force: bool) -> None:
    """Refuse an output that lies inside an input or contains one, or that exists (without force; with force,
    unless it is an empty directory or a previous marlin-convert output)."""
    for src in inputs:
        if is_inside(out, src):
            raise OutputExistsError(f"{out}: output must not be inside the input directory {src}")
        if is_inside(src, out):
            raise OutputExistsError(f"{out}: output must not contain the input directory {src}")
    if out.parent.is_dir():
        recover_interrupted(out)
    if out.exists() or out.is_symlink():
        check_not_current_directory(out)
        if not force:
            raise OutputExistsError(f"{out}: already exists (use --force to replace it)")
        check_replaceable(out)
    if not out.parent.is_dir():
        raise OutputExistsError(f"{out.parent}: parent directory of the output does not exist")


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> bool:
    """Swap the paths `a` and `b` in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`); False where the OS
    or the file system cannot (then nothing happened)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _replace(tmp: Path, out: Path, token: str) -> None:
    """Put the complete `tmp` in place of the existing `out`, never leaving no `out` for good."""
    if exchange(tmp, out):
        _rmtree(tmp)  # now the old output
        return
    aside = out.parent / f"{temp_prefix(out, OLD_MARKER)}{token}"
    fd = _lock(out) if out.is_dir() and not out.is_symlink() else None
    try:
        os.rename(out, aside)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(aside, out)  # put the old one back
            raise
        _rmtree(aside)
    finally:
        _unlock(fd)


@contextmanager
def atomic_directory(out: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory that becomes `out` when the block ends without error.

    On any error or interruption the temporary directory is removed and `out` is left as it was.
    With `force`, an existing `out` is replaced only after the new one is complete.
    """
    out = Path(out)
    recover_interrupted(out)
    token = f"{os.getpid():x}{secrets.token_hex(4)}"
    tmp = out.parent / f"{temp_prefix(out)}{token}"
    try:
        tmp.mkdir()
        fd = _lock(tmp)
    except OSError as e:
        raise CheckpointError(f"{tmp}: cannot create the temporary output directory ({e.strerror or e})") from None
    try:
        yield tmp
        if out.exists() or out.is_symlink():
            if not force:
                raise OutputExistsError(f"{out}: appeared while converting (use --force to replace it)")
            check_replaceable(out)
            _replace(tmp, out, token)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _unlock(fd)
