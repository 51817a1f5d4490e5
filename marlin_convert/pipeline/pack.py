"""pack: an int4 checkpoint in, a Marlin checkpoint (with its manifest) out, layer by layer."""
from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .._version import __version__
from ..checkpoint import CONFIG_NAME, INDEX_NAME, MANIFEST_NAME, Checkpoint, OutEntry, ShardPlan, atomic_directory, build_manifest
from ..checkpoint import check_output_path, dump_manifest, index_json, open_checkpoint, plan_shards, write_json, write_shards, write_text
from ..checkpoint.file_records import output_file_records, source_file_records
from ..errors import CheckpointError, NothingToConvert
from ..stage_timers import stage
from ..formats import MARKER_FILES, Format, FormatPlan, LayerPlan, TensorSpec
from ..formats.plan_json import plan_to_json
from ._digests_ahead import DigestsAhead
from .model_card import CARD_NAME, model_card
from .options import check_device_name, check_jobs, resolve_device, single_threaded_torch
from .output_files import copy_files, set_aside_source_files, split_source_files
from .plan import CopyTensor, output_entries, plan_source, source_shard_limit
from .progress import Reporter, choose_reporter
from .reports import PackReport

if TYPE_CHECKING:
    import torch

__all__ = ["pack_checkpoint"]


def pack_checkpoint(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    force: bool = False,
    strict: bool = False,
    device: str = "auto",
    jobs: int | None = None,
    reporter: Reporter | None = None,
    progress: bool = False,
) -> PackReport:
    """Convert an int4 checkpoint directory into a Marlin checkpoint directory, atomically.

    Args:
        src: the source checkpoint directory (never written).
        out: the output directory; must not exist unless `force`.
        strict: raise NothingToConvert when no layer is eligible.
        device: "auto", "cpu" or "cuda": where the layout math runs (same bytes everywhere).
        jobs: layers read and converted in parallel (threads); default one per core. Same bytes for any value.
        progress: show a `tqdm.auto` bar over bytes (a widget in notebooks) unless a `reporter` is given.
    Returns: a PackReport.
    Raises: MarlinConvertError subclasses for bad input; nothing is left at `out` then.
    Example:
        >>> report = pack_checkpoint("ckpt", "ckpt-marlin")  # doctest: +SKIP
    """
    started = time.perf_counter()
    src, out = Path(src), Path(out)
    check_device_name(device)
    jobs = check_jobs(jobs)
    check_output_path(out, inputs=[src], force=force)
    with stage("open source (headers)"):
        ckpt = open_checkpoint(src, marker_files=MARKER_FILES)
    with ckpt:  # the source is opened and planned before torch is imported (in `_pack`) ...
        _check_round_trip(ckpt)
        with stage("plan"):
            fmt, fplan = plan_source(ckpt)
        members = [name for p in fplan.layers if p.eligible for name in p.sources.values()]
        with DigestsAhead(ckpt, members) as ahead:  # ... while its layer tensors are being hashed
            return _pack(ckpt, fmt, fplan, ahead, src, out, force=force, strict=strict, device=device, jobs=jobs,
                         reporter=choose_reporter(reporter, progress), started=started)


