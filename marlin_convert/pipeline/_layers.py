"""One layer at a time: read its source tensors, decode them, lay them out for Marlin (and back)."""
from __future__ import annotations

from concurrent.futures import Executor, Future
from typing import Any, Callable

import torch

from ..checkpoint import Checkpoint
from ..checkpoint.direct_file import ReadAsUsed
from ..errors import CheckpointError, MarlinConvertError, VerifyMismatch
from ..stage_timers import stage
from ..formats import DenseCodes, Format, LayerPlan, QuantizedLinear, from_marlin, marlin_specs, to_marlin

__all__ = ["read_layer", "convert_layer", "record_to_cpu", "marlin_tensors", "marlin_tensors_as_used", "b_rows_ready",
           "restore_layer",
           "ROWS_ON_DEMAND_MIN"]

ROWS_ON_DEMAND_MIN = 32 << 20
"""Bytes from which a row-sliced tensor is read a row range at a time (`read_layer`). Smaller ones are read whole
on a worker, where the read-ahead (at least `_stream.READ_AHEAD_FLOOR`, 64 MiB) holds several layers and their
reads overlap the kernel; read on demand they were read on the kernel's thread, one after the other (2 GB of
4096x4096 layers: pack 5.50 s against 4.85 s). From half that floor, read-ahead holds fewer than two such
layers and a whole read stands between two layers (28672x8192: the same time within the VM's spread, peak RSS
+115-121 MiB against +233 MiB over torch; BENCHMARKS.md). unpack takes the same line for the Marlin `B` it
unpacks while reading it (`marlin_tensors_as_used`)."""


def read_layer(ckpt: Checkpoint, plan: LayerPlan, digests: dict[str, Any] | None = None,
               *, pinned: bool = False, hasher: Executor | None = None,
               claim: Callable[[str], Future[str] | None] | None = None,
               row_sliced: frozenset[str] = frozenset(), windows: bool = False) -> dict[str, torch.Tensor]:
    """The layer's source tensors by role; each one's sha256 goes into `digests` when given (a Future when
    hashed on `hasher`, beside the conversion, or when `claim(name)` gives one being computed elsewhere).
    A role in `row_sliced` (`Format.row_sliced`) of at least `ROWS_ON_DEMAND_MIN` bytes whose sha256 `claim` gives,
    or that is in the page cache, is not read here: it comes as a `StoredRows`, read a row range at a time by
    whoever slices it (with no sha256 to take from a read of its own, reading it whole would cost its whole size
    in memory for nothing); one the pass has not reached is hashed from the page cache here (on `hasher`).
    Before, such a tensor was read whole: `verify SRC OUT` of a checkpoint in the page cache held its first
    layer's `qweight` and `B` whole at once, up to 2.9x the largest tensor above torch (BENCHMARKS.md, CPU). One
    that is not in the page cache is read whole, past it (through the page cache it measured 1.5x slower), or with
    `windows` comes as a `RowWindows` read once for several consumers, its sha256 from `RowWindows.finish` and not
    in `digests`."""
    tensors: dict[str, Any] = {}
    for role, name in plan.sources.items():
        digest = claim(name) if claim else None
        sliced = role in row_sliced and ckpt.info(name).nbytes >= ROWS_ON_DEMAND_MIN
        if sliced and digest is None and not ckpt.is_cached(name):
            if windows:
                tensors[role] = ckpt.row_windows(name)
                continue
            sliced = False
        if sliced:
            tensors[role] = ckpt.stored_rows(name)
            if digest is not None:
                sha: Any = digest
            elif hasher is not None:
                sha = hasher.submit(ckpt.hash_stored, name)
            else:
                sha = ckpt.hash_stored(name)
        else:
            tensors[role], sha = ckpt.read_hashed(name, pinned=pinned, hasher=hasher, digest=digest)
        if digests is not None:
            digests[name] = sha
    return tensors


