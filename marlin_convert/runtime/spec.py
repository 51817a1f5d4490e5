"""What the runtime needs to know about each converted layer, as written into `quantization_config`.

Pure data: no torch, no transformers. `pack` calls `describe_layers` on its layer plans; the
transformers quantizer calls `layer_spec` to build each `MarlinLinear` on the meta device with the exact
tensor shapes and dtypes of the files, so that a mis-shaped tensor is a load error, not a silent cast.

The description is defaults plus per-layer exceptions (a 70B checkpoint with 560 alike layers adds a
handful of keys, not 560 entries):

    {"quant_method": "marlin", "bits": 4, "group_size": 128, "sym": true, "desc_act": false,
     "zero_point": null | "int" | "float", "scale_dtype": "float16" | "bfloat16",
     "layer_overrides": {"model.layers.0.mlp.down_proj": {"group_size": -1}, ...},
     "modules_to_not_convert": ["lm_head", ...], "dense_on_load": {prefix: {...}}}

`group_size`, `sym` and `desc_act` keep the meaning legacy Marlin readers give them (most common group
size; no layer has zero points; some layer has act-order). `desc_act` is also the act-order default.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

__all__ = ["LayerSpec", "describe_layers", "layer_spec", "ZERO_POINT_KINDS", "SCALE_DTYPES"]

ZERO_POINT_KINDS = (None, "int", "float")
"""None: symmetric (zero 8); "int": Marlin int4 zero points `z`; "float": optimum-quanto's float `shift`."""
SCALE_DTYPES = ("float16", "bfloat16")
_KEYS = ("group_size", "zero_point", "act_order", "scale_dtype")


@dataclass(frozen=True)
class LayerSpec:
    """One converted linear layer's tensor set (DESIGN §5) apart from its shape."""

    group_size: int
    """32, 64, 128, or -1 (one group spanning k)."""
    zero_point: str | None
    """None, "int" (tensor `z`) or "float" (tensor `shift`)."""
    act_order: bool
    """True when the layer has `perm` and `g_idx`."""
    scale_dtype: str
    """"float16" or "bfloat16": the dtype of `s` (and `shift`)."""

    def as_dict(self) -> dict[str, Any]:
        return {"group_size": self.group_size, "zero_point": self.zero_point, "act_order": self.act_order,
                "scale_dtype": self.scale_dtype}


def _most_common(values: Iterable[Any]) -> Any:
    counts = Counter(values)
    return max(counts.items(), key=lambda kv: (kv[1], str(kv[0])))[0]


def describe_layers(specs: Mapping[str, LayerSpec]) -> dict[str, Any]:
    """`quantization_config` entries (besides quant_method/bits) describing every converted layer."""
    if not specs:
        return {}
    group_size = _most_common(s.group_size for s in specs.values())
    zero_points = [s.zero_point for s in specs.values()]
    default_zero = _most_common(z for z in zero_points if z is not None) if any(zero_points) else None
    defaults = LayerSpec(
        group_size=group_size,
        zero_point=default_zero,
        act_order=any(s.act_order for s in specs.values()),
        scale_dtype=_most_common(s.scale_dtype for s in specs.values()),
    )
    overrides = {}
    for prefix, spec in specs.items():
        diff = {k: v for k, v in spec.as_dict().items() if v != defaults.as_dict()[k]}
        if diff:
            overrides[prefix] = diff
    return {
        "group_size": defaults.group_size,
        "sym": not any(zero_points),
        "desc_act": defaults.act_order,
        "zero_point": defaults.zero_point,
        "scale_dtype": defaults.scale_dtype,
        "layer_overrides": overrides,
    }


def layer_spec(config: Mapping[str, Any], prefix: str) -> LayerSpec:
    """The spec of layer `prefix` from a `quantization_config` written by `describe_layers`.

    Raises: ValueError naming the key when the config holds a value the runtime does not know.
    """
    values = {
        "group_size": config.get("group_size", 128),
        "zero_point": config.get("zero_point", None if config.get("sym", True) else "int"),
        "act_order": bool(config.get("desc_act", False)),
        "scale_dtype": config.get("scale_dtype", "float16"),
    }
    values.update((config.get("layer_overrides") or {}).get(prefix, {}))
    unknown = set(values) - set(_KEYS)
    if unknown:
        raise ValueError(f"quantization_config.layer_overrides[{prefix!r}]: unknown key {sorted(unknown)[0]!r}")
    spec = LayerSpec(**values)
    if spec.zero_point not in ZERO_POINT_KINDS:
        raise ValueError(f"quantization_config: zero_point {spec.zero_point!r} of {prefix} is not one of {ZERO_POINT_KINDS}")
    if spec.scale_dtype not in SCALE_DTYPES:
        raise ValueError(f"quantization_config: scale_dtype {spec.scale_dtype!r} of {prefix} is not one of {SCALE_DTYPES}")
    if not isinstance(spec.group_size, int) or not (spec.group_size == -1 or spec.group_size > 0):
        raise ValueError(f"quantization_config: group_size {spec.group_size!r} of {prefix} is not a positive int or -1")
    return spec
