"""GPTQ (AutoGPTQ / GPTQModel / transformers), 4-bit, v1 and v2 zero points, optional act-order."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Union

from ..errors import CheckpointError, UnknownFormatError
from ._common import (config_int, expect_spec, group_count, layer_prefixes, marlin_ineligibility, not_2d, permuted_g_idx,
                      plan_array, plan_nibbles)
from .config_regex import config_regex
from .base import Format, FormatContext, FormatName, FormatPlan, TensorReader
from .record import LayerPlan, QuantizedLinear, trivial_g_idx

if TYPE_CHECKING:
    import torch

    from .codes import RowBlocks

__all__ = ["GptqFormat", "gptq_quant_config", "dynamic_override"]

SCALE_DTYPES = ("F16", "BF16")
_V1_SYM_WORD = 0x77777777
_V2_SYM_WORD = -0x77777778  # 0x88888888 as int32


def gptq_quant_config(ctx: FormatContext) -> dict[str, Any] | None:
    """The GPTQ quantization config: config.json's `quantization_config`, else AutoGPTQ's quantize_config.json."""
    qc = ctx.quantization_config
    if qc is not None and str(qc.get("quant_method", "")).lower() == "gptq":
        return qc
    legacy = ctx.json_files.get("quantize_config.json")
    if qc is None and isinstance(legacy, dict):
        method = str(legacy.get("quant_method", "gptq")).lower()
        if method == "gptq" and ("bits" in legacy or "w_bit" in legacy):
            return legacy
    return None


def dynamic_override(qc: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The per-module override of GPTQModel's `dynamic` config (also written by auto-round's gptq export):
    the first rule whose regex matches the start of the module name (`re.match`, as vLLM's
    `gptq_utils.get_dynamic_override`); `+:` or no prefix overrides keys such as bits and group_size, a
    `-:` rule leaves the module unquantized (returned as `{"bits": None, "rule": ...}`). `{}` when none applies."""
    dynamic = qc.get("dynamic") or {}
    if not isinstance(dynamic, dict):
        raise CheckpointError("config.json: GPTQ `dynamic` must map module regexes to objects")
    for rule, values in dynamic.items():
        negative = rule.startswith("-:")
        pattern = rule[2:] if rule[:2] in ("+:", "-:") else rule
        if config_regex(pattern, f"config.json: GPTQ dynamic rule {rule!r}").match(prefix):
            if negative:
                return {"bits": None, "rule": rule}
            if not isinstance(values, dict):
                raise CheckpointError(f"config.json: GPTQ dynamic rule {rule!r} must map to an object")
            return {**values, "rule": rule}
    return {}


def _copied_layer(ctx: FormatContext, prefix: str, override: Mapping[str, Any]) -> LayerPlan:
    """A layer that a `dynamic` rule takes away from 4 bits: its tensors are copied, with the rule as the reason."""
    bits = override.get("bits")
    what = "leaves this module unquantized" if bits is None else f"quantizes it to {bits} bits"
    sources = {role: f"{prefix}.{role}" for role in ("qweight", "qzeros", "scales", "g_idx") if f"{prefix}.{role}" in ctx.tensors}
    return LayerPlan(prefix=prefix, format=GptqFormat.name, sources=sources, extra={"zero_format": "v1"},
                     reason=f"GPTQ dynamic rule {override['rule']!r} {what}; only 4-bit layers convert to Marlin")


def _config_zero_format(qc: Mapping[str, Any]) -> str:
    fmt = str(qc.get("checkpoint_format", qc.get("format", "gptq"))).lower()
    return "v2" if fmt == "gptq_v2" else "v1"


