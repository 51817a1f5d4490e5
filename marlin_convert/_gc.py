"""The console script's garbage collector, held off until torch is imported.

Why: importing torch (and typer, rich, numpy before it) allocates a few hundred thousand objects that live as
long as the process; with the collector on, the import triggers collections that scan them again and again.
On the 2-core machine, side by side, `pack`, `verify` and `unpack` of a 1.6 MB checkpoint took 1.09-1.16 s
(medians) with the collector on and 0.92-1.01 s with it held off (issue #15: fixed start; BENCHMARKS.md,
start-up). Once torch is in, the collector runs again
and what is alive then (modules, the plan) is moved to the permanent generation (`gc.freeze`), which later
collections skip. A library user's process is left as it is: `release` does nothing unless `hold` ran.
"""
from __future__ import annotations

import gc

__all__ = ["hold", "release"]

_held = False


def hold() -> None:
    """Turn the collector off until `release` (the console script, first thing)."""
    global _held
    if gc.isenabled():
        gc.disable()
        _held = True


def release() -> None:
    """Turn the collector back on if `hold` turned it off, freezing what is alive now; otherwise nothing."""
    global _held
    if _held:
        _held = False
        gc.freeze()
        gc.enable()
