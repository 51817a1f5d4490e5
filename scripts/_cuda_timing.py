"""CUDA-graph timing shared by the GPU benchmarks (scripts/bench_gemm.py, scripts/bench_runtime.py, ...)."""
from __future__ import annotations

import statistics
from typing import Any, Callable

import torch


def graph_time_us(fns: list[Callable[[], Any]], reps: int = 5, inner: int = 20) -> float:
    """Median microseconds per call: a CUDA graph of `inner` rounds over `fns` (rotating inputs), replayed."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(inner):
            for f in fns:
                f()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / (inner * len(fns)))
    del g
    return statistics.median(times)


def time_beside(row: dict[str, Any], name: str, calls: list[Callable[[], torch.Tensor]], ref: torch.Tensor | None,
                reps: int = 7) -> torch.Tensor:
    """`row[name]`: `graph_time_us` of `calls` (0.1 µs); given `ref`, `row[name + "_diff"]`: max |diff| / max |ref|
    of the first call's output against it. Returns `ref`, or the first call's float32 output where there is none
    (the reference of the calls timed after)."""
    y = calls[0]().float()
    if ref is not None:
        row[f"{name}_diff"] = float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
    row[name] = round(graph_time_us(calls, reps=reps), 1)
    return y if ref is None else ref


def profile_once(calls: list[Callable[[], Any]]) -> None:
    """Run `calls` once (compiling what needs it), then once more inside a CUDA profiler range, for Nsight
    Compute's `--profile-from-start off`."""
    for call in calls:
        call()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    for call in calls:
        call()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()
