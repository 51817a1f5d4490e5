"""Turning a command-line source into a local directory: an existing path as is, or a Hugging Face Hub
id (`org/name`) resolved to its snapshot in the Hugging Face cache with `huggingface_hub` (downloaded
when online; with `HF_HUB_OFFLINE=1` only the local cache is used)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import CheckpointError

__all__ = ["looks_like_hub_id", "resolve_source"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_OTHER_WEIGHTS = ["*.bin", "*.pt", "*.pth", "*.gguf", "*.onnx", "*.onnx_data", "*.h5", "*.msgpack", "*.ckpt", "*.ot"]
"""Weights in formats marlin-convert does not read: not worth downloading."""


def looks_like_hub_id(text: str) -> bool:
    """`org/name` with the Hub's characters (no leading `.`, `/` or `~`, exactly one slash)."""
    return bool(_HUB_ID.match(text)) and ".." not in text


def resolve_source(src: str | os.PathLike[str], *, revision: str | None = None,
                   cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The local checkpoint directory for `src`: the path itself when it exists (or is no hub id),
    else the Hugging Face cache snapshot of the hub id `src` at `revision`.

    Raises: CheckpointError when `revision`/`cache_dir` are given for a local path, or when the hub
    id cannot be resolved (not in the cache while offline, unknown repository or revision, network error).
    """
    path = Path(src)
    if path.exists() or not looks_like_hub_id(str(src)):
        if revision is not None or cache_dir is not None:
            if path.exists():
                raise CheckpointError(f"{path}: --revision and --cache-dir apply to a Hugging Face Hub id, not a local directory")
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # declared in pyproject; only a broken install gets here
        raise CheckpointError(f"{src}: no such directory, and huggingface_hub is not installed to resolve it as a Hub id "
                              "(pip install 'huggingface_hub')") from None
    try:
        folder = snapshot_download(str(src), revision=revision, cache_dir=None if cache_dir is None else str(cache_dir),
                                   ignore_patterns=_OTHER_WEIGHTS)
    except Exception as e:  # huggingface_hub's errors (offline cache miss, unknown repo/revision, HTTP) and OSError
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        where = f" at revision {revision}" if revision else ""
        how = ("HF_HUB_OFFLINE is set and it is not in the local cache" if offline else type(e).__name__)
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{src}: no such directory, and the Hugging Face Hub model {src}{where} could not be "
                              f"resolved ({how}{': ' + detail if detail and not offline else ''})") from None
    return Path(folder)
