"""Launch a Triton kernel again without Triton's per-call argument binding.

Called eagerly, a Triton launch costs tens of microseconds of host time (`JITFunction.run` binds and
specializes every argument, builds the cache key and the launch metadata), more than a decode-sized Marlin
GEMM takes on the GPU (GEMM round 14, BENCHMARKS.md). A `Launch` is one kernel with fixed compile-time
arguments, grid and launch options, whose per-call tensors are named slots: the first call for each
alignment of the slots' tensors goes through Triton (compiling if need be) and keeps the compiled kernel;
later calls hand the arguments straight to that kernel's launcher, as `JITFunction.run` itself ends.

The shortcut is taken only where it is the same launch: no launch hooks installed (profilers see every
launch through Triton), not while `torch.compile` traces, and only when what Triton returned is a compiled
kernel with the launcher interface of Triton 3.x; otherwise every call goes through Triton.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Sequence

import torch

__all__ = ["Slot", "Launch"]


class Slot:
    """A per-call argument of a `Launch`, filled from the values passed to it by name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Slot({self.name!r})"


@functools.lru_cache(maxsize=None)
def _runtime_knobs() -> Any:
    """Triton's `knobs.runtime` (where launch hooks are installed), or None for a Triton without knobs."""
    try:
        from triton import knobs
    except ImportError:  # pragma: no cover - Triton before 3.3
        return None
    return knobs.runtime


def _hooks_installed() -> bool:
    """Whether Triton would call launch hooks (a profiler): then every launch goes through Triton."""
    runtime = _runtime_knobs()
    if runtime is None:  # pragma: no cover - unknown Triton: never take the shortcut
        return True
    hooks = (runtime.launch_enter_hook, runtime.launch_exit_hook)
    return any(h is not None and getattr(h, "calls", True) for h in hooks)


@functools.lru_cache(maxsize=None)
def _stream_getter() -> Callable[[int], int]:
    """Triton's own `get_current_stream(device_index) -> raw CUDA stream`, looked up once."""
    from triton.runtime.driver import driver

    return driver.active.get_current_stream


class Launch:
    """`fn[grid](*args, **consts)` where the `Slot`s of `args` are filled per call (`__call__(values)`).

    Args:
        fn: a `triton.jit` function. grid: its launch grid (1 to 3 ints).
        args: its leading non-constexpr arguments in order; `Slot`s name per-call tensors (they must be
            tensors: their 16-byte alignment is part of Triton's specialization and of this launch's key).
        consts: its constexpr arguments and launch options (num_warps, num_stages, maxnreg), by name.
        device_index: the CUDA device the launch runs on, which must be the current device when it is called
            (its current stream is used); None (not CUDA, e.g. Triton's interpreter): every call through Triton.
    """

    def __init__(self, fn: Any, grid: Sequence[int], args: Sequence[Any], consts: dict[str, Any],
                 device_index: int | None) -> None:
        self.fn, self.consts, self.device_index = fn, dict(consts), device_index
        self.grid = tuple(grid) + (1,) * (3 - len(grid))
        self.args = list(args)
        self.slots = [(i, a.name) for i, a in enumerate(self.args) if isinstance(a, Slot)]
        self.compiled: dict[tuple[bool, ...], Any] = {}
        self.tail: tuple[Any, ...] | None = None  # the constexpr arguments after `args`, in signature order
        try:
            params = fn.params[len(self.args):]
            self.tail = tuple(self.consts[p.name] if p.name in self.consts else p.default for p in params)
            if any(t is inspect.Parameter.empty for t in self.tail):
                self.tail = None  # an argument left out: let Triton say so
        except (AttributeError, TypeError):  # pragma: no cover - another Triton: no shortcut
            self.tail = None
        if device_index is None:
            self.tail = None

    def __call__(self, values: dict[str, Any]) -> None:
        args = self.args.copy()
        for i, name in self.slots:
            args[i] = values[name]
        if self.tail is None or _hooks_installed() or torch.compiler.is_compiling():
            self.fn[self.grid](*args, **self.consts)
            return
        key = tuple(args[i].data_ptr() % 16 == 0 for i, _ in self.slots)
        kernel = self.compiled.get(key)
        if kernel is None:
            kernel = self.fn[self.grid](*args, **self.consts)  # binds, compiles if need be, and launches
            if hasattr(kernel, "result"):  # pragma: no cover - an asynchronous compile's future
                kernel = kernel.result()
            if all(hasattr(kernel, a) for a in ("run", "function", "packed_metadata")):
                self.compiled[key] = kernel
            else:  # pragma: no cover - another Triton: no shortcut
                self.tail = None
            return
        kernel.run(*self.grid, _stream_getter()(self.device_index), kernel.function, kernel.packed_metadata, None, None, None, *args, *self.tail)
