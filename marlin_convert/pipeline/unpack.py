"""unpack: a Marlin checkpoint written by pack in, the source checkpoint out, byte for byte."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CONFIG_NAME, INDEX_NAME, MANIFEST_NAME, OutEntry, ShardPlan, atomic_directory, check_output_path
from ..checkpoint import open_output, write_shards
from ..checkpoint.file_records import check_restored_files, source_shard_header
from ..errors import VerifyMismatch
from ..formats import MARKER_FILES, Format, LayerPlan, marlin_specs
from ..tensor_spec import TensorSpec
from ._layers import marlin_tensors_as_used, restore_layer
from ._stream import LayerStream, hash_whole, layer_order, read_ahead_budget
from .options import check_jobs, single_threaded_torch
from .output_files import copy_files, restore_source_files
from .plan import CopyTensor, LayerTensor
from .progress import Reporter, choose_reporter
from .manifest_plans import manifest_plans
from .reports import UnpackReport

__all__ = ["unpack_checkpoint"]


@single_threaded_torch
def unpack_checkpoint(
    marlin_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    force: bool = False,
    jobs: int | None = None,
    reporter: Reporter | None = None,
    progress: bool = False,
) -> UnpackReport:
    """Restore the source checkpoint from a Marlin checkpoint written by `pack_checkpoint`.

    Every source file comes back byte for byte: each shard from its recorded header bytes with every
    tensor at its recorded offset, `config.json` and the index from their recorded text, other files as
    they were. Each restored tensor (hashed as it is made) is checked against the manifest's sha256, and each
    restored file against its record (a shard's header bytes and size, any other file's sha256), before the
    output is put in place. Unpacking runs on the CPU (its fast paths go straight
    from Marlin tiles to the source's packed words, in row blocks).
    Raises: VerifyMismatch when the Marlin checkpoint does not match its manifest.
    """
    started = time.perf_counter()
    reporter = choose_reporter(reporter, progress)
    marlin_dir, out = Path(marlin_dir), Path(out)
    jobs = check_jobs(jobs)
    check_output_path(out, inputs=[marlin_dir], force=force)
    manifest, ckpt = open_output(marlin_dir, marker_files=MARKER_FILES)
    with ckpt:
        fmt = Format.get(manifest["source_format"])
        plans = manifest_plans(manifest, marlin_dir)
        member_of = {name: (prefix, role) for prefix, p in plans.items() for role, name in p.sources.items()}
        source_tensors = manifest["source_tensors"]
        headers = {shard: source_shard_header(manifest, shard, marlin_dir / MANIFEST_NAME) for shard in manifest["source_shards"]}
        budget = read_ahead_budget(_spec(meta).nbytes for meta in source_tensors.values())
        shards = [
            ShardPlan(shard, _restore_entries(list(headers[shard].tensors), source_tensors, member_of, plans, budget),
                      meta["metadata"], header=headers[shard].raw)
            for shard, meta in manifest["source_shards"].items()
        ]
        total = sum(e.nbytes for s in shards for e in s.entries)
        reporter.start(total, "unpack")

        def make_layer(prefix: str) -> dict[str, torch.Tensor]:
            plan = plans[prefix]
            marlin, b_ready = marlin_tensors_as_used(ckpt, plan)  # B's first rows unpacked while the rest is read
            return hash_whole(restore_layer(fmt, plan, marlin, stream=True, b_ready=b_ready)[1])

        def produce(entry: OutEntry) -> torch.Tensor | bytearray:
            reporter.advance(entry.nbytes)
            if isinstance(entry.key, CopyTensor):
                return ckpt.read_raw(entry.name)
            return layers.take(entry.key.prefix, entry.key.part)

        sizes = {p: sum(ckpt.info(f"{p}.{s}").nbytes for s in marlin_specs(plan)) for p, plan in plans.items()}
        with atomic_directory(out, force=force) as tmp, \
                LayerStream(make_layer, layer_order(shards), jobs, sizes, budget) as layers:
            # every tensor is hashed once, where it is made (a whole one on its layer's worker, row blocks by
            # the writer); the shard's header is the recorded one, checked with its size below
            write_shards(tmp, shards, produce, written=lambda _, digests: _check_restored_tensors(digests, source_tensors))
            copy_files(marlin_dir, tmp, manifest["files"])
            restore_source_files(marlin_dir, tmp, manifest.get("set_aside_files", {}))
            for name in (CONFIG_NAME, INDEX_NAME):  # exactly as they were: their text is in the manifest
                record = manifest["source_files"].get(name)
                if record is not None:
                    (tmp / name).write_bytes(str(record.get("text")).encode("utf-8", errors="surrogatepass"))
            check_restored_files(tmp, manifest)
    return UnpackReport(
        source=str(marlin_dir),
        output=str(out),
        format=fmt.name,
        layers_restored=len(plans),
        tensors_copied=sum(1 for name in source_tensors if name not in member_of),
        shards=[s.name for s in shards],
        bytes_out=total,
        seconds=round(time.perf_counter() - started, 3),
    )


def _restore_entries(names: list[str], source_tensors: dict[str, Any], member_of: dict[str, tuple[str, str]],
                     plans: dict[str, LayerPlan], budget: int) -> list[OutEntry]:
    """A source shard's tensors (`names` in file order) in write order. In file order, so the shard is written
    front to back (past the page cache where it can be), when the layer tensors this keeps in hand (those of
    layers already restored, not yet written) never exceed `budget` bytes: with safetensors' own order (by dtype,
    then name) these are the small scales of the shard's layers. Else each layer's tensors together, at its first
    tensor's place (one layer in hand at a time), each written at its offset in the recorded header."""
    in_order = [_entry(name, source_tensors, member_of) for name in names]
    return in_order if _held_in_order(in_order) <= budget else _layer_grouped(names, source_tensors, member_of, plans)


