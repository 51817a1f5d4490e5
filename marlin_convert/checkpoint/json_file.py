"""Reading the JSON files of a checkpoint or output directory (config, index, marker files, manifest).

Only regular files are read (a FIFO, device or directory is refused without blocking), at most
`MAX_JSON_BYTES`, and the parsed value may nest at most `MAX_JSON_DEPTH` levels (serde_json's limit,
which safetensors' own parser applies to headers).
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "read_regular_file", "read_json_text", "parse_json", "read_json"]

MAX_JSON_BYTES = 256 * 1024 * 1024
"""Largest JSON file read (a manifest of a model with a million tensors stays well below)."""
MAX_JSON_DEPTH = 127
"""Deepest nesting accepted: serde_json's recursion limit (128 opening brackets refuse)."""


def read_regular_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes` bytes; CheckpointError naming the file otherwise.

    The file is opened non-blocking and checked with fstat before anything is read, so a FIFO,
    socket or device is refused at once (never waited on, never read endlessly).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"{path}: not a regular file")
        if st.st_size > max_bytes:
            raise CheckpointError(f"{path}: {st.st_size} bytes, more than the {max_bytes} bytes accepted")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 24, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise CheckpointError(f"{path}: grew past the {max_bytes} bytes accepted while being read")
        return b"".join(chunks)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)


def read_json_text(path: str | os.PathLike[str], max_bytes: int = MAX_JSON_BYTES) -> str:
    """The UTF-8 text of a JSON file, read as `read_regular_file` does."""
    raw = read_regular_file(path, max_bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON (not UTF-8: {e.reason} at byte {e.start})") from None


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, `[]` is 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def parse_json(text: str, where: str | os.PathLike[str], **loads_kwargs: Any) -> Any:
    """`json.loads(text)` with the depth limit; CheckpointError naming `where` for invalid JSON."""
    try:
        value = json.loads(text, **loads_kwargs)
    except RecursionError:
        raise CheckpointError(f"{where}: not valid JSON (nested more than {MAX_JSON_DEPTH} levels deep)") from None
    except ValueError as e:
        raise CheckpointError(f"{where}: not valid JSON ({e})") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{where}: not valid JSON (nested more than {MAX_JSON_DEPTH} levels deep)")
    return value


def read_json(path: str | os.PathLike[str], max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The parsed content of a JSON file (regular file, size cap, depth limit)."""
    return parse_json(read_json_text(path, max_bytes), path)
