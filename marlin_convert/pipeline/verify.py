"""verify: prove that a Marlin checkpoint is a lossless repack (of its source, when given)."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ..checkpoint import MANIFEST_NAME, Checkpoint, open_checkpoint, open_output
from ..checkpoint.file_records import check_output_files, check_source_files, source_shard_header
from ..checkpoint.ownership import is_marlin_output
from ..errors import MarlinConvertError, NotAnOutputError, VerifyMismatch
from ..stage_timers import stage
from ..formats import MARKER_FILES, Format, LayerPlan, marlin_specs
from ._digests_ahead import DigestsAhead
from .options import check_device_name, check_gemm_backend, check_jobs, resolve_device, single_threaded_torch
from .progress import Reporter, choose_reporter
from .manifest_plans import manifest_plans
from .reports import VerifyReport, check_row

__all__ = ["verify_checkpoint"]


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
    check_device_name(device)
    check_gemm_backend(gemm_backend)
    if gemm:
        from ..runtime.gemm_check import require_gemm

        require_gemm(gemm_backend)  # fails early, with what to install, when the GEMM cannot run here
    if forward and src_dir is None:
        raise MarlinConvertError("verify --forward needs the source checkpoint: verify SRC OUT --forward")
    if src_dir is not None and is_marlin_output(Path(src_dir)) and not is_marlin_output(out_dir):
        raise NotAnOutputError(f"{src_dir} looks like a marlin-convert output and {out_dir} does not; "
                               f"did you mean `verify {out_dir} {src_dir}`? (verify SRC OUT)")
    manifest, out = open_output(out_dir, marker_files=MARKER_FILES)
    report = VerifyReport(output=str(out_dir), source=None if src_dir is None else str(src_dir), format=manifest["source_format"])
    with ExitStack() as stack:  # everything up to the layers' checks imports no torch ...
        stack.enter_context(out)
        src = None if src_dir is None else stack.enter_context(open_checkpoint(src_dir, marker_files=MARKER_FILES))
        if src is not None:
            _check_source_matches(src, manifest, report)
        plans = manifest_plans(manifest, out_dir)
        # ... so that the layer tensors in the page cache are hashed while torch is imported (`_digests_ahead`)
        workers = max(1, (os.cpu_count() or 1) // (1 if src is None else 2))  # threads a pass (one or two passes)
        out_ahead = stack.enter_context(DigestsAhead(out, [f"{p}.{s}" for p, plan in plans.items() for s in marlin_specs(plan)],
                                                     workers=workers))
        src_ahead = None if src is None else stack.enter_context(
            DigestsAhead(src, [name for plan in plans.values() for name in plan.sources.values()], workers=workers))
        _verify_tensors(report, manifest, out_dir, out, src, plans, reporter, gemm_backend if gemm else None, jobs, device=device,
                        ahead=(out_ahead, src_ahead))
    if forward:
        from ..runtime.forward_check import forward_checks

        report.checks.extend(forward_checks(Path(src_dir), out_dir, resolve_device(device)))  # type: ignore[arg-type]
    return report


@single_threaded_torch
def _verify_tensors(report: VerifyReport, manifest: dict[str, Any], out_dir: Path, out: Checkpoint, src: Checkpoint | None,
                    plans: dict[str, LayerPlan], reporter: Reporter, gemm: str | None, jobs: int | None, *, device: str,
                    ahead: tuple[DigestsAhead, DigestsAhead | None]) -> None:
    """Files, copied tensors, and every layer on `jobs` threads, into `report`."""
    from ._layer_checks import shut_down, verify_layer  # these import torch
    from ._stream import LayerStream, read_ahead_budget

    dev = resolve_device(device)
    files_pool = ThreadPoolExecutor(1, thread_name_prefix="marlin-convert-files")
    try:
        fmt = Format.get(manifest["source_format"])
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
        claim_src = None if ahead[1] is None else ahead[1].claim
        make = lambda prefix: {"row": verify_layer(out, src, fmt, plans[prefix], manifest, dev, gemm=gemm,  # noqa: E731
                                                   helper=helper, claim_out=ahead[0].claim, claim_src=claim_src)}
        with shut_down(helper), LayerStream(make, list(plans), threads, sizes, budget) as rows:
            for prefix in plans:
                report.checks.append(rows.take(prefix, "row"))
                reporter.advance(out_sizes[prefix])
        with stage("wait: whole files"):
            report.checks[files_at:files_at] = files.result()
    finally:
        files_pool.shutdown(wait=False, cancel_futures=True)


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


