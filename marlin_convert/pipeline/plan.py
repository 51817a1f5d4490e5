"""Planning a pack: the source's format and layer plans, and the list of output tensors in write order."""
from __future__ import annotations

from dataclasses import dataclass

from ..checkpoint import Checkpoint, OutEntry
from ..errors import CheckpointError, NotQuantized, UnknownFormatError
from ..formats import Format, FormatContext, FormatPlan, LayerPlan, detect_format, marlin_specs

__all__ = ["CopyTensor", "LayerTensor", "plan_source", "source_shard_limit", "output_entries"]


@dataclass(frozen=True)
class CopyTensor:
    """An output tensor copied byte for byte from the input tensor `name`."""

    name: str


@dataclass(frozen=True)
class LayerTensor:
    """An output tensor made by converting a layer: the layer's `prefix` and the tensor's `part`
    (a Marlin suffix when packing, a source role when unpacking)."""

    prefix: str
    part: str


def plan_source(ckpt: Checkpoint) -> tuple[type[Format], FormatPlan]:
    """The source's format and its plan for every quantized layer; raises when there is nothing to read."""
    ctx = FormatContext(config=ckpt.config, json_files=ckpt.json_files, tensors=ckpt.specs())
    if ckpt.config.get("marlin_convert") is not None:
        raise UnknownFormatError(
            f"{ckpt.root}: already a Marlin checkpoint written by marlin-convert (use `marlin-convert unpack`)"
        )
    if ctx.quantization_config is None and not ckpt.json_files and not any(
            spec.dtype.startswith(("I", "U")) for spec in ctx.tensors.values()):
        raise NotQuantized(f"{ckpt.root}: not quantized (config.json has no quantization_config and no other format's "
                           "marker file): nothing to convert; marlin-convert reads int4 GPTQ, AWQ, compressed-tensors "
                           "and optimum-quanto checkpoints")
    fmt = detect_format(ctx)
    return fmt, fmt.plan(ctx, ckpt.read_array)  # small tensors as numpy arrays: planning imports no torch


def source_shard_limit(ckpt: Checkpoint) -> int | None:
    """Output shards stay under the largest source shard; a single-file source gives a single file."""
    if len(ckpt.shards) == 1:
        return None
    return max(sum(info.nbytes for info in header.tensors.values()) for header in ckpt.headers.values())


def output_entries(ckpt: Checkpoint, eligible: dict[str, LayerPlan]) -> list[OutEntry]:
    """Every output tensor in source order: a layer's Marlin tensors where its first tensor was."""
    member_of = {name: prefix for prefix, plan in eligible.items() for name in plan.sources.values()}
    entries: list[OutEntry] = []
    done: set[str] = set()
    specs = ckpt.specs()
    for name, spec in specs.items():
        prefix = member_of.get(name)
        if prefix is None:
            entries.append(OutEntry(name, spec, CopyTensor(name)))
            continue
        if prefix in done:
            continue
        done.add(prefix)
        for suffix, out_spec in marlin_specs(eligible[prefix]).items():
            out_name = f"{prefix}.{suffix}"
            if out_name in specs and out_name not in member_of:
                raise CheckpointError(f"{ckpt.root}: output tensor {out_name} would overwrite a source tensor")
            entries.append(OutEntry(out_name, out_spec, LayerTensor(prefix, suffix)))
    return entries
