"""pack / unpack / verify / inspect as streams of layers: read a layer, convert, write.

No printing here: progress arrives through a `Reporter` and results come back as report objects.
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from . import __version__
from .checkpoint import (
    CONFIG_NAME,
    INDEX_NAME,
    MANIFEST_NAME,
    Checkpoint,
    Hashed,
    OutEntry,
    ShardPlan,
    atomic_directory,
    check_output_path,
    dump_manifest,
    index_json,
    load_manifest,
    open_checkpoint,
    order_in_shard,
    plan_shards,
    write_json,
    write_shards,
)
from .checkpoint.ownership import is_marlin_output
from .dtypes import DTYPE_NAMES, DTYPE_SIZES, TORCH_DTYPES
from .errors import (CheckpointError, MarlinConvertError, NotAnOutputError, NothingToConvert, NotQuantized,
                     UnknownFormatError, VerifyMismatch)
from .model_card import CARD_NAME, model_card
from .formats import (
    DenseCodes,
    Format,
    FormatContext,
    FormatPlan,
    LayerPlan,
    QuantizedLinear,
    TensorSpec,
    dequantize,
    detect_format,
    from_marlin,
    marlin_specs,
    to_marlin,
)
from .inspect_groups import layer_groups, totals
from .output_files import restore_source_files, set_aside_source_files, split_source_files
from .progress import Reporter, choose_reporter

SCHEMA_VERSION = 1
"""Version of every report's JSON form (`schema_version`); bumped when a field changes meaning or goes away."""

__all__ = [
    "SCHEMA_VERSION",
    "Reporter",
    "PackReport",
    "UnpackReport",
    "VerifyReport",
    "InspectReport",
    "pack_checkpoint",
    "unpack_checkpoint",
    "verify_checkpoint",
    "inspect_checkpoint",
    "resolve_device",
    "default_jobs",
]


