"""AutoAWQ GEMM: qweight int32 `[k, n/8]` and qzeros int32 `[g, n/8]` packed along n with the nibble order
`[0, 2, 4, 6, 1, 3, 5, 7]`; scales fp16 `[g, n]`; zero points stored as is (no offset)."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Mapping, Union

from ..errors import UnknownFormatError
from ._common import config_int, expect_spec, group_count, layer_prefixes, marlin_ineligibility, not_2d, plan_nibbles
from .base import Format, FormatContext, FormatName, FormatPlan, TensorReader
from .record import LayerPlan, QuantizedLinear

if TYPE_CHECKING:
    import torch

    from .codes import RowBlocks

__all__ = ["AwqFormat", "AWQ_ORDER", "AWQ_REVERSE_ORDER"]

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
"""Nibble i of word c holds column `8c + AWQ_ORDER[i]`."""
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)
"""Column `8c + j` sits in nibble `AWQ_REVERSE_ORDER[j]`."""


@functools.cache
def _orders() -> tuple[torch.Tensor, torch.Tensor]:
    """AWQ_ORDER and AWQ_REVERSE_ORDER as index tensors (built on first use: importing this module needs no torch)."""
    import torch

    return torch.tensor(AWQ_ORDER), torch.tensor(AWQ_REVERSE_ORDER)


def _unpack_cols(words: torch.Tensor) -> torch.Tensor:
    """int32 `[r, n/8]` AWQ-interleaved -> uint8 `[r, n]` in column order."""
    from ..layout import unpack_nibbles

    nib = unpack_nibbles(words)
    return nib.reshape(nib.shape[0], -1, 8).index_select(2, _orders()[1].to(nib.device)).reshape(nib.shape)


def _pack_cols(values: torch.Tensor) -> torch.Tensor:
    """uint8 `[r, n]` -> int32 `[r, n/8]` with the AWQ nibble order."""
    from ..layout import pack_nibbles

    inter = values.reshape(values.shape[0], -1, 8).index_select(2, _orders()[0].to(values.device)).reshape(values.shape)
    return pack_nibbles(inter.contiguous())


@Format.register(FormatName.AWQ)
class AwqFormat(Format):
    """AWQ GEMM (`quant_method: awq`, `version: gemm`, `zero_point: true`). Other versions and
    `zero_point: false` are reported by `inspect` and copied."""

    quant_method = "awq"

    @classmethod
    def plan(cls, ctx: FormatContext, read: TensorReader) -> FormatPlan:
        qc = cls.detected_config(ctx)
        bits = qc.get("bits", qc.get("w_bit"))
        if bits != 4:
            raise UnknownFormatError(f"AWQ with bits={bits} is not supported; only 4-bit checkpoints convert to Marlin")
        group_size = config_int(qc.get("group_size", qc.get("q_group_size", 128)), "AWQ group_size")
        version = str(qc.get("version", "gemm")).lower()
        why_not = None
        if version != "gemm":
            why_not = f"AWQ version {version!r} is not supported (only gemm)"
        elif not qc.get("zero_point", True):
            why_not = "AWQ zero_point: false is not Marlin-compatible"
        layers = [_plan_layer(ctx, read, prefix, group_size, why_not) for prefix in layer_prefixes(ctx.tensors, ".qweight")]
        return FormatPlan(layers=layers, source_quantization_config=qc)

    @classmethod
    def decode(cls, plan: LayerPlan, tensors: Mapping[str, torch.Tensor]) -> QuantizedLinear:
        from .codes import WordsAlongNCodes

        zeros = _unpack_cols(tensors["qzeros"])
        codes = WordsAlongNCodes(tensors["qweight"], n=plan.n, k=plan.k, unpack_rows=_unpack_cols)
        return QuantizedLinear.of_plan(plan, codes, tensors["scales"], zeros=zeros if plan.has_zeros else None)

    @classmethod
    def encode(cls, rec: QuantizedLinear, plan: LayerPlan, *, stream: bool = False) -> dict[str, Union[torch.Tensor, RowBlocks]]:
        from .codes import assemble

        zeros = rec.zeros_or_implied()
        return {
            "qweight": assemble(_qweight_blocks(rec), stream=stream),
            "qzeros": _pack_cols(zeros),
            "scales": rec.scales,
        }


def _qweight_blocks(rec: QuantizedLinear) -> RowBlocks:
    from .codes import chunk_bounds

    for start, stop in chunk_bounds(rec.k, rec.n, align=128):
        yield _pack_cols(rec.codes.cols(start, stop).t().contiguous())


def _plan_layer(ctx: FormatContext, read: TensorReader, prefix: str, group_size: int, why_not: str | None) -> LayerPlan:
    names = {role: f"{prefix}.{role}" for role in ("qweight", "qzeros", "scales")}
    qweight = expect_spec(ctx, names["qweight"], ("I32",), None)
    plan = LayerPlan(prefix=prefix, format=AwqFormat.name, sources=names, group_size=group_size)
    plan.reason = why_not or not_2d(names["qweight"], qweight.shape)
    if plan.reason is not None:
        return plan
    k, n = qweight.shape[0], qweight.shape[1] * 8
    groups = group_count(k, group_size)
    scales = expect_spec(ctx, names["scales"], ("F16", "BF16"), (groups, n))
    expect_spec(ctx, names["qzeros"], ("I32",), (groups, n // 8))
    plan.n, plan.k, plan.num_groups, plan.scale_dtype = n, k, groups, scales.dtype
    plan.reason = marlin_ineligibility(n, k, group_size)
    if plan.reason is None:
        plan.has_zeros = not bool((plan_nibbles(read(names["qzeros"])) == 8).all())  # every zero 8, in any nibble order
    return plan
