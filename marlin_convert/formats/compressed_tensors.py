"""compressed-tensors `pack-quantized` int4: weight_packed int32 `[n, k/8]` (codes + 8, packed along k),
weight_scale `[n, g]`, weight_zero_point int32 `[n/8, g]` (zero + 8, packed along n; asymmetric only),
weight_shape `[2]`, optional weight_g_idx int32 `[k]`."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Mapping, Union

from ..errors import CheckpointError, UnknownFormatError
from ._common import (config_int, expect_spec, group_count, layer_prefixes, marlin_ineligibility, not_2d, permuted_g_idx,
                      plan_array, plan_nibbles)
from .config_regex import ConfigRegex, config_regex
from .base import Format, FormatContext, FormatName, FormatPlan, TensorReader
from .record import LayerPlan, QuantizedLinear, trivial_g_idx

if TYPE_CHECKING:
    import torch

    from .codes import RowBlocks

__all__ = ["CompressedTensorsFormat"]

PACKED_FORMAT = "pack-quantized"
ROLES = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx")


@functools.lru_cache(maxsize=1024)
def _target_regex(pattern: str, group: str) -> ConfigRegex:
    return config_regex(pattern, f"config.json: compressed-tensors config_groups.{group}.targets")


def _check_groups(groups: dict[str, Any]) -> None:
    """Every config group is an object whose `targets` (when given) is a list of strings, each `re:`
    pattern valid; CheckpointError on one line otherwise."""
    for name, group in groups.items():
        where = f"config.json: compressed-tensors config_groups.{name}"
        if not isinstance(group, dict):
            raise CheckpointError(f"{where} must be an object")
        targets = group.get("targets")
        if targets is not None and (not isinstance(targets, list) or not all(isinstance(t, str) for t in targets)):
            raise CheckpointError(f"{where}.targets must be a list of strings, not {targets!r}")
        if group.get("weights") is not None and not isinstance(group["weights"], dict):
            raise CheckpointError(f"{where}.weights must be an object")
        for target in targets or []:
            if target.startswith("re:"):
                _target_regex(target[3:], name)


def _match_group(prefix: str, groups: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The config group whose targets match a module: exact name, then `re:` pattern, then a class name."""
    exact, regex, by_class = [], [], []
    for name, group in groups.items():
        for target in group.get("targets") or []:
            if target == prefix:
                exact.append((name, group))
            elif target.startswith("re:") and _target_regex(target[3:], name).match(prefix):
                regex.append((name, group))
            elif not target.startswith("re:") and "." not in target:
                by_class.append((name, group))
    for found in (exact, regex, by_class):
        if found:
            return found[0]
    return None


def _why_not(args: dict[str, Any], fmt: str) -> str | None:
    if fmt != PACKED_FORMAT:
        return f"compressed-tensors format {fmt!r} is not {PACKED_FORMAT}"
    if args.get("type", "int") != "int" or args.get("num_bits") != 4:
        return f"weights are {args.get('type')}{args.get('num_bits')}, not int4"
    if args.get("strategy") not in ("group", "channel"):
        return f"strategy {args.get('strategy')!r} is not supported (group or channel)"
    if args.get("dynamic"):
        return "dynamic weight quantization is not supported"
    return None


