"""optimum-quanto qint4: `<m>.weight._data._data` uint8 `[R/2, c]` (grouped rows packed in halves:
row r low nibble, row r + R/2 high nibble), `<m>.weight._scale` and float `<m>.weight._shift` `[R, 1]`,
with `W = scale * q - shift`. Detected from `quanto_qmap.json`.

quanto does not store a layer's `[n, k]` shape; it is derived from config.json for the usual
decoder projection names (q/k/v/o_proj, gate/up/down_proj, w1/w2/w3), and layers whose shape
cannot be derived are copied.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ..errors import CheckpointError, UnknownFormatError
from ._common import expect_spec, layer_prefixes, marlin_ineligibility, not_2d
from .base import Format, FormatContext, FormatName, FormatPlan, TensorReader
from .record import LayerPlan, QuantizedLinear

if TYPE_CHECKING:
    import torch

__all__ = ["QuantoFormat", "QMAP_NAMES", "linear_shape_from_config"]

QMAP_NAMES = ("quanto_qmap.json", "quantization_map.json")
DATA, SCALE, SHIFT = "weight._data._data", "weight._scale", "weight._shift"


def _qmap(ctx: FormatContext) -> dict[str, Any] | None:
    for name in QMAP_NAMES:
        qmap = ctx.json_files.get(name)
        if isinstance(qmap, dict):
            return qmap
    return None


_SHAPE_KEYS = ("hidden_size", "d_model", "n_embd", "num_attention_heads", "num_key_value_heads", "head_dim",
               "intermediate_size", "moe_intermediate_size")


def _check_sizes(config: Mapping[str, Any]) -> None:
    """The config sizes a shape is derived from are positive integers where given (null means not given)."""
    for key in _SHAPE_KEYS:
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise CheckpointError(f"config.json: {key} {value!r} is not a positive integer")


def linear_shape_from_config(prefix: str, config: Mapping[str, Any]) -> tuple[int, int] | None:
    """`(n, k)` of a decoder projection from its name and the model config, or None when unknown.

    Raises: CheckpointError when a size it would use is not a positive integer.
    """
    _check_sizes(config)
    hidden = config.get("hidden_size") or config.get("d_model") or config.get("n_embd")
    heads = config.get("num_attention_heads")
    if not isinstance(hidden, int):
        return None
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or (hidden // heads if isinstance(heads, int) and heads else None)
    inter = config.get("intermediate_size")
    if ".experts." in prefix and isinstance(config.get("moe_intermediate_size"), int):
        inter = config["moe_intermediate_size"]
    last = prefix.rsplit(".", 1)[-1]
    attn = heads * head_dim if isinstance(heads, int) and isinstance(head_dim, int) else None
    kv = kv_heads * head_dim if isinstance(kv_heads, int) and isinstance(head_dim, int) else None
    rules = {
        "q_proj": (attn, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden), "o_proj": (hidden, attn),
        "gate_proj": (inter, hidden), "up_proj": (inter, hidden), "down_proj": (hidden, inter),
        "w1": (inter, hidden), "w3": (inter, hidden), "w2": (hidden, inter),
    }
    n, k = rules.get(last, (None, None))
    return (n, k) if isinstance(n, int) and isinstance(k, int) else None


@Format.register(FormatName.QUANTO)
class QuantoFormat(Format):
    """optimum-quanto qint4 weights with a float shift. qint2, qint8 and qfloat8 weights are copied."""

    marker_files = QMAP_NAMES

    @classmethod
    def source_config(cls, ctx: FormatContext) -> dict[str, Any] | None:
        """The quantization map, when config.json has no quantization_config of another tool."""
        return _qmap(ctx) if ctx.quantization_config is None else None

    @classmethod
    def plan(cls, ctx: FormatContext, read: TensorReader) -> FormatPlan:
        qmap = cls.detected_config(ctx)
        layers = []
        for prefix, entry in sorted(qmap.items()):
            weights = entry.get("weights") if isinstance(entry, dict) else None
            names = {role: f"{prefix}.{suffix}" for role, suffix in (("data", DATA), ("scale", SCALE), ("shift", SHIFT))}
            sources = {role: name for role, name in names.items() if name in ctx.tensors}
            plan = LayerPlan(prefix=prefix, format=QuantoFormat.name, sources=sources)
            if weights != "qint4":
                plan.reason = f"quanto weights {weights!r} are not qint4"
            else:
                _check_layer(ctx, plan, names)
            layers.append(plan)
        known = {p.prefix for p in layers}
        for prefix in layer_prefixes(ctx.tensors, "." + DATA):
            if prefix not in known:
                raise UnknownFormatError(f"{prefix}.{DATA}: quantized tensor not listed in the quanto quantization map")
        return FormatPlan(layers=layers, source_quantization_config={"quanto_qmap": qmap})

    @classmethod
    def decode(cls, plan: LayerPlan, tensors: Mapping[str, torch.Tensor]) -> QuantizedLinear:
        import torch

        from .codes import DenseCodes

        data = tensors["data"]
        rows = torch.cat((data & 0xF, data >> 4), dim=0)  # [R, c]
        g = plan.num_groups
        return QuantizedLinear.of_plan(plan, DenseCodes(rows.reshape(plan.n, plan.k)),
                                       tensors["scale"].reshape(plan.n, g).t().contiguous(),
                                       shift=tensors["shift"].reshape(plan.n, g).t().contiguous())

    @classmethod
    def encode(cls, rec: QuantizedLinear, plan: LayerPlan, *, stream: bool = False) -> dict[str, torch.Tensor]:
        columns = plan.extra["columns"]
        rows = rec.codes.full().reshape(-1, columns)
        half = rows.shape[0] // 2
        assert rec.shift is not None
        return {
            "data": rows[:half] | (rows[half:] << 4),
            "scale": rec.scales.t().reshape(-1, 1).contiguous(),
            "shift": rec.shift.t().reshape(-1, 1).contiguous(),
        }


def _check_layer(ctx: FormatContext, plan: LayerPlan, names: dict[str, str]) -> None:
    data = expect_spec(ctx, names["data"], ("U8",), None)
    plan.reason = not_2d(names["data"], data.shape)
    if plan.reason is not None:
        return
    half_rows, columns = data.shape
    scale = expect_spec(ctx, names["scale"], ("F16", "BF16"), None)
    rows = scale.shape[0]
    if scale.shape != (rows, 1) or half_rows != -(-rows // 2):
        plan.reason = f"{names['scale']}: shape {list(scale.shape)} does not fit {names['data']} {list(data.shape)}"
        return
    shift = expect_spec(ctx, names["shift"], ("F16", "BF16", "F32", "U8", "I8"), (rows, 1))
    if shift.dtype in ("U8", "I8"):
        plan.reason = "integer zero-point shift (quanto zeropoint=True) is not supported"
        return
    if shift.dtype != scale.dtype:
        plan.reason = f"shift dtype {shift.dtype} differs from scale dtype {scale.dtype}"
        return
    shape = linear_shape_from_config(plan.prefix, ctx.config)
    if shape is None or shape[0] * shape[1] != rows * columns:
        plan.reason = "weight shape unknown: quanto does not store it and config.json does not give it for this module"
        return
    n, k = shape
    if rows % 2:
        plan.reason = f"odd number of quantized rows ({rows})"
        return
    group_size = -1 if columns == k else columns
    plan.n, plan.k, plan.group_size, plan.num_groups = n, k, group_size, rows // n
    plan.scale_dtype = scale.dtype
    plan.has_shift = True
    plan.extra = {"columns": columns}
    plan.reason = marlin_ineligibility(n, k, group_size)
