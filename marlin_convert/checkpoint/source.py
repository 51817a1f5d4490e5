"""A checkpoint directory opened for reading: config, index, shard headers, lazy tensor reads.

Nothing outside the directory is ever read: shard names from the index must be plain files inside
it, and symbolic links that leave it are refused.
"""
from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterable

from ..errors import CheckpointError
from ..stage_timers import stage
from ..tensor_spec import TensorSpec
from .chunked_hash import hash_range
from .hashed import tensor_bytes
from .direct_file import (DIRECT_READ_MIN, ReadAsUsed, direct_io_enabled, hash_as_read, in_page_cache, read_direct,
                          read_direct_as_used, read_direct_hashed)
from .index_file import read_index
from .json_file import read_json, read_json_text
from .links import outside_link_message, stays_inside
from .row_windows import RowWindows
from .stored_rows import StoredRows
from .unsupported import unsupported_checkpoint
from .safetensors_file import (SafetensorsHeader, TensorInfo, array_from_bytes, read_bytes, read_header,
                               tensor_from_bytes)

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["Checkpoint", "open_checkpoint", "INDEX_NAME", "SINGLE_NAME", "CONFIG_NAME"]

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
MAX_FOLDER_DEPTH = 32
"""Folders below the checkpoint root deeper than this are refused (a walk that deep is no checkpoint, and
Python's directory walk would run out of stack long before the file system's path limit)."""
SKIPPED_DIRS = (".cache/huggingface",)
"""Folders that are not part of the checkpoint: `hf download --local-dir` keeps its download metadata there."""