def resolve_device(device: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; `cuda` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise MarlinConvertError("--device cuda: no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise MarlinConvertError(f"--device must be auto, cpu or cuda, not {device!r}")
    return torch.device(device)


def _check_jobs(jobs: int | None) -> int:
    if jobs is None:
        return default_jobs()
    if jobs < 1:
        raise MarlinConvertError(f"--jobs must be at least 1, not {jobs}")
    return jobs


# ----------------------------------------------------------------------------- planning


def _context(ckpt: Checkpoint) -> FormatContext:
    return FormatContext(config=ckpt.config, json_files=ckpt.json_files, tensors=ckpt.specs())


def _plan_source(ckpt: Checkpoint) -> tuple[type[Format], FormatPlan]:
    ctx = _context(ckpt)
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
    return fmt, fmt.plan(ctx, ckpt.read)


def _plan_to_json(plan: LayerPlan) -> dict[str, Any]:
    data = asdict(plan)
    data["scale_dtype"] = DTYPE_NAMES[plan.scale_dtype]
    return data


def _plan_from_json(data: dict[str, Any]) -> LayerPlan:
    return LayerPlan(**{**data, "scale_dtype": TORCH_DTYPES[data["scale_dtype"]]})


def _source_shard_limit(ckpt: Checkpoint) -> int | None:
    """Output shards stay under the largest source shard; a single-file source gives a single file."""
    if len(ckpt.shards) == 1:
        return None
    return max(sum(info.nbytes for info in header.tensors.values()) for header in ckpt.headers.values())


def _output_entries(ckpt: Checkpoint, eligible: dict[str, LayerPlan]) -> list[OutEntry]:
    """Every output tensor in source order: a layer's Marlin tensors where its first tensor was."""
    member_of = {name: prefix for prefix, plan in eligible.items() for name in plan.sources.values()}
    entries: list[OutEntry] = []
    done: set[str] = set()
    specs = ckpt.specs()
    for name, spec in specs.items():
        prefix = member_of.get(name)
        if prefix is None:
            entries.append(OutEntry(name, spec.dtype, spec.shape, ("copy", name)))
            continue
        if prefix in done:
            continue
        done.add(prefix)
        for suffix, out_spec in marlin_specs(eligible[prefix]).items():
            out_name = f"{prefix}.{suffix}"
            if out_name in specs and out_name not in member_of:
                raise CheckpointError(f"{ckpt.root}: output tensor {out_name} would overwrite a source tensor")
            entries.append(OutEntry(out_name, out_spec.dtype, out_spec.shape, ("layer", prefix, suffix)))
    return entries


def _marlin_config(config: dict[str, Any], fmt: type[Format], fplan: FormatPlan, eligible: list[LayerPlan],
                   copied: dict[str, TensorSpec]) -> dict[str, Any]:
    new = dict(config)
    if eligible:
        from .runtime.serving_config import serving_entries  # what the transformers loader needs (runtime.hf)

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


def _copy_files(src_root: Path, dst_root: Path, files: list[str]) -> None:
    for rel in files:
        target = dst_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_root / rel, target)


# ----------------------------------------------------------------------------- conversion of layers


class _LayerStream:
    """Hands out the tensors of each layer, part by part, in write order.

    With `jobs > 1`, the next layers are read and converted on worker threads while the current
    one is written (torch, hashing and file reads release the GIL), so reading, converting and
    writing overlap. Read-ahead stops while the layers in hand would exceed `budget` bytes of
    source tensors (the current layer always proceeds), which bounds memory whatever the
    checkpoint size. The order of the output never depends on `jobs`.
    """

    def __init__(self, make: Callable[[str], dict[str, Any]], order: list[str], jobs: int,
                 sizes: dict[str, int] | None = None, budget: int | None = None):
        self._make = make
        self._order = order
        self._sizes = sizes or {}
        self._budget = budget
        self._position = {prefix: i for i, prefix in enumerate(order)}
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="marlin-convert") if jobs > 1 else None
        self._ahead = max(jobs, 1)
        self._submitted = 0
        self._futures: dict[str, Future[dict[str, torch.Tensor]]] = {}
        self._ready: dict[str, dict[str, torch.Tensor]] = {}

    def take(self, prefix: str, part: str) -> torch.Tensor:
        tensors = self._ready.get(prefix)
        if tensors is None:
            tensors = self._ready[prefix] = self._produce(prefix)
        tensor = tensors.pop(part)
        if not tensors:
            del self._ready[prefix]
        return tensor

    def _produce(self, prefix: str) -> dict[str, torch.Tensor]:
        if self._pool is None:
            return self._make(prefix)
        here = self._position[prefix]
        limit = min(here + self._ahead, len(self._order))
        while self._submitted < limit:
            name = self._order[self._submitted]
            if self._submitted > here and self._budget is not None:
                in_hand = sum(self._sizes.get(p, 0) for p in self._order[here : self._submitted + 1])
                if in_hand > self._budget:
                    break
            self._futures[name] = self._pool.submit(self._make, name)
            self._submitted += 1
        return self._futures.pop(prefix).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> _LayerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hash_whole(outs: dict[str, Any]) -> dict[str, Any]:
    """Hash whole output tensors where they are made (a worker thread), so the writer only writes;
    streamed row blocks are hashed as they are written."""
    return {k: Hashed.of(v) if isinstance(v, torch.Tensor) else v for k, v in outs.items()}


def _layer_order(shards: list[ShardPlan]) -> list[str]:
    """Layer prefixes in the order their first tensor is written."""
    return list(dict.fromkeys(e.key[1] for s in shards for e in s.entries if e.key[0] == "layer"))


def _read_ahead_budget(tensor_sizes: Iterable[int]) -> int:
    """Bytes of layer sources in hand at once: 1.5x the largest tensor, so that with the streamed
    output blocks peak memory stays under 2x the largest tensor above the interpreter's."""
    return int(1.5 * max(tensor_sizes, default=0))


def default_jobs() -> int:
    """Worker threads by default: one per core, at most 16."""
    return max(1, min(16, os.cpu_count() or 1))


def _read_layer(ckpt: Checkpoint, plan: LayerPlan, digests: dict[str, str] | None = None,
                *, pinned: bool = False) -> dict[str, torch.Tensor]:
    tensors = {}
    for role, name in plan.sources.items():
        tensors[role], sha = ckpt.read_hashed(name, pinned=pinned)
        if digests is not None:
            digests[name] = sha
    return tensors