def convert_layer(fmt: type[Format], plan: LayerPlan, tensors: dict[str, torch.Tensor], device: torch.device,
                  *, stream: bool = False) -> tuple[QuantizedLinear, dict[str, Any]]:
    """Decode a source layer and lay it out for Marlin. With `stream` on the CPU, `B` comes as row
    blocks made while it is written, so no whole `[n, k]` code matrix or `B` is ever held."""
    if device.type != "cpu":  # decode on the device too: only packed bytes cross the bus
        tensors = {role: (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True) for role, t in tensors.items()}
    try:
        with stage("decode"):
            rec = fmt.decode(plan, tensors)
    except MarlinConvertError as e:
        raise CheckpointError(f"{plan.prefix}: {e}") from None
    if device.type != "cpu":
        outs = to_marlin(rec)
        return rec, {k: _to_pinned_host(v) for k, v in outs.items()}
    with stage("layout: to Marlin (whole)" if not stream else "layout: to Marlin (small parts)"):
        return rec, to_marlin(rec, stream=stream)


def _to_pinned_host(t: torch.Tensor) -> torch.Tensor:
    """Device -> host into page-locked memory from torch's caching host allocator (reused, no fresh pages)."""
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t)
    return host


def record_to_cpu(rec: QuantizedLinear) -> QuantizedLinear:
    move = lambda t: None if t is None else t.cpu()  # noqa: E731
    return QuantizedLinear(DenseCodes(rec.codes.full().cpu()), move(rec.scales), move(rec.zeros), move(rec.shift),
                           move(rec.g_idx), rec.group_size, rec.extra)


def marlin_tensors(ckpt: Checkpoint, plan: LayerPlan) -> dict[str, torch.Tensor]:
    """The layer's Marlin tensors from a marlin-convert output, by suffix."""
    return {suffix: ckpt.read(f"{plan.prefix}.{suffix}") for suffix in marlin_specs(plan)}


def marlin_tensors_as_used(ckpt: Checkpoint, plan: LayerPlan) -> tuple[dict[str, torch.Tensor], Callable[[int], None] | None]:
    """`marlin_tensors`, with a `B` of at least `ROWS_ON_DEMAND_MIN` bytes still being read when it comes back,
    where it is read past the page cache (`Checkpoint.read_as_used`), and what waits for its first tile rows
    (for `restore_layer`'s `b_ready`): unpack's kernel then runs beside the read instead of after it. Smaller
    ones are read whole: the read-ahead holds several such layers, whose reads already overlap the kernel."""
    name = f"{plan.prefix}.B"
    if ckpt.info(name).nbytes < ROWS_ON_DEMAND_MIN:
        return marlin_tensors(ckpt, plan), None
    tensors = {suffix: ckpt.read(f"{plan.prefix}.{suffix}") for suffix in marlin_specs(plan) if suffix != "B"}
    tensors["B"], progress = ckpt.read_as_used(name)
    return tensors, None if progress is None else b_rows_ready(tensors["B"], progress)


def b_rows_ready(b: torch.Tensor, progress: ReadAsUsed) -> Callable[[int], None]:
    """What waits for the first tile rows of a Marlin `B` still being read (`restore_layer`'s `b_ready`)."""
    row_bytes = b.stride(0) * b.element_size()
    return lambda rows: progress.wait(rows * row_bytes)


def restore_layer(fmt: type[Format], plan: LayerPlan, marlin: dict[str, torch.Tensor],
                  *, stream: bool = False, b_ready: Callable[[int], None] | None = None
                  ) -> tuple[QuantizedLinear, dict[str, Any]]:
    """Marlin tensors -> (record, source tensors); undecodable (corrupt) tensors raise VerifyMismatch.
    With `stream`, the big source tensor comes as row blocks. The decoders check what they read and raise
    MarlinConvertError subclasses (e.g. ShapeError for a `perm` that is no permutation); anything else is a bug.
    `b_ready`: `B` is still being read (`marlin_tensors_as_used`)."""
    try:
        with stage("layout: from Marlin"):
            rec = from_marlin(marlin, plan, b_ready)
        with stage("layout: encode source" + (" (small parts)" if stream else " (whole)")):
            return rec, fmt.encode(rec, plan, stream=stream)
    except MarlinConvertError as e:
        raise VerifyMismatch(f"{plan.prefix}: Marlin tensors cannot be decoded ({e})") from None
