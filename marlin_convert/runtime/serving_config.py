"""What `pack` adds to `quantization_config` so that the output loads with transformers (`runtime.hf`):
the layer description of `runtime.spec`, the modules that stayed dense, and the quantized layers that
stayed in their source format (loaded dense)."""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Iterable, Mapping

import torch

from ..formats import LayerPlan, TensorSpec
from ..formats._common import marlin_ineligibility
from .spec import LayerSpec, describe_layers

__all__ = ["plan_spec", "serving_entries"]

_SCALE_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
_ZERO_ROLES = ("qzeros", "weight_zero_point")
"""Source roles holding integer zero points (GPTQ, AWQ / compressed-tensors)."""


def plan_spec(plan: LayerPlan) -> LayerSpec:
    """The runtime spec of a converted layer."""
    zero = "int" if plan.has_zeros else "float" if plan.has_shift else None
    return LayerSpec(group_size=plan.group_size, zero_point=zero, act_order=plan.has_perm,
                     scale_dtype=_SCALE_DTYPES[plan.scale_dtype])


def _plan_json(plan: LayerPlan) -> dict[str, Any]:
    from ..dtypes import DTYPE_NAMES

    return {**asdict(plan), "scale_dtype": DTYPE_NAMES[plan.scale_dtype]}


def serving_entries(converted: Iterable[LayerPlan], unconverted: Iterable[LayerPlan], format_name: str,
                    copied: Mapping[str, TensorSpec]) -> dict[str, Any]:
    """`quantization_config` keys besides quant_method/bits.

    Args:
        converted / unconverted: the layer plans `pack` converted / left in the source format.
        copied: every tensor copied verbatim, by name.
    Returns: the `runtime.spec` description plus `modules_to_not_convert` (every module with a copied 2-D
        `.weight`, and every unconverted quantized layer) and `dense_on_load` (per unconverted quantized
        layer: the source format, its plan, and its tensors' suffixes, dtypes and shapes), and
        `unloadable_layers` (quantized layers left in a form the runtime cannot load, with the reason).
    """
    described = describe_layers({p.prefix: plan_spec(p) for p in converted})
    dense = sorted(name[: -len(".weight")] for name, spec in copied.items()
                   if name.endswith(".weight") and len(spec.shape) == 2)
    dense_on_load, unloadable = {}, {}
    for plan in unconverted:
        lead = f"{plan.prefix}."
        roles = {role: name[len(lead):] for role, name in plan.sources.items() if name.startswith(lead)}
        shape_reason = plan.n and plan.k and plan.reason == marlin_ineligibility(plan.n, plan.k, plan.group_size)
        if len(roles) != len(plan.sources) or not shape_reason:
            unloadable[plan.prefix] = plan.reason or "not convertible"
            continue
        # formats check zero points only for eligible layers: decode with them whenever the layer has some
        plan = replace(plan, has_zeros=any(r in plan.sources for r in _ZERO_ROLES))
        dense_on_load[plan.prefix] = {
            "format": format_name, "plan": _plan_json(plan), "roles": roles,
            "tensors": {roles[r]: {"dtype": copied[n].dtype, "shape": list(copied[n].shape)}
                        for r, n in plan.sources.items() if n in copied},
        }
    return {**described, "modules_to_not_convert": sorted(set(dense) | {p.prefix for p in unconverted}),
            "dense_on_load": dense_on_load, "unloadable_layers": unloadable}