def _convert(fmt: type[Format], plan: LayerPlan, tensors: dict[str, torch.Tensor], device: torch.device,
             *, stream: bool = False) -> tuple[QuantizedLinear, dict[str, Any]]:
    """Decode a source layer and lay it out for Marlin. With `stream` on the CPU, `B` comes as row
    blocks made while it is written, so no whole `[n, k]` code matrix or `B` is ever held."""
    if device.type != "cpu":  # decode on the device too: only packed bytes cross the bus
        tensors = {role: (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True) for role, t in tensors.items()}
    try:
        rec = fmt.decode(plan, tensors)
    except MarlinConvertError as e:
        raise CheckpointError(f"{plan.prefix}: {e}") from None
    if device.type != "cpu":
        outs = to_marlin(rec)
        return rec, {k: _to_pinned_host(v) for k, v in outs.items()}
    return rec, to_marlin(rec, stream=stream)


def _to_pinned_host(t: torch.Tensor) -> torch.Tensor:
    """Device -> host into page-locked memory from torch's caching host allocator (reused, no fresh pages)."""
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t)
    return host


def _record_to_cpu(rec: QuantizedLinear) -> QuantizedLinear:
    move = lambda t: None if t is None else t.cpu()  # noqa: E731
    return QuantizedLinear(DenseCodes(rec.codes.full().cpu()), move(rec.scales), move(rec.zeros), move(rec.shift),
                           move(rec.g_idx), rec.group_size, rec.extra)


def _marlin_tensors(ckpt: Checkpoint, plan: LayerPlan) -> dict[str, torch.Tensor]:
    return {suffix: ckpt.read(f"{plan.prefix}.{suffix}") for suffix in marlin_specs(plan)}


def _restore_layer(fmt: type[Format], plan: LayerPlan, marlin: dict[str, torch.Tensor],
                   *, stream: bool = False) -> tuple[QuantizedLinear, dict[str, Any]]:
    """Marlin tensors -> (record, source tensors); undecodable (corrupt) tensors raise VerifyMismatch.
    With `stream`, the big source tensor comes as row blocks."""
    try:
        rec = from_marlin(marlin, plan)
        return rec, fmt.encode(rec, plan, stream=stream)
    except (MarlinConvertError, IndexError, RuntimeError, ValueError) as e:
        raise VerifyMismatch(f"{plan.prefix}: Marlin tensors cannot be decoded ({e})") from None


# ----------------------------------------------------------------------------- pack


