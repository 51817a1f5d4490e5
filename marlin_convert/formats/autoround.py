"""Intel AutoRound (`quant_method: "auto-round"`): int4 layers stored as GPTQ or AWQ words, chosen by
`packing_format`, with per-layer overrides in `extra_config`. The layers themselves are GPTQ's and
AWQ's: this module only reads AutoRound's config and hands each layer to those formats.

`packing_format` (auto-round 0.16.1, `inference/backend.py`, `export/export_to_autoround/export.py`):
- `auto_round:auto_gptq`: GPTQ words `[k/8, n]`, qzeros store zero - 1 (v1), no g_idx;
- `auto_round` and `auto_round:gptqmodel`: GPTQ words with the true zero (gptqmodel adds g_idx);
- `auto_round:auto_awq`: AWQ GEMM words `[k, n/8]`, true zeros.
The loader's aliases are accepted: a missing key, `auto` and `auto_round:gptq` mean auto_gptq,
`auto_round:awq` means auto_awq. Layers that `extra_config` keeps at 16 bits are plain weights; layers
at other bit widths, other data types or quantized activations are copied, each with its reason.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Mapping, Union

from ..errors import CheckpointError, UnknownFormatError
from .awq import AwqFormat
from .awq import _plan_layer as _plan_awq_layer
from .base import Format, FormatContext, FormatName, FormatPlan, TensorReader
from .config_regex import config_regex
from .gptq import GptqFormat
from .gptq import _finish_zero_plan, _plan_layer as _plan_gptq_layer
from .record import LayerPlan, QuantizedLinear

if TYPE_CHECKING:
    import torch

    from .codes import RowBlocks

__all__ = ["AutoRoundFormat", "PACKINGS"]

QUANT_METHOD = "auto-round"
PACKINGS: dict[str, tuple[str, str | None]] = {
    "auto_round:auto_gptq": ("gptq", "v1"),
    "auto_round": ("gptq", "v2"),
    "auto_round:gptqmodel": ("gptq", "v2"),
    "auto_round:auto_awq": ("awq", None),
}
"""packing_format -> (word layout, GPTQ zero convention: v1 stores zero - 1, v2 the zero)."""
_ALIASES = {"auto": "auto_round:auto_gptq", "auto_round:gptq": "auto_round:auto_gptq", "auto_round:awq": "auto_round:auto_awq"}
_LAYOUTS: dict[str, type[Format]] = {"gptq": GptqFormat, "awq": AwqFormat}
_SCHEME_KEYS = ("bits", "group_size", "sym", "data_type", "act_bits")
_DEFAULTS = {"group_size": 128, "sym": True, "data_type": "int", "act_bits": 16}


def _autoround_config(ctx: FormatContext) -> dict[str, Any] | None:
    qc = ctx.quantization_config
    if qc is not None and str(qc.get("quant_method", "")).lower().replace("_", "-") == QUANT_METHOD:
        return qc
    return None


def _packing(qc: Mapping[str, Any], warnings: list[str]) -> str:
    """The canonical packing_format, or UnknownFormatError for one that holds no GPTQ/AWQ words."""
    if "packing_format" not in qc:
        warnings.append("auto-round config has no packing_format: reading auto_round:auto_gptq, as auto-round's loader does")
    raw = qc.get("packing_format", "auto_round:auto_gptq")
    packing = _ALIASES.get(str(raw), str(raw))
    if packing not in PACKINGS:
        raise UnknownFormatError(
            f"auto-round packing_format {raw!r} is not supported (supported: {', '.join(PACKINGS)})"
        )
    return packing


def _layer_schemes(qc: Mapping[str, Any], prefixes: list[str], known: set[str]) -> dict[str, dict[str, Any]]:
    """Each layer's scheme as auto-round's loader builds it (`inference/convert_model.py::get_layer_config`):
    an `extra_config` key equal to the layer's name wins, else the first key (in file order) that is a regex
    found in the name (keys naming a layer in `known` are never regexes); each field not overridden comes
    from the top level."""
    default = {key: qc.get(key, _DEFAULTS.get(key)) for key in _SCHEME_KEYS}
    extra = _extra_config(qc)
    patterns = []
    for key in extra:
        if key in known:
            continue
        try:
            re.compile(key)
        except re.error:  # the loader skips keys that are neither a layer name nor a valid regex
            continue
        patterns.append((config_regex(key, "config.json: auto-round extra_config key"), key))
    schemes = {}
    for prefix in prefixes:
        override = extra.get(prefix)
        if override is None:
            override = next((extra[key] for pattern, key in patterns if pattern.search(prefix)), {})
        schemes[prefix] = {key: override.get(key, default[key]) for key in _SCHEME_KEYS}
    return schemes


def _extra_config(qc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """`extra_config`, checked to map names to objects (CheckpointError otherwise)."""
    extra = qc.get("extra_config") or {}
    if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
        raise CheckpointError("config.json: quantization_config.extra_config must map layer names to objects")
    return extra


def _group_size(scheme: Mapping[str, Any], prefix: str) -> int:
    value = scheme["group_size"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"config.json: auto-round group_size {value!r} for {prefix} is not an integer")
    return value


def _why_not(scheme: Mapping[str, Any]) -> str | None:
    bits, data_type, act_bits = scheme["bits"], str(scheme["data_type"]), scheme["act_bits"]
    if act_bits is not None and (isinstance(act_bits, bool) or not isinstance(act_bits, int)):
        raise CheckpointError(f"config.json: auto-round act_bits {act_bits!r} is not an integer")
    if data_type != "int":
        return f"auto-round data_type {data_type!r} is not int"
    if bits != 4:
        return f"auto-round layer quantized to {bits} bits; only 4-bit layers convert to Marlin"
    if act_bits is not None and act_bits < 16:
        return f"auto-round layer with {act_bits}-bit activations (a different packing); only weight-only int4 converts"
    return None


def _stored_bits(ctx: FormatContext, prefix: str) -> int | None:
    """Bits per code implied by the stored shapes: qzeros packs n zeros along dim 1 in both layouts."""
    qzeros, scales = ctx.tensors.get(f"{prefix}.qzeros"), ctx.tensors.get(f"{prefix}.scales")
    if qzeros is None or scales is None or len(qzeros.shape) != 2 or len(scales.shape) != 2 or not scales.shape[1]:
        return None
    return 32 * qzeros.shape[1] // scales.shape[1]


def _copied(ctx: FormatContext, prefix: str, reason: str) -> LayerPlan:
    """A layer copied verbatim: its own tensors (`<prefix>.<role>`, not those of sub-modules) with the reason."""
    sources = {name[len(prefix) + 1 :]: name for name in ctx.tensors
               if name.startswith(prefix + ".") and "." not in name[len(prefix) + 1 :]}
    return LayerPlan(prefix=prefix, format=AutoRoundFormat.name, sources=sources, reason=reason)


def _copied_words(ctx: FormatContext, prefix: str, reason: str, layout: str, bits: Any) -> LayerPlan:
    """A layer of packed words that is not converted, with n and k read from its shapes where they tell."""
    plan = _copied(ctx, prefix, reason)
    qweight, scales = ctx.tensors.get(f"{prefix}.qweight"), ctx.tensors.get(f"{prefix}.scales")
    if isinstance(bits, int) and 0 < bits <= 32 and qweight is not None and scales is not None \
            and len(qweight.shape) == 2 and len(scales.shape) == 2:
        plan.n = scales.shape[1]
        plan.k = qweight.shape[0] if layout == "awq" else qweight.shape[0] * 32 // bits
    return plan


def _dense_layers(ctx: FormatContext, quantized: list[str]) -> list[str]:
    """Prefixes of the 2-D `.weight` tensors of layers that have no packed words."""
    done = set(quantized)
    return sorted(name[: -len(".weight")] for name, spec in ctx.tensors.items()
                  if name.endswith(".weight") and len(spec.shape) == 2 and name[: -len(".weight")] not in done)


def _dense_overrides(ctx: FormatContext, qc: Mapping[str, Any], quantized: list[str]) -> list[LayerPlan]:
    """Layers that `extra_config` keeps at 16 bits or more: plain `.weight` tensors, reported as copied."""
    if not _extra_config(qc):
        return []
    dense = _dense_layers(ctx, quantized)
    plans = []
    for prefix, scheme in _layer_schemes(qc, dense, set(dense) | set(quantized)).items():
        bits = scheme["bits"]
        if not isinstance(bits, int) or isinstance(bits, bool) or bits < 16 or bits == qc.get("bits"):  # only layers an override took out
            continue
        plan = _copied(ctx, prefix, f"auto-round extra_config keeps this layer at {bits} bits (a plain weight, not quantized)")
        plan.n, plan.k = ctx.tensors[f"{prefix}.weight"].shape
        plans.append(plan)
    return plans


def _zero_format(label: str, evidence: dict[str, str], warnings: list[str]) -> str:
    """The GPTQ zero convention: the packing's, unless every symmetric layer's stored words say otherwise."""
    found = set(evidence.values())
    if len(found) == 1 and found != {label}:
        actual = found.pop()
        warnings.append(
            f"auto-round packing_format implies {label} zero points but the symmetric layers' qzeros are {actual} "
            f"({'0x88888888' if actual == 'v2' else '0x77777777'}): using {actual}"
        )
        return actual
    return label


@Format.register(FormatName.AUTO_ROUND)
class AutoRoundFormat(Format):
    """AutoRound int4 in any of its GPTQ- or AWQ-word packings; layers decode and encode as GPTQ or AWQ."""

    @classmethod
    def source_config(cls, ctx: FormatContext) -> dict[str, Any] | None:
        return _autoround_config(ctx)

    @classmethod
    def plan(cls, ctx: FormatContext, read: TensorReader) -> FormatPlan:
        qc = _autoround_config(ctx)
        assert qc is not None
        warnings: list[str] = []
        packing = _packing(qc, warnings)
        layout, label = PACKINGS[packing]
        prefixes = sorted(name[: -len(".qweight")] for name in ctx.tensors if name.endswith(".qweight"))
        schemes = _layer_schemes(qc, prefixes, set(prefixes) | set(_dense_layers(ctx, prefixes)))
        layers: list[LayerPlan] = []
        evidence: dict[str, str] = {}
        for prefix in prefixes:
            scheme = schemes[prefix]
            reason = _why_not(scheme)
            stored = _stored_bits(ctx, prefix)
            if reason is None and stored is not None and stored != 4:
                reason = f"auto-round layer stored as {stored}-bit words although its config says 4 bits"
            if reason is not None:
                layers.append(_copied_words(ctx, prefix, reason, layout, stored or scheme["bits"]))
                continue
            group_size = _group_size(scheme, prefix)
            if layout == "awq":
                plan = _plan_awq_layer(ctx, read, prefix, group_size, None)
            else:
                plan, seen = _plan_gptq_layer(ctx, read, prefix, group_size)
                if seen is not None and scheme["sym"]:
                    evidence[prefix] = seen
            plan.format = cls.name
            plan.extra["layout"] = layout
            plan.extra["packing_format"] = packing
            layers.append(plan)
        if layout == "gptq":
            zero_format = _zero_format(str(label), evidence, warnings)
            for plan in layers:
                if plan.extra.get("layout") == "gptq":
                    _finish_zero_plan(plan, zero_format, read)
        layers.extend(_dense_overrides(ctx, qc, prefixes))
        return FormatPlan(layers=layers, warnings=warnings, source_quantization_config=qc)

    @classmethod
    def decode(cls, plan: LayerPlan, tensors: Mapping[str, torch.Tensor]) -> QuantizedLinear:
        return _LAYOUTS[plan.extra["layout"]].decode(plan, tensors)

    @classmethod
    def row_sliced(cls, plan: LayerPlan) -> frozenset[str]:
        return _LAYOUTS[plan.extra["layout"]].row_sliced(plan)

    @classmethod
    def encode(cls, rec: QuantizedLinear, plan: LayerPlan, *, stream: bool = False) -> dict[str, Union[torch.Tensor, RowBlocks]]:
        return _LAYOUTS[plan.extra["layout"]].encode(rec, plan, stream=stream)
