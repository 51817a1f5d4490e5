"""The options every command shares: where the layout math runs and how many layers go in parallel.
torch is imported when a device is resolved, not with this module (pack starts work before that import)."""
from __future__ import annotations

import functools
import inspect
import os
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .._gc import release as release_collector
from ..errors import MarlinConvertError
from ..gemm_backends import GEMM_BACKENDS, check_gemm_backend  # verify checks the name whether or not --gemm is given

if TYPE_CHECKING:
    import torch

__all__ = ["GEMM_BACKENDS", "resolve_device", "check_device_name", "check_gemm_backend", "check_jobs", "default_jobs",
           "single_threaded_torch"]


def resolve_device(device: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; `cuda` without a GPU is an error."""
    import torch

    check_device_name(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise MarlinConvertError("--device cuda: no CUDA device is available")
    return torch.device(device)


def check_device_name(device: str) -> None:
    """`device` is one of the names `resolve_device` takes (checked without importing torch)."""
    if device not in ("auto", "cpu", "cuda"):
        raise MarlinConvertError(f"--device must be auto, cpu or cuda, not {device!r}")


def default_jobs() -> int:
    """Worker threads by default: one per core, at most 16."""
    return max(1, min(16, os.cpu_count() or 1))


def check_jobs(jobs: int | None) -> int:
    """`jobs` as given (at least 1), or `default_jobs()` for None."""
    if jobs is None:
        return default_jobs()
    if jobs < 1:
        raise MarlinConvertError(f"--jobs must be at least 1, not {jobs}")
    return jobs


F = TypeVar("F", bound=Callable[..., Any])


def single_threaded_torch(command: F) -> F:
    """Run `command` with torch's CPU ops on one thread each, then put the setting back. The commands run
    layers in parallel on their own worker threads; torch's intra-op threads on top of those only contend
    (OpenMP workers spinning for cores the layer threads hold): on 2 cores, verify and unpack ran 2x slower.
    A `device` keyword (a name or a torch.device) that is not the CPU leaves torch's setting alone."""

    param = inspect.signature(command).parameters.get("device")
    default_device = param.default if param is not None else "cpu"  # unpack has no device: it runs on the CPU

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        import torch

        release_collector()  # the console script held it off for the imports (`_gc`)
        device = kwargs.get("device", default_device)
        if (device if isinstance(device, torch.device) else resolve_device(device)).type != "cpu":
            return command(*args, **kwargs)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return command(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return run  # type: ignore[return-value]