@Format.register(FormatName.GPTQ)
class GptqFormat(Format):
    """GPTQ: qweight int32 `[k/8, n]` packed along k; qzeros int32 `[g, n/8]` packed along n
    (v1 stores zero - 1, v2 the zero); scales fp16/bf16 `[g, n]`; g_idx int32 `[k]`."""

    marker_files = ("quantize_config.json",)

    @classmethod
    def source_config(cls, ctx: FormatContext) -> dict[str, Any] | None:
        return gptq_quant_config(ctx)

    @classmethod
    def plan(cls, ctx: FormatContext, read: TensorReader) -> FormatPlan:
        qc = cls.detected_config(ctx)
        fmt = str(qc.get("checkpoint_format", qc.get("format", "gptq"))).lower()
        if qc.get("is_marlin_format") or fmt == "marlin":
            raise UnknownFormatError("checkpoint is already in AutoGPTQ's Marlin format; nothing to convert")
        if fmt not in ("gptq", "gptq_v2"):
            raise UnknownFormatError(f"GPTQ checkpoint_format {fmt!r} is not supported (supported: gptq, gptq_v2)")
        bits = qc.get("bits", qc.get("w_bit"))
        if bits != 4:
            raise UnknownFormatError(f"GPTQ with bits={bits} is not supported; only 4-bit checkpoints convert to Marlin")
        pack_dtype = str(qc.get("pack_dtype", "int32")).replace("torch.", "")
        if pack_dtype != "int32":
            raise UnknownFormatError(f"GPTQ pack_dtype {pack_dtype} is not supported (only int32)")
        group_size = config_int(qc.get("group_size", qc.get("q_group_size", 128)), "GPTQ group_size")
        sym = bool(qc.get("sym", True))
        zero_format = _config_zero_format(qc)
        layers, evidence = [], {}
        for prefix in layer_prefixes(ctx.tensors, ".qweight"):
            override = dynamic_override(qc, prefix)
            if override.get("bits", bits) != 4:
                layers.append(_copied_layer(ctx, prefix, override))
                continue
            layer_group_size = config_int(override.get("group_size", group_size), f"GPTQ dynamic group_size for {prefix}")
            layer, seen = _plan_layer(ctx, read, prefix, layer_group_size)
            layers.append(layer)
            if seen is not None and override.get("sym", sym):
                evidence[prefix] = seen
        warnings: list[str] = []
        found = set(evidence.values())
        if sym and len(found) > 1:
            raise CheckpointError("GPTQ qzeros mix v1 (0x77777777) and v2 (0x88888888) symmetric patterns across layers")
        if sym and found and found != {zero_format}:
            actual = found.pop()
            warnings.append(
                f"config says checkpoint_format {'gptq_v2' if zero_format == 'v2' else 'gptq'} but the stored "
                f"qzeros are {actual} ({'0x88888888' if actual == 'v2' else '0x77777777'} for symmetric layers): using {actual}"
            )
            zero_format = actual
        for layer in layers:
            _finish_zero_plan(layer, zero_format, read)
        return FormatPlan(layers=layers, warnings=warnings, source_quantization_config=qc)

    @classmethod
    def decode(cls, plan: LayerPlan, tensors: Mapping[str, torch.Tensor]) -> QuantizedLinear:
        import torch

        from .codes import WordsAlongNCodes

        n, k = plan.n, plan.k
        codes = WordsAlongNCodes(tensors["qweight"], n=n, k=k)
        zeros = _true_zeros(tensors["qzeros"], plan.extra["zero_format"])[:, :n]
        g_idx = tensors.get("g_idx")
        if g_idx is not None and torch.equal(g_idx, trivial_g_idx(k, plan.group_size).to(g_idx.device)):
            g_idx = None
        return QuantizedLinear.of_plan(plan, codes, tensors["scales"], zeros=zeros if plan.has_zeros else None, g_idx=g_idx)

    @classmethod
    def row_sliced(cls, plan: LayerPlan) -> frozenset[str]:
        """`qweight` without act-order: `WordsAlongNCodes.marlin_rows` packs it a slice of word rows at a time
        (with act-order a Marlin row block gathers rows from anywhere in it)."""
        return frozenset() if plan.has_perm else frozenset({"qweight"})

    @classmethod
    def encode(cls, rec: QuantizedLinear, plan: LayerPlan, *, stream: bool = False) -> dict[str, Union[torch.Tensor, RowBlocks]]:
        from ..layout import pack_nibbles
        from .codes import assemble

        zeros = rec.zeros_or_implied()
        stored = (zeros - 1) & 0xF if plan.extra["zero_format"] == "v1" else zeros
        out = {
            "qweight": assemble(_qweight_blocks(rec), stream=stream),
            "qzeros": pack_nibbles(stored.contiguous()),
            "scales": rec.scales,
        }
        if "g_idx" in plan.sources:
            out["g_idx"] = rec.g_idx if rec.g_idx is not None else trivial_g_idx(rec.k, rec.group_size)
        return out


