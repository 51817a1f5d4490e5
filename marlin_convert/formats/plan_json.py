"""A `LayerPlan` as JSON (the manifest's `layers` and the serving config's `plan`) and back."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .record import LayerPlan

__all__ = ["plan_to_json", "plan_from_json"]


def plan_to_json(plan: LayerPlan) -> dict[str, Any]:
    data = asdict(plan)
    data["scale_dtype"] = plan.scale_dtype_name
    return data


def plan_from_json(data: dict[str, Any]) -> LayerPlan:
    return LayerPlan(**data)  # scale_dtype stays a name until read (no torch for `inspect`)
