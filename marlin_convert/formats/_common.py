"""Checks shared by the source formats: tensor specs and Marlin eligibility (the rule itself: `layout.rules`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from ..errors import CheckpointError
from ..layout.rules import marlin_ineligibility
from .base import FormatContext, TensorSpec

if TYPE_CHECKING:
    import numpy as np

__all__ = ["expect_spec", "marlin_ineligibility", "group_count", "layer_prefixes", "not_2d", "config_int",
           "plan_array", "plan_nibbles", "permuted_g_idx"]


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


def plan_array(tensor: Any) -> np.ndarray:
    """A small tensor that `plan` reads (a numpy array, or a CPU torch tensor from another reader) as a numpy
    array: planning looks at zero points and g_idx with numpy, so `inspect` needs no torch."""
    import numpy as np

    return np.asarray(tensor)


def plan_nibbles(words: Any) -> np.ndarray:
    """int32 words `[r, w]` -> uint8 `[r, 8 w]`, value i of word j in column `8 j + i`: `layout.unpack_nibbles`
    for planning, in numpy."""
    import numpy as np

    a = np.ascontiguousarray(plan_array(words))
    raw = a.view(np.uint8).reshape(*a.shape[:-1], 4 * a.shape[-1])
    return np.stack((raw & 0xF, raw >> 4), axis=-1).reshape(*a.shape[:-1], 8 * a.shape[-1])


def permuted_g_idx(name: str, g_idx: Any, k: int, group_size: int, groups: int) -> bool:
    """Whether a layer's g_idx `[k]` differs from `k // group_size` (act-order); CheckpointError naming the
    tensor when a group index is outside `[0, groups)`."""
    import numpy as np

    a = plan_array(g_idx)
    if a.min() < 0 or a.max() >= groups:
        raise CheckpointError(f"{name}: group index out of range [0, {groups})")
    trivial = np.zeros(k, dtype=np.int32) if group_size <= 0 else np.arange(k, dtype=np.int32) // group_size
    return not np.array_equal(a, trivial)
