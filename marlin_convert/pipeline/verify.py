"""verify: prove that a Marlin checkpoint is a lossless repack (of its source, when given)."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import torch

from ..checkpoint import MANIFEST_NAME, Checkpoint, open_checkpoint, open_output
from ..checkpoint.file_records import check_output_files, check_source_files, source_shard_header
from ..checkpoint.ownership import is_marlin_output
from ..errors import MarlinConvertError, NotAnOutputError, VerifyMismatch
from ..stage_timers import stage
from ..formats import MARKER_FILES, Format, LayerPlan, QuantizedLinear, marlin_specs
from ._compare import made_equals, same_dequant_inputs, sha256_of
from ._layers import convert_layer, read_layer, restore_layer
from ._stream import LayerStream, read_ahead_budget
from .options import check_jobs, resolve_device, single_threaded_torch
from .progress import Reporter, choose_reporter
from .manifest_plans import manifest_plans
from .reports import VerifyReport, check_row

__all__ = ["verify_checkpoint"]

T = TypeVar("T")


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
    jobs: int | None = None,
) -> VerifyReport:
    """Prove that `out_dir` is a lossless Marlin repack (of `src_dir` when given).

    Checks: (a) every output tensor's sha256 against the manifest; (b) with the source, each layer
    decoded and packed again gives the same bytes; (c) each layer unpacked in memory gives the
    source bytes (the source's, or the manifest's sha256 without it); (d) with the source, the
    dequantized weights from source and Marlin tensors are bit-equal. Copied tensors must match too.
    With `gemm`, (e) each layer also goes through a Marlin GEMM on the GPU against a dense reference (the
    source's record when given), see `runtime.gemm_check`: `gemm_backend` "triton" (ours, no compiler) or
    "quanto" (optimum-quanto's CUDA kernel).
    With `forward` (needs the source and transformers), (f) the same token batch runs through the dense
    source model and the converted one; see `runtime.forward_check`.
    Layers are checked on `jobs` threads (default one per core) while whole files are hashed on another.
    Returns: a VerifyReport; `report.ok` is False when anything differs (the failures name the tensor).
    Raises: CheckpointError / UnknownFormatError for a bad source; VerifyMismatch when `out_dir`
    is not a readable marlin-convert output at all; MarlinConvertError when `gemm` is asked for
    without a CUDA GPU (or, for "quanto", without `pip install 'marlin-convert[gpu-verify]'`).
    """
    reporter = choose_reporter(reporter, progress)
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    if gemm:
        from ..runtime.gemm_check import require_gemm

        require_gemm(gemm_backend)  # fails early, with what to install, when the GEMM cannot run here
    if forward and src_dir is None:
        raise MarlinConvertError("verify --forward needs the source checkpoint: verify SRC OUT --forward")
    if src_dir is not None and is_marlin_output(Path(src_dir)) and not is_marlin_output(out_dir):
        raise NotAnOutputError(f"{src_dir} looks like a marlin-convert output and {out_dir} does not; "
                               f"did you mean `verify {out_dir} {src_dir}`? (verify SRC OUT)")
    report = _verify_tensors(out_dir, src_dir, reporter, gemm_backend if gemm else None, jobs, device=dev)
    if forward:
        from ..runtime.forward_check import forward_checks

        report.checks.extend(forward_checks(Path(src_dir), out_dir, dev))  # type: ignore[arg-type]
    return report


@single_threaded_torch
def _verify_tensors(out_dir: Path, src_dir: str | os.PathLike[str] | None, reporter: Reporter,
                    gemm: str | None, jobs: int | None, *, device: torch.device) -> VerifyReport:
    """Everything but the forward pass: files, copied tensors, and every layer on `jobs` threads."""
    dev = device
    manifest, out = open_output(out_dir, marker_files=MARKER_FILES)
    src: Checkpoint | None = None
    files_pool = ThreadPoolExecutor(1, thread_name_prefix="marlin-convert-files")
    report = VerifyReport(output=str(out_dir), source=None if src_dir is None else str(src_dir), format=manifest["source_format"])
    try:
        fmt = Format.get(manifest["source_format"])
        if src_dir is not None:
            src = open_checkpoint(src_dir, marker_files=MARKER_FILES)
            _check_source_matches(src, manifest, report)
        plans = manifest_plans(manifest, out_dir)
        files_at = len(report.checks)  # whole files are hashed on a thread beside the layer checks
        files = files_pool.submit(_check_files, out_dir, src, manifest)
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
            elif src is not None and hashlib.sha256(src.read_raw(name)).hexdigest() != digest:
                copied_bad.append(f"{name} (in the source)")
        report.checks.append(check_row(
            "copied tensors", not copied_bad,
            f"{len(copied_bad)} changed: {', '.join(copied_bad[:5])}" if copied_bad else
            f"{len(manifest['source_tensors']) - len(members)} byte-identical",
        ))
        out_sizes = {p: sum(out.info(f"{p}.{s}").nbytes for s in marlin_specs(plan)) for p, plan in plans.items()}
        sizes = {p: 2 * size for p, size in out_sizes.items()}  # the Marlin tensors and the source's in hand
        budget = read_ahead_budget(out.info(n).nbytes for n in manifest["output_tensors"])
        threads = check_jobs(jobs) if gemm is None else 1  # GPU GEMM checks run one at a time
        helper = ThreadPoolExecutor(threads, thread_name_prefix="marlin-convert-src") if src is not None and threads > 1 else None
        make = lambda prefix: {"row": _verify_layer(out, src, fmt, plans[prefix], manifest, dev,  # noqa: E731
                                                    gemm=gemm, helper=helper)}
        with _shut_down(helper), LayerStream(make, list(plans), threads, sizes, budget) as rows:
            for prefix in plans:
                report.checks.append(rows.take(prefix, "row"))
                reporter.advance(out_sizes[prefix])
        with stage("wait: whole files"):
            report.checks[files_at:files_at] = files.result()
    finally:
        files_pool.shutdown(wait=False, cancel_futures=True)
        out.close()
        if src is not None:
            src.close()
    return report


def _check_files(out_dir: Path, src: Checkpoint | None, manifest: dict[str, Any]) -> list[dict[str, str]]:
    """Whole files: every output file but the shards (whose header bytes and size `open_output` checked, and
    whose tensors are checked one by one) against its sha256; with the source, every source file against its
    record (a shard's header bytes and size, its tensors being checked one by one; any other file's sha256);
    without it, that each recorded source shard header lists the manifest's tensors (so unpack can rebuild it)."""
    rows = []
    problems, unchecked, checked = check_output_files(out_dir, manifest, MANIFEST_NAME)
    rows.append(check_row("output files", not problems, "; ".join(problems[:3]) or
                                   f"{checked} files and {len(manifest['output_shards'])} shard headers byte-identical"))
    if unchecked:
        rows.append(check_row("not checked", True, f"{', '.join(unchecked)}: added by the Hub or its download, not written by pack"))
    if src is not None:  # a shard by header bytes and size: its tensors' sha256 are checked with their layers
        problems = check_source_files(src, manifest)
        shards = len(manifest["source_shards"])
        detail = (f"{shards} shard headers and sizes as recorded, {len(manifest['source_files']) - shards} other files "
                  "byte-identical to the recorded sha256")
    else:
        problems = []
        for shard in manifest["source_shards"]:
            try:
                source_shard_header(manifest, shard, out_dir / MANIFEST_NAME)
            except VerifyMismatch as e:
                problems.append(str(e))
        detail = f"{len(manifest['source_shards'])} recorded shard headers list the recorded tensors (no source given)"
    rows.append(check_row("source files", not problems, "; ".join(problems[:3]) or detail))
    return rows


def _check_source_matches(src: Checkpoint, manifest: dict[str, Any], report: VerifyReport) -> None:
    specs = src.specs()
    expected = manifest["source_tensors"]
    missing = sorted(set(expected) - set(specs))
    extra = sorted(set(specs) - set(expected))
    changed = [n for n in expected if n in specs and (specs[n].dtype != expected[n]["dtype"] or list(specs[n].shape) != expected[n]["shape"])]
    problems = [f"missing {missing[0]}"] if missing else []
    problems += [f"unexpected {extra[0]}"] if extra else []
    problems += [f"dtype/shape of {changed[0]} differs"] if changed else []
    report.checks.append(check_row("source tensors", not problems, "; ".join(problems) or f"{len(expected)} tensors as recorded"))
    if problems:
        raise VerifyMismatch(f"{src.root}: not the checkpoint this output was made from ({'; '.join(problems)})")


def _gemm_check(rec: QuantizedLinear, marlin: dict[str, torch.Tensor], backend: str) -> tuple[bool, str]:
    """(ok, detail) of a Marlin GEMM (`backend`: triton or quanto) on the layer's Marlin tensors against `rec`."""
    from ..runtime.gemm_check import check_layer

    result = check_layer(rec, marlin, backend=backend)
    return result.ok, result.detail


def _verify_layer(out: Checkpoint, src: Checkpoint | None, fmt: type[Format], plan: LayerPlan,
                  manifest: dict[str, Any], dev: torch.device, *, gemm: str | None = None,
                  helper: Executor | None = None) -> dict[str, str]:
    """One layer's verify check; `gemm`: also run that GEMM backend on it. With the source, its half of the
    work (read and hash the source tensors, then repack them and compare) runs on `helper` beside the Marlin
    half (read and hash the Marlin tensors, then unpack them and compare): one layer at a time is all the memory
    budget holds when layers are large, and this way it keeps two cores busy."""
    problems: list[str] = []
    digests: dict[str, Any] = {}
    source_read = None if src is None else _run(helper, read_layer, src, plan, digests)
    marlin = {}
    for suffix in marlin_specs(plan):
        name = f"{plan.prefix}.{suffix}"
        marlin[suffix], digest = out.read_hashed(name)
        if digest != manifest["output_tensors"][name]["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    tensors: dict[str, torch.Tensor] | None = None if source_read is None else source_read.result()
    if problems:  # corrupt bytes: decoding them proves nothing more and may not even be possible
        if gemm and tensors is not None:  # ... but the real kernel can show the damage against the source
            problems.insert(0, f"{plan.prefix}: {_gemm_check(fmt.decode(plan, tensors), marlin, gemm)[1]}")
        return check_row(plan.prefix, False, "; ".join(problems[:3]))
    for name, digest in digests.items():  # the source's bytes against the manifest's sha256 (what unpack checks)
        if digest != manifest["source_tensors"][name]["sha256"]:
            problems.append(f"{name}: source bytes differ from the manifest")
    repacked = None if tensors is None else _run(helper, _repack, fmt, plan, tensors, marlin, dev)
    try:
        rec_marlin, restored = restore_layer(fmt, plan, marlin, stream=True)
    except VerifyMismatch as e:
        if repacked is not None:
            repacked.result()
        return check_row(plan.prefix, False, str(e))
    for role, name in plan.sources.items():  # unpack in memory: the source's bytes, or their recorded sha256
        if not (made_equals(restored[role], tensors[role]) if tensors is not None
                else sha256_of(restored[role]) == manifest["source_tensors"][name]["sha256"]):
            problems.append(f"{name}: unpacking {plan.prefix}.* does not give the source bytes")
    rec_src = None
    if repacked is not None:
        rec_src, differ = repacked.result()
        problems += differ
        if not same_dequant_inputs(rec_src, rec_marlin):
            problems.append(f"{plan.prefix}: dequantized weights differ between source and Marlin tensors")
    checks = "sha256, unpack" + (", repack, dequant" if src is not None else "") + " equal"
    if gemm:
        gemm_ok, note = _gemm_check(rec_src if rec_src is not None else rec_marlin, marlin, gemm)
        if not gemm_ok:
            problems.insert(0, f"{plan.prefix}: {note}")
        checks += f"; {note}"
    return check_row(plan.prefix, not problems, "; ".join(problems[:3]) if problems else checks)


def _repack(fmt: type[Format], plan: LayerPlan, tensors: dict[str, torch.Tensor], marlin: dict[str, torch.Tensor],
            dev: torch.device) -> tuple[QuantizedLinear, list[str]]:
    """(the source's record, problems) of a fresh pack of the source layer compared with its Marlin tensors."""
    rec_src, repacked = convert_layer(fmt, plan, tensors, dev, stream=True)
    return rec_src, [f"{plan.prefix}.{suffix}: differs from a fresh pack of the source"
                     for suffix, made in repacked.items() if not made_equals(made, marlin[suffix])]


@contextmanager
def _shut_down(pool: Executor | None) -> Iterator[None]:
    """Leave with `pool` shut down (what is still queued dropped, what runs waited for)."""
    try:
        yield
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _run(helper: Executor | None, fn: Callable[..., T], *args: Any) -> Future[T]:
    """`fn(*args)` on `helper`, or here and now without one."""
    if helper is not None:
        return helper.submit(fn, *args)
    done: Future[T] = Future()
    done.set_result(fn(*args))
    return done