@Format.register(FormatName.COMPRESSED_TENSORS)
class CompressedTensorsFormat(Format):
    """compressed-tensors `pack-quantized`, int4, group or channel strategy, symmetric or not."""

    quant_method = "compressed-tensors"

    @classmethod
    def plan(cls, ctx: FormatContext, read: TensorReader) -> FormatPlan:
        qc = cls.detected_config(ctx)
        status = str(qc.get("quantization_status", "compressed"))
        if status != "compressed":
            raise UnknownFormatError(
                f"compressed-tensors quantization_status {status!r}: the weights are stored dense, nothing to convert"
            )
        groups = qc.get("config_groups") or {}
        if not isinstance(groups, dict) or not groups:
            raise UnknownFormatError("compressed-tensors config has no config_groups")
        _check_groups(groups)
        top_format = str(qc.get("format", PACKED_FORMAT))
        formats = {name: str(g.get("format") or top_format) for name, g in groups.items()}
        if PACKED_FORMAT not in formats.values():
            raise UnknownFormatError(
                f"compressed-tensors format {top_format!r} holds no {PACKED_FORMAT} int4 weights; nothing to convert"
            )
        layers = []
        for prefix in layer_prefixes(ctx.tensors, ".weight_packed"):
            match = _match_group(prefix, groups)
            if match is None:
                raise CheckpointError(f"{prefix}.weight_packed: no config group targets this module")
            name, group = match
            layers.append(_plan_layer(ctx, read, prefix, group.get("weights") or {}, formats[name]))
        return FormatPlan(layers=layers, source_quantization_config=qc)

    @classmethod
    def decode(cls, plan: LayerPlan, tensors: Mapping[str, torch.Tensor]) -> QuantizedLinear:
        import torch

        from ..layout import unpack_nibbles
        from .codes import WordsAlongKCodes

        zeros = None
        if plan.has_zeros:
            zeros = unpack_nibbles(tensors["weight_zero_point"].t().contiguous())[:, : plan.n]
        g_idx = tensors.get("weight_g_idx")
        if g_idx is not None and torch.equal(g_idx, trivial_g_idx(plan.k, plan.group_size).to(g_idx.device)):
            g_idx = None
        codes = WordsAlongKCodes(tensors["weight_packed"], n=plan.n, k=plan.k)
        return QuantizedLinear.of_plan(plan, codes, tensors["weight_scale"].t().contiguous(), zeros=zeros, g_idx=g_idx)

    @classmethod
    def encode(cls, rec: QuantizedLinear, plan: LayerPlan, *, stream: bool = False) -> dict[str, Union[torch.Tensor, RowBlocks]]:
        import torch

        from ..dtypes import TORCH_DTYPES
        from ..layout import pack_nibbles
        from .codes import assemble

        out = {
            "weight_packed": assemble(_packed_blocks(rec), stream=stream),
            "weight_scale": rec.scales.t().contiguous(),
            "weight_shape": torch.tensor([rec.n, rec.k], dtype=TORCH_DTYPES[plan.extra["weight_shape_dtype"]]),
        }
        if "weight_zero_point" in plan.sources:
            zeros = rec.zeros_or_implied()
            out["weight_zero_point"] = pack_nibbles(zeros).t().contiguous()
        if "weight_g_idx" in plan.sources:
            out["weight_g_idx"] = rec.g_idx if rec.g_idx is not None else trivial_g_idx(rec.k, rec.group_size)
        return out


def _packed_blocks(rec: QuantizedLinear) -> RowBlocks:
    from ..layout import pack_nibbles
    from .codes import chunk_bounds

    for start, stop in chunk_bounds(rec.n, rec.k, align=64):
        yield pack_nibbles(rec.codes.rows(start, stop))


def _plan_layer(ctx: FormatContext, read: TensorReader, prefix: str, args: dict[str, Any], fmt: str) -> LayerPlan:
    names = {role: f"{prefix}.{role}" for role in ROLES}
    sources = {role: name for role, name in names.items() if name in ctx.tensors}
    plan = LayerPlan(prefix=prefix, format=CompressedTensorsFormat.name, sources=sources)
    packed = expect_spec(ctx, names["weight_packed"], ("I32",), None)
    plan.reason = _why_not(args, fmt) or not_2d(names["weight_packed"], packed.shape)
    if plan.reason is not None:
        return plan
    shape_spec = expect_spec(ctx, names["weight_shape"], ("I64", "I32"), (2,))
    n, k = (int(v) for v in plan_array(read(names["weight_shape"])).tolist())
    if packed.shape != (n, -(-k // 8)):
        raise CheckpointError(f"{names['weight_packed']}: shape {list(packed.shape)} does not match weight_shape [{n}, {k}]")
    group_size = config_int(args.get("group_size"), f"compressed-tensors group_size for {prefix}") if args.get("strategy") == "group" else -1
    groups = group_count(k, group_size)
    scales = expect_spec(ctx, names["weight_scale"], ("F16", "BF16", "F32"), (n, groups))
    symmetric = bool(args.get("symmetric", True))
    if not symmetric:
        expect_spec(ctx, names["weight_zero_point"], ("I32",), (-(-n // 8), groups))
    else:
        sources.pop("weight_zero_point", None)
    if "weight_g_idx" in sources:
        expect_spec(ctx, names["weight_g_idx"], ("I32",), (k,))
    plan.n, plan.k, plan.group_size, plan.num_groups = n, k, group_size, groups
    plan.scale_dtype = scales.dtype
    plan.extra = {"weight_shape_dtype": shape_spec.dtype}
    plan.reason = marlin_ineligibility(n, k, group_size)
    if plan.reason is None and scales.dtype == "F32":
        plan.reason = "float32 scales (Marlin takes float16 or bfloat16)"
    if plan.reason is not None:
        return plan
    if "weight_g_idx" in sources:
        plan.has_perm = permuted_g_idx(names["weight_g_idx"], read(names["weight_g_idx"]), k, group_size, groups)
    if not symmetric:
        zeros = plan_nibbles(plan_array(read(names["weight_zero_point"])).T)[:, :n]
        plan.has_zeros = not bool((zeros == 8).all())
    return plan
