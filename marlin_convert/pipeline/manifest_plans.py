"""The manifest's `layers` as `LayerPlan`s, checked against the manifest's own tensor tables: a layer that
names a tensor the manifest does not hold, or has fields of the wrong type, is bad input (exit 2)."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from ..checkpoint import MANIFEST_NAME
from ..dtypes import DTYPE_SIZES
from ..errors import CheckpointError
from ..formats import LayerPlan, marlin_specs
from ..formats.plan_json import plan_from_json

__all__ = ["manifest_plans"]

_TYPES: dict[str, tuple[type, ...]] = {
    "prefix": (str,), "format": (str,), "sources": (dict,), "n": (int,), "k": (int,), "group_size": (int,),
    "num_groups": (int,), "scale_dtype": (str,), "has_zeros": (bool,), "has_shift": (bool,), "has_perm": (bool,),
    "reason": (str, type(None)), "extra": (dict,),
}
_FIELDS = {f.name for f in fields(LayerPlan)}


def _plan(prefix: str, data: dict[str, Any], manifest: dict[str, Any], where: Path) -> LayerPlan:
    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"{where}: malformed manifest: layer {prefix!r}: {problem}")

    if set(data) != _FIELDS:
        raise bad(f"fields must be exactly {sorted(_FIELDS)}")
    for key, types in _TYPES.items():
        value = data[key]
        if not isinstance(value, types) or (types == (int,) and isinstance(value, bool)):
            raise bad(f"{key} has the wrong type")
    if data["prefix"] != prefix or data["scale_dtype"] not in DTYPE_SIZES or data["reason"] is not None:
        raise bad("prefix, scale_dtype or reason is not valid for a converted layer")
    if not all(0 < data[key] < 2**31 for key in ("n", "k", "num_groups")):
        raise bad("n, k and num_groups must be positive")
    sources = data["sources"]
    if not sources or not all(isinstance(v, str) and v in manifest["source_tensors"] for v in sources.values()):
        raise bad("sources must name tensors of source_tensors")
    plan = plan_from_json(data)
    for suffix, spec in marlin_specs(plan).items():
        meta = manifest["output_tensors"].get(f"{prefix}.{suffix}")
        if meta is None or meta["dtype"] != spec.dtype or tuple(meta["shape"]) != spec.shape:
            raise bad(f"output tensor {prefix}.{suffix} is missing from output_tensors or has another dtype/shape")
    return plan


def manifest_plans(manifest: dict[str, Any], root: Path) -> dict[str, LayerPlan]:
    """Each converted layer's plan, by prefix; no source tensor in two layers."""
    where = root / MANIFEST_NAME
    plans = {prefix: _plan(prefix, data, manifest, where) for prefix, data in manifest["layers"].items()}
    members = [name for p in plans.values() for name in p.sources.values()]
    if len(members) != len(set(members)):
        raise CheckpointError(f"{where}: malformed manifest: a source tensor belongs to two layers")
    copied = set(manifest["source_tensors"]) - set(members)
    written = copied | {f"{prefix}.{suffix}" for prefix, plan in plans.items() for suffix in marlin_specs(plan)}
    if written != set(manifest["output_tensors"]):
        raise CheckpointError(f"{where}: malformed manifest: output_tensors are not the copied source tensors plus "
                              "each layer's Marlin tensors")
    return plans
