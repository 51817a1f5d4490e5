"""Checks shared by the source formats: tensor specs and Marlin eligibility (the rule itself: `layout.rules`)."""
from __future__ import annotations

from typing import Any, Iterable

from ..errors import CheckpointError
from ..layout.rules import marlin_ineligibility
from .base import FormatContext, TensorSpec

__all__ = ["expect_spec", "marlin_ineligibility", "group_count", "layer_prefixes", "not_2d", "config_int"]


def expect_spec(ctx: FormatContext, name: str, dtypes: Iterable[str], shape: tuple[int, ...] | None) -> TensorSpec:
    """The spec of tensor `name`, or CheckpointError naming the tensor, what was expected and what was found."""
    spec = ctx.tensors.get(name)
    allowed = tuple(dtypes)
    if spec is None:
        raise CheckpointError(f"{name}: tensor missing")
    if spec.dtype not in allowed:
        raise CheckpointError(f"{name}: dtype {spec.dtype}, expected {' or '.join(allowed)}")
    if shape is not None and spec.shape != shape:
        raise CheckpointError(f"{name}: shape {list(spec.shape)}, expected {list(shape)}")
    return spec


def config_int(value: Any, what: str) -> int:
    """An integer setting from config.json (`what` names it), or CheckpointError on one line: a string,
    null, list, object, float or boolean is not silently converted."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"config.json: {what} {value!r} is not an integer")
    return value


def group_count(k: int, group_size: int) -> int:
    """Number of groups along K (1 when one group spans K)."""
    return 1 if group_size <= 0 else -(-k // group_size)


def layer_prefixes(names: Iterable[str], suffix: str) -> list[str]:
    """Prefixes of every tensor name ending in `suffix` (e.g. ".qweight"), in sorted order."""
    return sorted(name[: -len(suffix)] for name in names if name.endswith(suffix))


def not_2d(name: str, shape: tuple[int, ...]) -> str | None:
    """The reason a packed weight that is not 2-D (e.g. stacked 3-D experts) is copied, or None."""
    if len(shape) == 2:
        return None
    return f"{name} is {len(shape)}-D {list(shape)}; only 2-D per-layer weights are converted (stacked experts are copied)"