class Checkpoint:
    """Read access to one checkpoint directory. Use as a context manager to close shard files."""

    def __init__(self, root: Path, config: dict[str, Any], config_text: str | None, index: dict[str, Any] | None,
                 headers: dict[str, SafetensorsHeader], json_files: dict[str, Any], index_text: str | None = None):
        self.root = root
        self.config = config
        self.config_text = config_text
        """config.json exactly as stored."""
        self.index = index
        self.index_text = index_text
        """The index exactly as stored (None without an index)."""
        self.headers = headers
        self.json_files = json_files
        self.location: dict[str, tuple[str, TensorInfo]] = {}
        for shard, header in headers.items():
            for name, info in header.tensors.items():
                if name in self.location:
                    raise CheckpointError(f"{root}: tensor {name} is stored in both {self.location[name][0]} and {shard}")
                self.location[name] = (shard, info)
        if index is not None:
            for name, shard in index["weight_map"].items():
                found = self.location.get(name)
                if found is None:
                    raise CheckpointError(f"{root / shard}: tensor {name} is listed in the index but missing from the shard")
                if found[0] != shard:
                    raise CheckpointError(f"{root}: tensor {name} is indexed in {shard} but stored in {found[0]}")
            unlisted = sorted(set(self.location) - set(index["weight_map"]))
            if unlisted:
                raise CheckpointError(f"{root / self.location[unlisted[0]][0]}: tensor {unlisted[0]} is not listed in the index")
        self._files: dict[str, BinaryIO] = {}
        self._direct: dict[str, int | None] = {}  # O_DIRECT descriptors (None: refused)
        self._lock = threading.Lock()

    @property
    def shards(self) -> list[str]:
        return list(self.headers)

    def specs(self) -> dict[str, TensorSpec]:
        """Every tensor's dtype and shape, in shard and file order."""
        return {name: TensorSpec(info.dtype, info.shape) for name, (_, info) in self.location.items()}

    def info(self, name: str) -> TensorInfo:
        return self.location[name][1]

    def _file(self, shard: str) -> BinaryIO:
        with self._lock:
            f = self._files.get(shard)
            if f is None:
                try:
                    f = self._files[shard] = open(self.root / shard, "rb")
                except OSError as e:
                    raise CheckpointError(f"{self.root / shard}: cannot open ({e.strerror or e})") from None
            return f

    def _direct_fd(self, shard: str) -> int | None:
        with self._lock:
            if shard not in self._direct:
                fd = None
                if direct_io_enabled():
                    try:
                        fd = os.open(self.root / shard, os.O_RDONLY | os.O_DIRECT | getattr(os, "O_CLOEXEC", 0))
                    except OSError:
                        fd = None
                self._direct[shard] = fd
            return self._direct[shard]

    def read(self, name: str) -> torch.Tensor:
        return tensor_from_bytes(self.read_raw(name), self.info(name))

    def stored_rows(self, name: str) -> StoredRows:
        """A 2-D tensor read on demand by row ranges (`StoredRows`), never whole."""
        shard, info = self.location[name]
        return StoredRows(self._file(shard), info)

    def row_windows(self, name: str) -> RowWindows:
        """A 2-D tensor read once, window by window, for consumers that slice it by rows (`RowWindows`), past
        the page cache where it would be (`read_raw`)."""
        shard, info = self.location[name]
        return RowWindows(self._file(shard), info, direct_fd=self._uncached_direct_fd(name))

    def read_array(self, name: str) -> np.ndarray:
        """One tensor as a numpy array, without torch (planning reads zero points and g_idx this way)."""
        shard, info = self.location[name]
        return array_from_bytes(read_bytes(self._file(shard), info), info)

    def read_raw(self, name: str) -> bytearray | memoryview:
        """A tensor's stored bytes; a big one that is not in the page cache is read past it (`read_direct`).
        The probe is at the tensor's middle: its first page may share a page with the header or with the
        previous tensor, or have come in with the kernel's read-ahead for that one, and such a hit once sent
        every tensor of a cold file through the page cache (verify right after pack: 4.5 s of system time for
        2 GB, the fresh page-cache pages of the VM)."""
        shard, info = self.location[name]
        fd = self._uncached_direct_fd(name)
        raw = read_direct(fd, info.start, info.nbytes) if fd is not None else None
        return raw if raw is not None else read_bytes(self._file(shard), info)

    def read_as_used(self, name: str) -> tuple[torch.Tensor, ReadAsUsed | None]:
        """A tensor that is still being read when it comes back, with what tells when a prefix of its bytes is
        there (`read_direct_as_used`), where it would be read past the page cache; else read whole (`read`) and
        None."""
        fd = self._uncached_direct_fd(name)
        return (self.read(name), None) if fd is None else self._as_used(fd, name)

    def read_hashed_as_used(self, name: str) -> tuple[torch.Tensor, str | Future[str], ReadAsUsed | None]:
        """`read_as_used` and the sha256 of the stored bytes, computed as they land (a Future,
        `hash_as_read`); where it is not read past the page cache, `read_hashed`'s tensor and sha256, and None."""
        fd = self._uncached_direct_fd(name)
        if fd is None:
            return (*self.read_hashed(name), None)
        tensor, progress = self._as_used(fd, name)
        return tensor, hash_as_read(memoryview(tensor_bytes(tensor)).cast("B"), progress), progress

    def _as_used(self, fd: int, name: str) -> tuple[torch.Tensor, ReadAsUsed]:
        shard, info = self.location[name]
        raw, progress = read_direct_as_used(fd, info.start, info.nbytes,
                                            lambda into: read_bytes(self._file(shard), info, into=into))
        return tensor_from_bytes(raw, info), progress

    def _uncached_direct_fd(self, name: str) -> int | None:
        """The O_DIRECT descriptor to read a tensor with: one of at least `DIRECT_READ_MIN` bytes whose middle page
        is not in the page cache (`read_raw`), where O_DIRECT opens; else None."""
        shard, info = self.location[name]
        if info.nbytes < DIRECT_READ_MIN or in_page_cache(self._file(shard).fileno(), info.start + info.nbytes // 2):
            return None
        return self._direct_fd(shard)

    def is_cached(self, name: str) -> bool:
        """Whether a tensor's stored bytes are in the page cache (asked at its middle page, reading nothing)."""
        shard, info = self.location[name]
        return info.nbytes == 0 or in_page_cache(self._file(shard).fileno(), info.start + info.nbytes // 2)

    def hash_stored(self, name: str, *, cancel: threading.Event | None = None) -> str:
        """sha256 of a tensor's stored bytes, read in chunks into a reused buffer (nothing is kept)."""
        shard, info = self.location[name]
        return hash_range(self._file(shard).fileno(), info.start, info.nbytes, f"{self.root / shard}: tensor {name}",
                          cancel=cancel)

    def read_hashed(self, name: str, *, pinned: bool = False, hasher: Executor | None = None,
                    digest: Future[str] | None = None) -> tuple[torch.Tensor, str | Future[str]]:
        """One tensor and the sha256 of its stored bytes, from a single read; with `pinned`, read straight
        into page-locked host memory (from torch's caching host allocator, so buffers are reused and
        host-to-device copies need no staging). With `hasher`, the sha256 is computed there and comes as a
        Future, so the caller can convert the tensor while it is hashed (the bytes are not changed by either).
        With `digest` (the sha256 being computed already, e.g. by pack's pass over the source), that comes back
        and nothing is hashed here."""
        if not pinned and digest is None and hasher is None:  # hashed here: as the read goes, when past the cache
            fd = self._uncached_direct_fd(name)
            got = read_direct_hashed(fd, self.info(name).start, self.info(name).nbytes) if fd is not None else None
            if got is not None:
                return tensor_from_bytes(got[0], self.info(name)), got[1]
        if not pinned:
            raw = self.read_raw(name)
            tensor = tensor_from_bytes(raw, self.info(name))
        else:
            import torch

            from ..dtypes import TORCH_DTYPES

            shard, info = self.location[name]
            buf = torch.empty(info.nbytes, dtype=torch.uint8, pin_memory=True)
            raw = read_bytes(self._file(shard), info, into=buf.numpy()) if info.nbytes else b""
            tensor = buf.view(TORCH_DTYPES[info.dtype]).reshape(info.shape)
        if digest is not None:
            return tensor, digest
        if hasher is not None:
            return tensor, hasher.submit(_sha256_read, raw)
        return tensor, _sha256_read(raw)

    def weight_files(self) -> set[str]:
        """Files that hold weights or describe them (shards, index): not copied verbatim."""
        names = set(self.headers)
        if self.index is not None:
            names.add(INDEX_NAME)
        return names

    def other_files(self) -> list[str]:
        """Relative paths of every other regular file (tokenizer, generation config, ...), sorted.

        Raises CheckpointError naming the path for anything that cannot be read: a folder that cannot be
        listed, a file without read permission, a dangling link, something that is not a regular file."""
        skip = self.weight_files() | {CONFIG_NAME}
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root, onerror=_walk_error):
            if dirnames and len(Path(dirpath).relative_to(self.root).parts) >= MAX_FOLDER_DEPTH:
                raise CheckpointError(f"{Path(dirpath) / dirnames[0]}: folders nested more than {MAX_FOLDER_DEPTH} "
                                      "deep; a model checkpoint has no such tree: remove it from the checkpoint")
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".marlin-convert-tmp")
                                 and not (Path(dirpath) / d).relative_to(self.root).as_posix() in SKIPPED_DIRS)
            for d in dirnames:
                _check_readable(Path(dirpath) / d, self.root, folder=True)
            for fn in filenames:
                full = Path(dirpath) / fn
                rel = full.relative_to(self.root).as_posix()
                if rel in skip:
                    continue
                _check_readable(full, self.root, folder=False)
                out.append(rel)
        return sorted(out)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        for fd in self._direct.values():
            if fd is not None:
                os.close(fd)
        self._direct.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sha256_read(raw: Any) -> str:
    with stage("sha256 read tensors", len(raw)):
        return hashlib.sha256(raw).hexdigest()


