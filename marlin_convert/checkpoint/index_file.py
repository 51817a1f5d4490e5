"""The `model.safetensors.index.json` of a checkpoint: read and checked before any shard is opened."""
from __future__ import annotations

import os
from typing import Any

from ..errors import CheckpointError
from .json_file import read_json

__all__ = ["read_index"]


def read_index(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed index: a JSON object whose `weight_map` maps at least one tensor name to a shard name.

    Raises: CheckpointError naming the file otherwise (shard names are checked by the caller).
    """
    index = read_json(path)
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise CheckpointError(f"{path}: must be a JSON object with a weight_map object")
    weight_map = index["weight_map"]
    if not weight_map:
        raise CheckpointError(f"{path}: weight_map is empty (an index must list every tensor)")
    bad = next((name for name, shard in weight_map.items() if not isinstance(shard, str)), None)
    if bad is not None:
        raise CheckpointError(f"{path}: weight_map entry {bad!r} must name a shard file (a string)")
    return index