@dataclass
class PackReport:
    source: str
    output: str
    format: str
    device: str
    layers_converted: int
    tensors_copied: int
    skipped: dict[str, str]
    warnings: list[str]
    shards: list[str]
    bytes_in: int
    bytes_out: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}


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
    reporter = choose_reporter(reporter, progress)
    src, out = Path(src), Path(out)
    dev = resolve_device(device)
    jobs = _check_jobs(jobs)
    check_output_path(out, inputs=[src], force=force)
    with open_checkpoint(src) as ckpt:
        fmt, fplan = _plan_source(ckpt)
        for w in fplan.warnings:
            reporter.warn(w)
        eligible = {p.prefix: p for p in fplan.layers if p.eligible}
        if strict and not eligible:
            raise NothingToConvert(f"{src}: no layer is eligible for Marlin")
        entries = _output_entries(ckpt, eligible)
        shards = plan_shards(entries, max_bytes=_source_shard_limit(ckpt), metadata={"format": "pt"})
        source_sha: dict[str, str] = {}
        specs = ckpt.specs()
        bytes_in = sum(ckpt.info(name).nbytes for name in specs)
        reporter.start(bytes_in, "pack")

        def make_layer(prefix: str) -> dict[str, torch.Tensor]:
            plan = eligible[prefix]
            tensors = _read_layer(ckpt, plan, source_sha, pinned=dev.type == "cuda")
            _, outs = _convert(fmt, plan, tensors, dev, stream=True)
            reporter.advance(sum(ckpt.info(n).nbytes for n in plan.sources.values()))
            return _hash_whole(outs)

        def produce(entry: OutEntry) -> torch.Tensor | bytearray:
            if entry.key[0] == "copy":
                raw = ckpt.read_raw(entry.name)
                reporter.advance(len(raw))
                return raw
            return layers.take(entry.key[1], entry.key[2])

        other = ckpt.other_files()
        sizes = {p: sum(ckpt.info(n).nbytes for n in plan.sources.values()) for p, plan in eligible.items()}
        budget = None if dev.type != "cpu" else _read_ahead_budget(ckpt.info(n).nbytes for n in specs)
        with atomic_directory(out, force=force) as tmp, _LayerStream(make_layer, _layer_order(shards), jobs, sizes, budget) as layers:
            out_sha = write_shards(tmp, shards, produce)
            for entry in entries:
                if entry.key[0] == "copy":
                    source_sha[entry.name] = out_sha[entry.name]
            verbatim, aside = split_source_files(other, with_card=bool(eligible))
            _copy_files(src, tmp, verbatim)
            set_aside = set_aside_source_files(src, tmp, aside)
            copied = {e.name: specs[e.name] for e in entries if e.key[0] == "copy"}
            config = _marlin_config(ckpt.config, fmt, fplan, list(eligible.values()), copied)
            write_json(tmp / CONFIG_NAME, config)
            if eligible:
                (tmp / CARD_NAME).write_text(model_card(
                    source=src.name, source_format=fmt.name, version=__version__, converted=len(eligible),
                    unconverted=config["quantization_config"]["modules_to_not_convert"],
                    quantization_config=config["quantization_config"],
                    source_card=set_aside.get(CARD_NAME, {}).get("stored_as")), encoding="utf-8")
            if len(shards) > 1:
                write_json(tmp / INDEX_NAME, index_json(shards))
            manifest = {
                "kind": "marlin-convert-manifest",
                "version": 1,
                "tool_version": __version__,
                "source_format": fmt.name,
                "source_config_text": ckpt.config_text,
                "source_index": ckpt.index,
                "source_shards": {
                    shard: {"metadata": h.metadata, "tensors": list(h.tensors)} for shard, h in ckpt.headers.items()
                },
                "source_tensors": {
                    name: {"dtype": s.dtype, "shape": list(s.shape), "sha256": source_sha[name]} for name, s in specs.items()
                },
                "output_shards": {s.name: [e.name for e in s.entries] for s in shards},
                "output_tensors": {
                    e.name: {"dtype": e.dtype, "shape": list(e.shape), "sha256": out_sha[e.name]}
                    for s in shards for e in s.entries
                },
                "layers": {prefix: _plan_to_json(plan) for prefix, plan in eligible.items()},
                "skipped_layers": {p.prefix: p.reason for p in fplan.layers if not p.eligible},
                "files": verbatim,
                "set_aside_files": set_aside,
                "warnings": fplan.warnings,
            }
            (tmp / MANIFEST_NAME).write_text(dump_manifest(manifest), encoding="utf-8")
    return PackReport(
        source=str(src),
        output=str(out),
        format=fmt.name,
        device=dev.type,
        layers_converted=len(eligible),
        tensors_copied=sum(1 for e in entries if e.key[0] == "copy"),
        skipped={p.prefix: p.reason or "" for p in fplan.layers if not p.eligible},
        warnings=list(fplan.warnings),
        shards=[s.name for s in shards],
        bytes_in=bytes_in,
        bytes_out=sum(s.nbytes for s in shards),
        seconds=round(time.perf_counter() - started, 3),
    )


# ----------------------------------------------------------------------------- unpack


@dataclass
class UnpackReport:
    source: str
    output: str
    format: str
    layers_restored: int
    tensors_copied: int
    shards: list[str]
    bytes_out: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}


