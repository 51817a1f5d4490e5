"""Summaries for `inspect`: layers grouped by their name with layer numbers replaced by `*`
(`model.layers.*.mlp.down_proj`), so a 16-block model reads as a few rows. Pure data, no I/O."""
from __future__ import annotations

import re
from typing import Any

__all__ = ["group_pattern", "layer_groups", "totals"]

_NUMBER = re.compile(r"(?<=\.)\d+(?=\.|$)")


def group_pattern(prefix: str) -> str:
    """`model.layers.12.mlp.experts.3.down_proj` -> `model.layers.*.mlp.experts.*.down_proj`."""
    return _NUMBER.sub("*", prefix)


def _describe(layer: dict[str, Any]) -> tuple[Any, ...]:
    return (layer["group_size"], layer.get("sym"), layer.get("act_order"), layer["eligible"], layer["reason"])


def layer_groups(layers: list[dict[str, Any]], tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (name pattern, group size, sym, act-order, eligibility, reason), in first-seen order,
    with the number of layers, their tensors and bytes."""
    tensor_bytes: dict[str, int] = {}
    tensor_count: dict[str, int] = {}
    for t in tensors:
        if t.get("layer"):
            tensor_bytes[t["layer"]] = tensor_bytes.get(t["layer"], 0) + t.get("nbytes", 0)
            tensor_count[t["layer"]] = tensor_count.get(t["layer"], 0) + 1
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for layer in layers:
        key = (group_pattern(layer["prefix"]), *_describe(layer))
        row = rows.get(key)
        if row is None:
            row = rows[key] = {"pattern": key[0], "layers": 0, "tensors": 0, "bytes": 0, "n": set(), "k": set(),
                               "group_size": layer["group_size"], "sym": layer.get("sym"),
                               "act_order": layer.get("act_order"), "eligible": layer["eligible"],
                               "reason": layer["reason"]}
        row["layers"] += 1
        row["tensors"] += tensor_count.get(layer["prefix"], 0)
        row["bytes"] += tensor_bytes.get(layer["prefix"], 0)
        row["n"].add(layer["n"])
        row["k"].add(layer["k"])
    for row in rows.values():
        row["n"], row["k"] = sorted(row["n"]), sorted(row["k"])
    return list(rows.values())


def totals(layers: list[dict[str, Any]], tensors: list[dict[str, Any]]) -> dict[str, int]:
    """Counts and bytes over the whole checkpoint."""
    eligible = {layer["prefix"] for layer in layers if layer["eligible"]}
    packed = [t for t in tensors if t.get("layer") in eligible]
    return {
        "layers": len(layers),
        "eligible_layers": len(eligible),
        "tensors": len(tensors),
        "packed_tensors": len(packed),
        "copied_tensors": len(tensors) - len(packed),
        "bytes": sum(t.get("nbytes", 0) for t in tensors),
        "packed_bytes": sum(t.get("nbytes", 0) for t in packed),
    }
