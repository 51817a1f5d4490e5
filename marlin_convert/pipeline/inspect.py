"""inspect: what pack would do with each tensor of a checkpoint, or what an output was converted from.

Needs no torch: headers, config files and the plan (small tensors read as numpy arrays); see ARCHITECTURE.md."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..checkpoint import open_checkpoint, open_output
from ..checkpoint.ownership import is_marlin_output
from ..dtypes import DTYPE_SIZES
from ..formats import MARKER_FILES, LayerPlan, marlin_specs
from .plan import plan_source
from .manifest_plans import manifest_plans
from .reports import InspectReport

__all__ = ["inspect_checkpoint"]


def _layer_row(p: LayerPlan) -> dict[str, Any]:
    return {"prefix": p.prefix, "n": p.n, "k": p.k, "group_size": p.group_size, "eligible": p.eligible,
            "reason": p.reason, "sym": not (p.has_zeros or p.has_shift), "act_order": p.has_perm,
            "zero_points": p.has_zeros or p.has_shift}


def inspect_checkpoint(src: str | os.PathLike[str]) -> InspectReport:
    """What `pack` would do with each tensor of a checkpoint, and why layers are not eligible.
    For a marlin-convert output: what it was converted from, its layers and tensors."""
    src = Path(src)
    if is_marlin_output(src):
        return _inspect_output(src)
    with open_checkpoint(src, marker_files=MARKER_FILES) as ckpt:
        fmt, fplan = plan_source(ckpt)
        by_name = {name: p for p in fplan.layers for name in p.sources.values()}
        tensors = []
        for name, spec in ckpt.specs().items():
            plan = by_name.get(name)
            action = "pack" if plan is not None and plan.eligible else "copy"
            reason = None if plan is None else plan.reason
            tensors.append({"name": name, "dtype": spec.dtype, "shape": list(spec.shape), "nbytes": ckpt.info(name).nbytes,
                            "action": action, "layer": plan.prefix if plan else None, "reason": reason})
        layers = [_layer_row(p) for p in fplan.layers]
        return InspectReport(path=str(src), format=fmt.name, warnings=list(fplan.warnings), layers=layers, tensors=tensors)


def _inspect_output(path: Path) -> InspectReport:
    manifest, ckpt = open_output(path, marker_files=MARKER_FILES)
    with ckpt:
        plans = manifest_plans(manifest, path)
        layers = [_layer_row(p) for p in plans.values()]
        layers += [{"prefix": prefix, "n": 0, "k": 0, "group_size": None, "eligible": False, "reason": reason,
                    "sym": None, "act_order": None, "zero_points": None}
                   for prefix, reason in manifest.get("skipped_layers", {}).items()]
        member = {f"{prefix}.{suffix}": prefix for prefix, plan in plans.items() for suffix in marlin_specs(plan)}
        tensors = [{"name": name, "dtype": spec.dtype, "shape": list(spec.shape), "nbytes": ckpt.info(name).nbytes,
                    "action": "packed" if name in member else "copied", "layer": member.get(name), "reason": None}
                   for name, spec in ckpt.specs().items()]
        source = manifest["source_tensors"]
        converted_from = {
            "format": manifest["source_format"],
            "tool_version": manifest.get("tool_version"),
            "tensors": len(source),
            "bytes": sum(math.prod(t["shape"]) * DTYPE_SIZES[t["dtype"]] for t in source.values()),
            "shards": len(manifest["source_shards"]),
        }
        return InspectReport(path=str(path), format="marlin", warnings=list(manifest.get("warnings", [])),
                             layers=layers, tensors=tensors, converted_from=converted_from)