def _open_marlin(path: Path) -> tuple[dict[str, Any], Checkpoint]:
    """The manifest and the opened Marlin checkpoint; any inconsistency is a VerifyMismatch."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory")
    if not (path / MANIFEST_NAME).is_file():
        raise NotAnOutputError(f"{path}: not a marlin-convert output (no {MANIFEST_NAME}); give the directory "
                               "written by `marlin-convert pack`")
    manifest = load_manifest(path / MANIFEST_NAME)
    try:
        ckpt = open_checkpoint(path)
    except CheckpointError as e:
        raise VerifyMismatch(str(e)) from None
    expected = manifest["output_tensors"]
    specs = ckpt.specs()
    for name, meta in expected.items():
        spec = specs.get(name)
        if spec is None or spec.dtype != meta["dtype"] or list(spec.shape) != meta["shape"]:
            ckpt.close()
            raise VerifyMismatch(f"{path}: tensor {name} missing or changed (dtype/shape differ from the manifest)")
    extra = sorted(set(specs) - set(expected))
    if extra:
        ckpt.close()
        raise VerifyMismatch(f"{path}: tensor {extra[0]} is not in the manifest")
    return manifest, ckpt


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

    Every source tensor comes back with its name, dtype, shape, bytes and shard; `config.json`
    and the index come back as they were. Each restored tensor is checked against the manifest's
    sha256 before the output is put in place. Unpacking runs on the CPU (its fast paths go straight
    from Marlin tiles to the source's packed words, in row blocks).
    Raises: VerifyMismatch when the Marlin checkpoint does not match its manifest.
    """
    started = time.perf_counter()
    reporter = choose_reporter(reporter, progress)
    marlin_dir, out = Path(marlin_dir), Path(out)
    jobs = _check_jobs(jobs)
    check_output_path(out, inputs=[marlin_dir], force=force)
    manifest, ckpt = _open_marlin(marlin_dir)
    with ckpt:
        fmt = Format.get(manifest["source_format"])
        plans = {prefix: _plan_from_json(d) for prefix, d in manifest["layers"].items()}
        member_of = {name: (prefix, role) for prefix, p in plans.items() for role, name in p.sources.items()}
        source_tensors = manifest["source_tensors"]
        shards = [
            ShardPlan(shard, order_in_shard(_restore_entries(meta["tensors"], source_tensors, member_of, plans)), meta["metadata"])
            for shard, meta in manifest["source_shards"].items()
        ]
        total = sum(e.nbytes for s in shards for e in s.entries)
        reporter.start(total, "unpack")

        def make_layer(prefix: str) -> dict[str, torch.Tensor]:
            plan = plans[prefix]
            return _hash_whole(_restore_layer(fmt, plan, _marlin_tensors(ckpt, plan), stream=True)[1])

        def produce(entry: OutEntry) -> torch.Tensor | bytearray:
            reporter.advance(entry.nbytes)
            if entry.key[0] == "copy":
                return ckpt.read_raw(entry.name)
            return layers.take(entry.key[1], entry.key[2])

        sizes = {p: sum(ckpt.info(f"{p}.{s}").nbytes for s in marlin_specs(plan)) for p, plan in plans.items()}
        budget = _read_ahead_budget(e.nbytes for s in shards for e in s.entries)
        with atomic_directory(out, force=force) as tmp, _LayerStream(make_layer, _layer_order(shards), jobs, sizes, budget) as layers:
            digests = write_shards(tmp, shards, produce)
            for name, meta in source_tensors.items():
                if digests.get(name) != meta["sha256"]:
                    raise VerifyMismatch(f"{name}: restored bytes differ from the source (sha256 mismatch)")
            _copy_files(marlin_dir, tmp, manifest["files"])
            restore_source_files(marlin_dir, tmp, manifest.get("set_aside_files", {}))
            if manifest["source_config_text"] is not None:
                (tmp / CONFIG_NAME).write_text(manifest["source_config_text"], encoding="utf-8")
            if manifest["source_index"] is not None:
                write_json(tmp / INDEX_NAME, manifest["source_index"])
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
                     plans: dict[str, LayerPlan]) -> list[OutEntry]:
    """A source shard's tensors, each layer's tensors together at its first tensor's place."""
    entries: list[OutEntry] = []
    in_shard = set(names)
    done: set[str] = set()
    for name in names:
        if name not in member_of:
            meta = source_tensors[name]
            entries.append(OutEntry(name, meta["dtype"], tuple(meta["shape"]), ("copy", name)))
            continue
        prefix = member_of[name][0]
        if prefix in done:
            continue
        done.add(prefix)
        for role, member in plans[prefix].sources.items():
            if member in in_shard:
                meta = source_tensors[member]
                entries.append(OutEntry(member, meta["dtype"], tuple(meta["shape"]), ("layer", prefix, role)))
    return entries


