"""Per-stage timers for `--debug` (MARLIN_CONVERT_DEBUG=1): where a command's time goes.

Each stage (read, sha256, layout kernel, write, fsync, ...) adds up the seconds spent in it on every thread,
with a call count and the bytes it handled; `summary()` gives the table the CLI prints on stderr at the end.
Stages on different threads overlap, so their seconds add up to more than the wall time on a busy run.
Off (one dictionary lookup per call) unless the variable is set when the command starts.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

__all__ = ["enabled", "stage", "add", "timed_iter", "reset", "recorded", "summary"]

T = TypeVar("T")
_lock = threading.Lock()
_totals: dict[str, list[float]] = {}  # stage -> [seconds, calls, bytes]
_started = time.perf_counter()
_cpu_started = time.process_time()


def enabled() -> bool:
    return os.environ.get("MARLIN_CONVERT_DEBUG") == "1"


def add(name: str, seconds: float, nbytes: int = 0) -> None:
    with _lock:
        row = _totals.setdefault(name, [0.0, 0, 0])
        row[0] += seconds
        row[1] += 1
        row[2] += nbytes


@contextmanager
def stage(name: str, nbytes: int = 0) -> Iterator[None]:
    """Time the block as stage `name` (handling `nbytes`) when timers are on."""
    if not enabled():
        yield
        return
    t0 = time.perf_counter()
    try:
        yield
    finally:
        add(name, time.perf_counter() - t0, nbytes)


def timed_iter(name: str, items: Iterable[T]) -> Iterator[T]:
    """`items`, with the time spent making each one (e.g. a streamed kernel's row blocks) added to `name`."""
    if not enabled():
        yield from items
        return
    it = iter(items)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            add(name, time.perf_counter() - t0)
            return
        add(name, time.perf_counter() - t0, getattr(item, "nbytes", 0))
        yield item


def reset() -> None:
    global _started, _cpu_started
    with _lock:
        _totals.clear()
    _started, _cpu_started = time.perf_counter(), time.process_time()


def recorded() -> bool:
    """Whether any stage was timed (a usage error, or `--help`, times none)."""
    with _lock:
        return bool(_totals)


def summary() -> list[str]:
    """The stages, largest first: busy seconds (summed over threads), calls, MB and MB/s; then wall and CPU."""
    wall = time.perf_counter() - _started
    cpu = time.process_time() - _cpu_started
    with _lock:
        rows = sorted(_totals.items(), key=lambda kv: -kv[1][0])
    w = max([28] + [len(name) for name, _ in rows])  # the name column fits the longest stage name
    lines = [f"{'stage':<{w}} {'seconds':>8} {'calls':>7} {'MB':>9} {'MB/s':>8}"]
    for name, (sec, calls, nbytes) in rows:
        rate = f"{nbytes / 1e6 / sec:8.0f}" if nbytes and sec > 0 else f"{'':>8}"
        lines.append(f"{name:<{w}} {sec:8.3f} {int(calls):7d} {nbytes / 1e6:9.1f} {rate}")
    lines.append(f"{'wall since import':<{w}} {wall:8.3f}   (process CPU {cpu:.3f} s since then; stages overlap across threads)")
    return lines