def _walk_error(e: OSError) -> None:
    raise CheckpointError(f"{e.filename}: cannot read this folder ({e.strerror or e}); fix its permissions or "
                          "remove it from the checkpoint") from None


def _check_readable(path: Path, root: Path, *, folder: bool) -> None:
    """Refuse what pack could not copy whole: a link out of `root`, a dangling link, an unreadable file or
    folder, a file that is not a regular file (FIFO, socket, device)."""
    if path.is_symlink() and not stays_inside(path, root):
        raise CheckpointError(outside_link_message(path, root))
    if path.is_symlink() and not path.exists():
        raise CheckpointError(f"{path}: dangling symbolic link (its target {os.readlink(path)} does not exist)")
    if folder:
        if not path.is_dir():
            raise CheckpointError(f"{path}: not a folder")
        return
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file (a FIFO, socket or device cannot be copied)")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: cannot read (permission denied)")


def _shard_path(root: Path, shard: Any, where: Path) -> Path:
    if not isinstance(shard, str) or not shard or Path(shard).is_absolute() or ".." in Path(shard).parts:
        raise CheckpointError(f"{where}: shard name {shard!r} must be a file name inside the checkpoint directory")
    path = root / shard
    if not stays_inside(path, root):
        raise CheckpointError(f"{where}: shard {shard}: " + outside_link_message(path, root).split(": ", 1)[1])
    if not path.is_file():
        raise CheckpointError(f"{path}: shard listed in the index is missing")
    return path