@single_threaded_torch
def _pack(ckpt: Checkpoint, fmt: type[Format], fplan: FormatPlan, ahead: DigestsAhead, src: Path, out: Path, *,
          force: bool, strict: bool, device: str, jobs: int, reporter: Reporter, started: float) -> PackReport:
    """The conversion, once the source is open and planned (see `pack_checkpoint`)."""
    from ._layers import convert_layer, read_layer  # these import torch
    from ._stream import LayerStream, hash_whole, layer_order, read_ahead_budget

    dev = resolve_device(device)
    for w in fplan.warnings:
        reporter.warn(w)
    eligible = {p.prefix: p for p in fplan.layers if p.eligible}
    if strict and not eligible:
        raise NothingToConvert(f"{src}: no layer is eligible for Marlin")
    entries = output_entries(ckpt, eligible)
    shards = plan_shards(entries, max_bytes=source_shard_limit(ckpt), metadata={"format": "pt"})
    source_sha: dict[str, str | Future[str]] = {}
    specs = ckpt.specs()
    bytes_in = sum(ckpt.info(name).nbytes for name in specs)
    reporter.start(bytes_in, "pack")

    def make_layer(prefix: str) -> dict[str, torch.Tensor]:
        plan = eligible[prefix]
        tensors = read_layer(ckpt, plan, source_sha, pinned=dev.type == "cuda",
                             hasher=tensor_hashes if dev.type == "cpu" else None, claim=ahead.claim,
                             row_sliced=fmt.row_sliced(plan) if dev.type == "cpu" else frozenset())
        _, outs = convert_layer(fmt, plan, tensors, dev, stream=True)
        reporter.advance(sum(ckpt.info(n).nbytes for n in plan.sources.values()))
        return hash_whole(outs)

    def produce(entry: OutEntry) -> torch.Tensor | bytearray:
        if isinstance(entry.key, CopyTensor):
            raw = ckpt.read_raw(entry.name)
            reporter.advance(len(raw))
            return raw
        return layers.take(entry.key.prefix, entry.key.part)

    other = ckpt.other_files()
    sizes = {p: sum(ckpt.info(n).nbytes for n in plan.sources.values()) for p, plan in eligible.items()}
    budget = None if dev.type != "cpu" else read_ahead_budget(ckpt.info(n).nbytes for n in specs)
    copied = [e for e in entries if isinstance(e.key, CopyTensor)]
    with atomic_directory(out, force=force) as tmp, _hasher(jobs) as tensor_hashes, \
            LayerStream(make_layer, layer_order(shards), jobs, sizes, budget) as layers:
        with stage("write shards (all, wall)"):
            # O_DIRECT saves the CPU the page-cache copies, which matters when the CPU also runs the layout
            # kernel; with the kernel on a GPU the host has cores to spare and buffered writes measured
            # as fast or faster (H200 host, 4.9 GB: 0.75-0.91x the copy against 0.83-1.28x; BENCHMARKS.md)
            out_sha = write_shards(tmp, shards, produce, direct=dev.type == "cpu")
        for entry in copied:
            source_sha[entry.name] = out_sha[entry.name]
        verbatim, aside = split_source_files(other, with_card=bool(eligible), owned=_owned_names(shards, bool(eligible)))
        copy_files(src, tmp, verbatim)
        set_aside = set_aside_source_files(src, tmp, aside)
        config = _marlin_config(ckpt.config, fmt, fplan, list(eligible.values()), {e.name: specs[e.name] for e in copied})
        write_json(tmp / CONFIG_NAME, config)
        if eligible:
            write_text(tmp / CARD_NAME, model_card(
                source=src.name, source_format=fmt.name, version=__version__, converted=len(eligible),
                unconverted=config["quantization_config"]["modules_to_not_convert"],
                quantization_config=config["quantization_config"],
                source_card=set_aside.get(CARD_NAME, {}).get("stored_as")))
        if len(shards) > 1:
            write_json(tmp / INDEX_NAME, index_json(shards))
        with stage("wait: source tensor sha256"):
            source_sha = {k: v.result() if isinstance(v, Future) else v for k, v in source_sha.items()}
        with stage("manifest (+ small files)"):
            manifest = build_manifest(
                tool_version=__version__, source_format=fmt.name, source=ckpt, source_sha=source_sha,
                shards=shards, out_sha=out_sha,
                layers={prefix: plan_to_json(plan) for prefix, plan in eligible.items()},
                skipped_layers={p.prefix: p.reason for p in fplan.layers if not p.eligible},
                files=verbatim, set_aside_files=set_aside, warnings=fplan.warnings,
                source_files=source_file_records(ckpt, other),
                output_files=output_file_records(tmp, [s.name for s in shards], skip=MANIFEST_NAME))
        write_text(tmp / MANIFEST_NAME, dump_manifest(manifest))
    return PackReport(
        source=str(src),
        output=str(out),
        format=fmt.name,
        device=dev.type,
        layers_converted=len(eligible),
        tensors_copied=len(copied),
        skipped={p.prefix: p.reason or "" for p in fplan.layers if not p.eligible},
        warnings=list(fplan.warnings),
        shards=[s.name for s in shards],
        bytes_in=bytes_in,
        bytes_out=sum(s.nbytes for s in shards),
        seconds=round(time.perf_counter() - started, 3),
    )


@contextmanager
def _hasher(jobs: int) -> Iterator[ThreadPoolExecutor]:
    """Threads for the source tensors' sha256 in a CPU pack (as many as layer workers), so that a layer's kernel
    does not wait for its hash (they read the same bytes). A GPU pack hashes on its layer workers, as before:
    with one hashing thread for all of them, a 4.9 GB pack on the H200 host went from 0.75-0.91x to
    1.08-1.17x `cp -r` + `sync` (2026-12-02). Leaving with an error drops what is still queued."""
    pool = ThreadPoolExecutor(max(1, jobs), thread_name_prefix="marlin-convert-sha")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _check_round_trip(ckpt: Checkpoint) -> None:
    """Refuse up front a checkpoint whose layout unpack could not restore: shards in a subfolder."""
    for shard in ckpt.shards:
        if "/" in shard:
            raise CheckpointError(f"{ckpt.root / INDEX_NAME}: shard {shard} lies in a subfolder, which the output and "
                                  "unpack cannot keep; move the shards next to the index and fix its weight_map")


def _owned_names(shards: list[ShardPlan], with_card: bool) -> set[str]:
    """The top-level names the output writes itself; a source file of such a name must not overwrite it."""
    names = {s.name for s in shards} | {CONFIG_NAME, MANIFEST_NAME}
    names |= {INDEX_NAME} if len(shards) > 1 else set()
    return names | ({CARD_NAME} if with_card else set())


def _marlin_config(config: dict[str, Any], fmt: type[Format], fplan: FormatPlan, eligible: list[LayerPlan],
                   copied: dict[str, TensorSpec]) -> dict[str, Any]:
    """The output's config.json: the source's, with a Marlin `quantization_config` and a `marlin_convert` entry."""
    new = dict(config)
    if eligible:
        from ..runtime.serving_config import serving_entries  # what the transformers loader needs (runtime.hf)

        unconverted = [p for p in fplan.layers if not p.eligible]
        new["quantization_config"] = {"quant_method": "marlin", "bits": 4,
                                      **serving_entries(eligible, unconverted, fmt.name, copied)}
    new["marlin_convert"] = {
        "version": __version__,
        "source_format": fmt.name,
        "source_quantization_config": fplan.source_quantization_config,
        "manifest": MANIFEST_NAME,
    }
    return new
