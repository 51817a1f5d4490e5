"""verify's check of one layer: the Marlin tensors' and the source tensors' sha256, an unpack in memory compared
with the source, a fresh pack of the source compared with the Marlin tensors, the dequantization inputs, and
optionally a GPU GEMM."""
from __future__ import annotations

from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import torch

from ..checkpoint import Checkpoint, RowView, RowWindows
from ..errors import MarlinConvertError, VerifyMismatch
from ..formats import Format, LayerPlan, QuantizedLinear, marlin_specs
from ._compare import made_equals, same_dequant_inputs, sha256_of
from ._layers import ROWS_ON_DEMAND_MIN, b_rows_ready, convert_layer, read_layer, restore_layer
from .reports import check_row

__all__ = ["verify_layer", "shut_down"]

T = TypeVar("T")
Claim = Callable[[str], "Future[str] | None"]


def _gemm_check(rec: QuantizedLinear, marlin: dict[str, torch.Tensor], backend: str) -> tuple[bool, str]:
    """(ok, detail) of a Marlin GEMM (`backend`: triton or quanto) on the layer's Marlin tensors against `rec`."""
    from ..runtime.gemm_check import check_layer

    result = check_layer(rec, marlin, backend=backend)
    return result.ok, result.detail


def verify_layer(out: Checkpoint, src: Checkpoint | None, fmt: type[Format], plan: LayerPlan,
                 manifest: dict[str, Any], dev: torch.device, *, gemm: str | None = None,
                 helper: Executor | None = None, claim_out: Claim | None = None,
                 claim_src: Claim | None = None) -> dict[str, str]:
    """One layer's verify check; `gemm`: also run that GEMM backend on it. With the source, its half of the
    work (read and hash the source tensors, then repack them and compare) runs on `helper` beside the Marlin
    half (read and hash the Marlin tensors, then unpack them and compare): one layer at a time is all the memory
    budget holds when layers are large, and this way it keeps two cores busy. `claim_out` / `claim_src` give a
    tensor's sha256 when a pass ahead (`_digests_ahead`) has taken it."""
    problems: list[str] = []
    digests: dict[str, Any] = {}
    # words the source pass has hashed are read a row range at a time by the repack and the comparison with the
    # unpacked bytes (twice, from the page cache) instead of held whole; not for a GEMM check (it decodes all of
    # them) nor on a GPU (they are copied there whole)
    # (with the helper, words not in the page cache are read once, window by window, for both: `RowWindows`)
    row_sliced = fmt.row_sliced(plan) if dev.type == "cpu" and not gemm else frozenset()
    source_read = None if src is None else _run(helper, lambda: read_layer(src, plan, digests, claim=claim_src,
                                                                           row_sliced=row_sliced,
                                                                           windows=helper is not None))
    marlin = {}
    b_digest: Future[str] | None = None
    b_ready = None
    for suffix in marlin_specs(plan):
        name = f"{plan.prefix}.{suffix}"
        claimed = claim_out(name) if claim_out else None
        if suffix == "B" and claimed is None and not gemm and dev.type == "cpu" and out.info(name).nbytes >= ROWS_ON_DEMAND_MIN:
            # B unpacked (and compared with the repack) and hashed while it is read, its sha256 checked once that is done
            marlin[suffix], digest, progress = out.read_hashed_as_used(name)
            if progress is not None:
                b_digest, b_ready = digest, b_rows_ready(marlin[suffix], progress)
                continue
        else:
            marlin[suffix], digest = out.read_hashed(name, digest=claimed)
        if isinstance(digest, Future):
            digest = digest.result()
        if digest != manifest["output_tensors"][name]["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    tensors: dict[str, torch.Tensor] | None = None if source_read is None else source_read.result()
    if problems:  # corrupt bytes: decoding them proves nothing more and may not even be possible
        bad_b = _b_checked(plan, b_digest, manifest)
        if bad_b is not None:
            problems.insert(0, bad_b["detail"])
        if gemm and tensors is not None:  # ... but the real kernel can show the damage against the source
            problems.insert(0, f"{plan.prefix}: {_gemm_check(fmt.decode(plan, tensors), marlin, gemm)[1]}")
        return check_row(plan.prefix, False, "; ".join(problems[:3]))
    windows = {} if tensors is None else {role: t for role, t in tensors.items() if isinstance(t, RowWindows)}
    repack_in, expected = (None, None) if tensors is None else (_views(tensors), _views(tensors))  # both before either reads
    repacked = None if repack_in is None else _run(helper, lambda: _repack(fmt, plan, repack_in, _arriving(marlin, b_ready), dev))
    try:
        rec_marlin, restored = restore_layer(fmt, plan, marlin, stream=True, b_ready=b_ready)
    except VerifyMismatch as e:
        _close_views(expected)
        if repacked is not None:
            repacked.result()
        return _b_checked(plan, b_digest, manifest) or check_row(plan.prefix, False, str(e))
    try:
        for role, name in plan.sources.items():  # unpack in memory: the source's bytes, or their recorded sha256
            if not (made_equals(restored[role], expected[role]) if expected is not None
                    else sha256_of(restored[role]) == manifest["source_tensors"][name]["sha256"]):
                problems.append(f"{name}: unpacking {plan.prefix}.* does not give the source bytes")
    except MarlinConvertError:  # a B whose bytes are wrong may not unpack: that is what to report, if so
        bad_b = _b_checked(plan, b_digest, manifest)
        if bad_b is None:
            raise
        return bad_b
    finally:
        _close_views(expected)
    bad_b = _b_checked(plan, b_digest, manifest)
    if bad_b is not None:  # B's own bytes are wrong: what its unpack gave proves nothing more
        return bad_b
    rec_src = None
    if repacked is not None:
        rec_src, differ = repacked.result()
        problems += differ
        if not same_dequant_inputs(rec_src, rec_marlin):
            problems.append(f"{plan.prefix}: dequantized weights differ between source and Marlin tensors")
    for role, rows in windows.items():  # read once for both and hashed as read: the rest of it now
        digests[plan.sources[role]] = rows.finish()
    problems[:0] = [f"{name}: source bytes differ from the manifest"  # the source's bytes against the manifest's
                    for name, digest in digests.items()                # sha256 (what unpack checks)
                    if (digest.result() if isinstance(digest, Future) else digest) != manifest["source_tensors"][name]["sha256"]]
    checks = "sha256, unpack" + (", repack, dequant" if src is not None else "") + " equal"
    if gemm:
        gemm_ok, note = _gemm_check(rec_src if rec_src is not None else rec_marlin, marlin, gemm)
        if not gemm_ok:
            problems.insert(0, f"{plan.prefix}: {note}")
        checks += f"; {note}"
    return check_row(plan.prefix, not problems, "; ".join(problems[:3]) if problems else checks)


def _b_checked(plan: LayerPlan, digest: Future[str] | None, manifest: dict[str, Any]) -> dict[str, str] | None:
    """The failed row when `B`'s sha256, computed while it was read and unpacked, differs from the manifest;
    else None (also when `B` was checked before its unpack)."""
    name = f"{plan.prefix}.B"
    if digest is None or digest.result() == manifest["output_tensors"][name]["sha256"]:
        return None
    return check_row(plan.prefix, False, f"{name}: sha256 differs from the manifest")


def _repack(fmt: type[Format], plan: LayerPlan, tensors: dict[str, torch.Tensor], marlin: dict[str, torch.Tensor],
            dev: torch.device) -> tuple[QuantizedLinear, list[str]]:
    """(the source's record, problems) of a fresh pack of the source layer compared with its Marlin tensors."""
    try:
        rec_src, repacked = convert_layer(fmt, plan, tensors, dev, stream=True)
        return rec_src, [f"{plan.prefix}.{suffix}: differs from a fresh pack of the source"
                         for suffix, made in repacked.items() if not made_equals(made, marlin[suffix])]
    finally:
        _close_views(tensors)


class _ArrivingRows:
    """A 2-D tensor still being read (`marlin_tensors_as_used`): a row slice waits for its rows (`made_equals`)."""

    def __init__(self, tensor: torch.Tensor, ready: Callable[[int], None]):
        self._tensor, self._ready = tensor, ready
        self.shape, self.dtype = tensor.shape, tensor.dtype

    def dim(self) -> int:
        return self._tensor.dim()

    def __getitem__(self, rows: slice) -> torch.Tensor:
        self._ready(rows.indices(self._tensor.shape[0])[1])
        return self._tensor[rows]


def _arriving(marlin: dict[str, torch.Tensor], b_ready: Callable[[int], None] | None) -> dict[str, Any]:
    """The Marlin tensors, with a `B` still being read as `_ArrivingRows`."""
    return marlin if b_ready is None else {**marlin, "B": _ArrivingRows(marlin["B"], b_ready)}


def _views(tensors: dict[str, Any]) -> dict[str, Any]:
    """`tensors` with a view of its own for each `RowWindows` (one consumer each)."""
    return {role: t.view() if isinstance(t, RowWindows) else t for role, t in tensors.items()}


def _close_views(tensors: dict[str, Any] | None) -> None:
    for t in (tensors or {}).values():
        if isinstance(t, RowView):
            t.close()


@contextmanager
def shut_down(pool: Executor | None) -> Iterator[None]:
    """Leave with `pool` shut down (what is still queued dropped, what runs waited for)."""
    try:
        yield
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _run(helper: Executor | None, fn: Callable[[], T]) -> Future[T]:
    """`fn()` on `helper`, or here and now without one."""
    if helper is not None:
        return helper.submit(fn)
    done: Future[T] = Future()
    done.set_result(fn())
    return done