def _qweight_blocks(rec: QuantizedLinear) -> RowBlocks:
    from .codes import chunk_bounds

    for start, stop in chunk_bounds(rec.k, rec.n, align=128):
        yield rec.codes.kpacked_rows(start, stop)


def _plan_layer(ctx: FormatContext, read: TensorReader, prefix: str, group_size: int) -> tuple[LayerPlan, str | None]:
    """Check one layer's tensor specs; return its plan and its symmetric zero-point evidence ("v1", "v2" or None)."""
    names = {role: f"{prefix}.{role}" for role in ("qweight", "qzeros", "scales", "g_idx")}
    qweight = expect_spec(ctx, names["qweight"], ("I32",), None)
    stacked = not_2d(names["qweight"], qweight.shape)
    if stacked is not None:
        sources = {role: name for role, name in names.items() if name in ctx.tensors}
        return LayerPlan(prefix=prefix, format=GptqFormat.name, sources=sources, reason=stacked,
                         extra={"zero_format": "v1"}), None
    k, n = qweight.shape[0] * 8, qweight.shape[1]
    groups = group_count(k, group_size)
    scales = expect_spec(ctx, names["scales"], SCALE_DTYPES, (groups, n))
    expect_spec(ctx, names["qzeros"], ("I32",), (groups, -(-n // 8)))
    sources = {role: name for role, name in names.items() if role != "g_idx" or name in ctx.tensors}
    if "g_idx" in sources:
        expect_spec(ctx, names["g_idx"], ("I32",), (k,))
    plan = LayerPlan(
        prefix=prefix, format=GptqFormat.name, sources=sources, n=n, k=k, group_size=group_size,
        num_groups=groups, scale_dtype=scales.dtype,
        extra={"zero_format": "v1"},
    )
    plan.reason = marlin_ineligibility(n, k, group_size)
    if plan.reason is not None:
        return plan, None
    if "g_idx" in sources:
        plan.has_perm = permuted_g_idx(names["g_idx"], read(names["g_idx"]), k, group_size, groups)
    qzeros = plan_array(read(names["qzeros"]))
    seen = "v1" if bool((qzeros == _V1_SYM_WORD).all()) else "v2" if bool((qzeros == _V2_SYM_WORD).all()) else None
    return plan, seen


def _true_zeros(qzeros: torch.Tensor, zero_format: str) -> torch.Tensor:
    from ..layout import unpack_nibbles

    stored = unpack_nibbles(qzeros)
    return (stored + 1) & 0xF if zero_format == "v1" else stored


def _finish_zero_plan(plan: LayerPlan, zero_format: str, read: TensorReader) -> None:
    """Record the zero convention; symmetric when every true zero is 8; v1 nibble 0xF (zero 16) is ineligible."""
    plan.extra["zero_format"] = zero_format
    if not plan.eligible:
        return
    stored = plan_nibbles(read(plan.sources["qzeros"]))[:, : plan.n]
    if zero_format == "v1" and bool((stored == 0xF).any()):
        plan.reason = "GPTQ v1 qzeros nibble 0xF means zero point 16, which Marlin's 4-bit zero points cannot hold"
        return
    true = (stored + 1) & 0xF if zero_format == "v1" else stored
    plan.has_zeros = not bool((true == 8).all())