def _entry(name: str, source_tensors: dict[str, Any], member_of: dict[str, tuple[str, str]]) -> OutEntry:
    spec = _spec(source_tensors[name])
    return OutEntry(name, spec, LayerTensor(*member_of[name]) if name in member_of else CopyTensor(name))


def _held_in_order(entries: list[OutEntry]) -> int:
    """Most bytes of layer tensors restored but not yet written, writing `entries` in their order (a layer is
    restored whole, as far as this shard holds it, when its first tensor is written)."""
    left: dict[str, int] = {}
    for e in entries:
        if isinstance(e.key, LayerTensor):
            left[e.key.prefix] = left.get(e.key.prefix, 0) + e.nbytes
    started: set[str] = set()
    held = most = 0
    for e in entries:
        if isinstance(e.key, LayerTensor):
            if e.key.prefix not in started:
                started.add(e.key.prefix)
                held += left[e.key.prefix]
            most = max(most, held)
            held -= e.nbytes
    return most


def _layer_grouped(names: list[str], source_tensors: dict[str, Any], member_of: dict[str, tuple[str, str]],
                   plans: dict[str, LayerPlan]) -> list[OutEntry]:
    entries: list[OutEntry] = []
    in_shard = set(names)
    done: set[str] = set()
    for name in names:
        if name not in member_of:
            entries.append(_entry(name, source_tensors, member_of))
            continue
        prefix = member_of[name][0]
        if prefix in done:
            continue
        done.add(prefix)
        entries.extend(_entry(member, source_tensors, member_of) for member in plans[prefix].sources.values()
                       if member in in_shard)
    return entries


def _check_restored_tensors(digests: dict[str, str], source_tensors: dict[str, Any]) -> None:
    """A restored shard's tensors (name -> sha256 as written) against the source's recorded sha256."""
    for name, digest in digests.items():
        if digest != source_tensors[name]["sha256"]:
            raise VerifyMismatch(f"{name}: restored bytes differ from the source (sha256 mismatch)")


def _spec(meta: dict[str, Any]) -> TensorSpec:
    """A manifest tensor entry's dtype and shape."""
    return TensorSpec(meta["dtype"], tuple(meta["shape"]))