def _inside(path: Path, root: Path) -> Path:
    """`path` when it stays inside `root`'s trust boundary with links resolved (`links.stays_inside`)."""
    if (path.is_symlink() or path.exists()) and not stays_inside(path, root):
        raise CheckpointError(outside_link_message(path, root))
    return path


def open_checkpoint(root: str | os.PathLike[str], *, marker_files: Iterable[str] = ()) -> Checkpoint:
    """Open a checkpoint directory: single `model.safetensors`, or shards listed by `model.safetensors.index.json`.
    `marker_files`: JSON files besides config.json to read into `json_files` when present (the formats' markers).

    Raises: CheckpointError for a missing directory, config or shard, malformed JSON or headers,
    or an index inconsistent with the shards.
    """
    root = Path(root)
    if not root.exists():
        raise CheckpointError(f"{root}: no such directory")
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a directory")
    config_path = _inside(root / CONFIG_NAME, root)
    config: dict[str, Any] = {}
    config_text = None
    if config_path.is_file():
        config = read_json(config_path)
        if not isinstance(config, dict):
            raise CheckpointError(f"{config_path}: must hold a JSON object")
        config_text = read_json_text(config_path)
    else:
        raise CheckpointError(f"{config_path}: missing (a checkpoint directory needs config.json)")
    json_files = {}
    for name in marker_files:
        if _inside(root / name, root).is_file():
            json_files[name] = read_json(root / name)
    index = index_text = None
    index_path = _inside(root / INDEX_NAME, root)
    if index_path.exists():
        index = read_index(index_path)
        index_text = read_json_text(index_path)
        if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
            raise CheckpointError(f"{index_path}: must be a JSON object with a weight_map object")
        shard_names = list(dict.fromkeys(index["weight_map"].values()))
        for shard in shard_names:
            _shard_path(root, shard, index_path)
        shard_names.sort()
    elif (root / SINGLE_NAME).exists():
        _shard_path(root, SINGLE_NAME, root)
        shard_names = [SINGLE_NAME]
    else:
        found = sorted(p.name for p in root.glob("*.safetensors"))
        if not found:
            unsupported_checkpoint(root)
        if len(found) != 1:
            what = "no .safetensors file" if not found else f"{len(found)} .safetensors files and no {INDEX_NAME}"
            raise CheckpointError(f"{root}: {what}")
        _shard_path(root, found[0], root)
        shard_names = found
    headers = {shard: read_header(root / shard) for shard in shard_names}
    return Checkpoint(root, config, config_text, index, headers, json_files, index_text)