# ----------------------------------------------------------------------------- verify


@dataclass
class VerifyReport:
    output: str
    source: str | None
    format: str
    checks: list[dict[str, str]] = field(default_factory=list)
    """One entry per layer or tensor group: name, status ("PASS"/"FAIL"), detail."""

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c["status"] == "PASS" for c in self.checks)

    @property
    def failures(self) -> list[dict[str, str]]:
        return [c for c in self.checks if c["status"] != "PASS"]

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self), "ok": self.ok}


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))


def verify_checkpoint(
    out_dir: str | os.PathLike[str],
    src_dir: str | os.PathLike[str] | None = None,
    *,
    device: str = "auto",
    reporter: Reporter | None = None,
    gemm: bool = False,
    gemm_backend: str = "triton",
    forward: bool = False,
    progress: bool = False,
) -> VerifyReport:
    """Prove that `out_dir` is a lossless Marlin repack (of `src_dir` when given).

    Checks: (a) every output tensor's sha256 against the manifest; (b) with the source, each layer
    decoded and packed again gives the same bytes; (c) each layer unpacked in memory gives the
    source bytes (the source's, or the manifest's sha256 without it); (d) with the source, the
    dequantized weights from source and Marlin tensors are bit-equal. Copied tensors must match too.
    With `gemm`, (e) each layer also goes through a Marlin GEMM on the GPU against a dense reference (the
    source's record when given), see `gemm_check`: `gemm_backend` "triton" (ours, no compiler) or "quanto"
    (optimum-quanto's CUDA kernel).
    With `forward` (needs the source and transformers), (f) the same token batch runs through the dense
    source model and the converted one; see `runtime.forward_check`.
    Returns: a VerifyReport; `report.ok` is False when anything differs (the failures name the tensor).
    Raises: CheckpointError / UnknownFormatError for a bad source; VerifyMismatch when `out_dir`
    is not a readable marlin-convert output at all; MarlinConvertError when `gemm` is asked for
    without a CUDA GPU (or, for "quanto", without `pip install 'marlin-convert[gpu-verify]'`).
    """
    reporter = choose_reporter(reporter, progress)
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    if gemm:
        from .gemm_check import require_gemm

        require_gemm(gemm_backend)  # fails early, with what to install, when the GEMM cannot run here
    if forward and src_dir is None:
        raise MarlinConvertError("verify --forward needs the source checkpoint: verify SRC OUT --forward")
    if src_dir is not None and is_marlin_output(Path(src_dir)) and not is_marlin_output(out_dir):
        raise NotAnOutputError(f"{src_dir} looks like a marlin-convert output and {out_dir} does not; "
                               f"did you mean `verify {out_dir} {src_dir}`? (verify SRC OUT)")
    manifest, out = _open_marlin(out_dir)
    src: Checkpoint | None = None
    report = VerifyReport(output=str(out_dir), source=None if src_dir is None else str(src_dir), format=manifest["source_format"])
    try:
        fmt = Format.get(manifest["source_format"])
        if src_dir is not None:
            src = open_checkpoint(src_dir)
            _check_source_matches(src, manifest, report)
        plans = {prefix: _plan_from_json(d) for prefix, d in manifest["layers"].items()}
        members = {name for p in plans.values() for name in p.sources.values()}
        reporter.start(sum(out.info(n).nbytes for n in manifest["output_tensors"]), "verify")
        copied_bad = []
        for name in manifest["source_tensors"]:
            if name in members:
                continue
            raw = out.read_raw(name)
            reporter.advance(len(raw))
            digest = hashlib.sha256(raw).hexdigest()
            if digest != manifest["output_tensors"][name]["sha256"] or digest != manifest["source_tensors"][name]["sha256"]:
                copied_bad.append(name)
        report.checks.append(_check(
            "copied tensors", not copied_bad,
            f"{len(copied_bad)} changed: {', '.join(copied_bad[:5])}" if copied_bad else
            f"{len(manifest['source_tensors']) - len(members)} byte-identical",
        ))
        for prefix, plan in plans.items():
            report.checks.append(_verify_layer(out, src, fmt, plan, manifest, dev, gemm=gemm_backend if gemm else None))
            reporter.advance(sum(out.info(f"{prefix}.{s}").nbytes for s in marlin_specs(plan)))
    finally:
        out.close()
        if src is not None:
            src.close()
    if forward:
        from .runtime.forward_check import forward_checks

        report.checks.extend(forward_checks(Path(src_dir), out_dir, dev))  # type: ignore[arg-type]
    return report


def _check(name: str, ok: bool, detail: str) -> dict[str, str]:
    return {"name": name, "status": "PASS" if ok else "FAIL", "detail": detail}


def _check_source_matches(src: Checkpoint, manifest: dict[str, Any], report: VerifyReport) -> None:
    specs = src.specs()
    expected = manifest["source_tensors"]
    missing = sorted(set(expected) - set(specs))
    extra = sorted(set(specs) - set(expected))
    changed = [n for n in expected if n in specs and (specs[n].dtype != expected[n]["dtype"] or list(specs[n].shape) != expected[n]["shape"])]
    problems = [f"missing {missing[0]}"] if missing else []
    problems += [f"unexpected {extra[0]}"] if extra else []
    problems += [f"dtype/shape of {changed[0]} differs"] if changed else []
    report.checks.append(_check("source tensors", not problems, "; ".join(problems) or f"{len(expected)} tensors as recorded"))
    if problems:
        raise VerifyMismatch(f"{src.root}: not the checkpoint this output was made from ({'; '.join(problems)})")


def _gemm_check(rec: QuantizedLinear, marlin: dict[str, torch.Tensor], backend: str) -> tuple[bool, str]:
    """(ok, detail) of a Marlin GEMM (`backend`: triton or quanto) on the layer's Marlin tensors against `rec`."""
    from .gemm_check import check_layer

    result = check_layer(rec, marlin, backend=backend)
    return result.ok, result.detail


def _verify_layer(out: Checkpoint, src: Checkpoint | None, fmt: type[Format], plan: LayerPlan,
                  manifest: dict[str, Any], dev: torch.device, *, gemm: str | None = None) -> dict[str, str]:
    """One layer's verify check; `gemm`: also run that GEMM backend on it."""
    problems: list[str] = []
    marlin = {}
    for suffix in marlin_specs(plan):
        name = f"{plan.prefix}.{suffix}"
        marlin[suffix], digest = out.read_hashed(name)
        if digest != manifest["output_tensors"][name]["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    if problems:  # corrupt bytes: decoding them proves nothing more and may not even be possible
        if gemm and src is not None:  # ... but the real kernel can show the damage against the source
            problems.insert(0, f"{plan.prefix}: {_gemm_check(fmt.decode(plan, _read_layer(src, plan)), marlin, gemm)[1]}")
        return _check(plan.prefix, False, "; ".join(problems[:3]))
    try:
        rec_marlin, restored = _restore_layer(fmt, plan, marlin)
    except VerifyMismatch as e:
        return _check(plan.prefix, False, str(e))
    for role, name in plan.sources.items():
        if Hashed.of(restored[role]).sha256 != manifest["source_tensors"][name]["sha256"]:
            problems.append(f"{name}: unpacking {plan.prefix}.* does not give the source bytes")
    if src is not None:
        tensors = _read_layer(src, plan, digests := {})
        for name, digest in digests.items():
            if digest != manifest["source_tensors"][name]["sha256"]:
                problems.append(f"{name}: source bytes differ from the manifest")
        rec_src, repacked = _convert(fmt, plan, tensors, dev)
        for suffix, tensor in repacked.items():
            if not torch.equal(tensor.view(torch.uint8), marlin[suffix].contiguous().view(torch.uint8)):
                problems.append(f"{plan.prefix}.{suffix}: differs from a fresh pack of the source")
        if not _bits_equal(dequantize(_record_to_cpu(rec_src)), dequantize(rec_marlin)):
            problems.append(f"{plan.prefix}: dequantized weights differ between source and Marlin tensors")
    checks = "sha256, unpack" + (", repack, dequant" if src is not None else "") + " equal"
    if gemm:
        gemm_ok, note = _gemm_check(rec_src if src is not None else rec_marlin, marlin, gemm)
        if not gemm_ok:
            problems.insert(0, f"{plan.prefix}: {note}")
        checks += f"; {note}"
    return _check(plan.prefix, not problems, "; ".join(problems[:3]) if problems else checks)


# ----------------------------------------------------------------------------- inspect


@dataclass
class InspectReport:
    path: str
    format: str
    warnings: list[str]
    layers: list[dict[str, Any]]
    """Per quantized layer: prefix, n, k, group_size, sym, act_order, zero_points, eligible, reason."""
    tensors: list[dict[str, Any]]
    """Per tensor: name, dtype, shape, nbytes, action ("pack" / "copy"; for an output "packed" / "copied"), layer, reason."""
    converted_from: dict[str, Any] | None = None
    """For a marlin-convert output: source format, tool version, source bytes and tensor count; else None."""

    @property
    def groups(self) -> list[dict[str, Any]]:
        """Layers grouped by name pattern (`model.layers.*.mlp.down_proj`) and quantization."""
        return layer_groups(self.layers, self.tensors)

    @property
    def totals(self) -> dict[str, int]:
        return totals(self.layers, self.tensors)

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self), "groups": self.groups, "totals": self.totals}


def _layer_row(p: LayerPlan) -> dict[str, Any]:
    return {"prefix": p.prefix, "n": p.n, "k": p.k, "group_size": p.group_size, "eligible": p.eligible,
            "reason": p.reason, "sym": not (p.has_zeros or p.has_shift), "act_order": p.has_perm,
            "zero_points": p.has_zeros or p.has_shift}


def inspect_checkpoint(src: str | os.PathLike[str]) -> InspectReport:
    """What `pack` would do with each tensor of a checkpoint, and why layers are not eligible.
    For a marlin-convert output: what it was converted from, its layers and tensors."""
    src = Path(src)
    if is_marlin_output(src):
        return _inspect_output(src)
    with open_checkpoint(src) as ckpt:
        fmt, fplan = _plan_source(ckpt)
        by_name = {name: p for p in fplan.layers for name in p.sources.values()}
        tensors = []
        for name, spec in ckpt.specs().items():
            plan = by_name.get(name)
            action = "pack" if plan is not None and plan.eligible else "copy"
            reason = None if plan is None else plan.reason
            tensors.append({"name": name, "dtype": spec.dtype, "shape": list(spec.shape), "nbytes": ckpt.info(name).nbytes,
                            "action": action, "layer": plan.prefix if plan else None, "reason": reason})
        layers = [_layer_row(p) for p in fplan.layers]
        return InspectReport(path=str(src), format=fmt.name, warnings=list(fplan.warnings), layers=layers, tensors=tensors)


def _inspect_output(path: Path) -> InspectReport:
    manifest, ckpt = _open_marlin(path)
    with ckpt:
        plans = {prefix: _plan_from_json(d) for prefix, d in manifest["layers"].items()}
        layers = [_layer_row(p) for p in plans.values()]
        layers += [{"prefix": prefix, "n": 0, "k": 0, "group_size": None, "eligible": False, "reason": reason,
                    "sym": None, "act_order": None, "zero_points": None}
                   for prefix, reason in manifest.get("skipped_layers", {}).items()]
        member = {f"{prefix}.{suffix}": prefix for prefix, plan in plans.items() for suffix in marlin_specs(plan)}
        tensors = [{"name": name, "dtype": spec.dtype, "shape": list(spec.shape), "nbytes": ckpt.info(name).nbytes,
                    "action": "packed" if name in member else "copied", "layer": member.get(name), "reason": None}
                   for name, spec in ckpt.specs().items()]
        source = manifest["source_tensors"]
        converted_from = {
            "format": manifest["source_format"],
            "tool_version": manifest.get("tool_version"),
            "tensors": len(source),
            "bytes": sum(math.prod(t["shape"]) * DTYPE_SIZES[t["dtype"]] for t in source.values()),
            "shards": len(manifest["source_shards"]),
        }
        return InspectReport(path=str(path), format="marlin", warnings=list(manifest.get("warnings", [])),
                             layers=layers, tensors=tensors, converted_from=converted_from)
