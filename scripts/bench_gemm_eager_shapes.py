#!/usr/bin/env python3
"""Launch shapes for eager calls (issue #13, GEMM round 16 in BENCHMARKS.md): a `GemmPlan` called back to back with
one synchronize (host and GPU overlapped: what an eager call costs) and replayed in a CUDA graph (four copies of
the weights in turn), per launch shape: `pick_config`'s ("picked"), without TMA ("notma"), without TMA and
without a K split ("notma_s1": one launch, no workspace), and with a split of at most 2 ("notma_s2"); bf16,
group 128, symmetric and Marlin zero points, 1 and 16 rows. Each entry: [eager µs, graph µs].

    PYTHONPATH=. python3 scripts/bench_gemm_eager_shapes.py
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _cuda_timing import graph_time_us  # noqa: E402
from bench_gemm import Mode, mode_layers  # noqa: E402
from marlin_convert.runtime import triton_gemm  # noqa: E402

SHAPES = [(1024, 4096), (4096, 4096), (4096, 14336), (28672, 8192), (8192, 28672)]


def eager_us(fn: Callable[[], Any], calls: int = 300, reps: int = 5) -> float:
    """µs per call, calls back to back with one synchronize at the end (median of `reps`)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / calls * 1e6)
    return round(statistics.median(times), 1)


def main() -> None:
    gen = torch.Generator(device="cuda").manual_seed(1)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for n, k in SHAPES:
        for mode in ("g128", "g128+z"):
            tensors = [layer.tensors() for layer in mode_layers(n, k, Mode.parse(mode), torch.bfloat16, 4, gen)]
            for m in (1, 16):
                x = torch.randn(m, k, device="cuda", generator=gen).bfloat16()
                base = triton_gemm.pick_config(m, n, k, 128, sms, 1 if "z" in mode else 0)
                row: dict[str, Any] = {"shape": f"{n}x{k}", "mode": mode, "m": m, "split": base.split_k, "tma": base.tma}
                for name, cfg in (("picked", base), ("notma", dataclasses.replace(base, tma=False)),
                                  ("notma_s1", dataclasses.replace(base, tma=False, split_k=1)),
                                  ("notma_s2", dataclasses.replace(base, tma=False, split_k=min(2, base.split_k)))):
                    plans = [triton_gemm.plan(m, torch.bfloat16, x.device, t["B"], t["s"], group_size=128,
                                              z=t.get("z"), config=cfg) for t in tensors]
                    graph = graph_time_us([lambda p=p: p(x) for p in plans])
                    row[name] = [eager_us(lambda: plans[0](x)), round(graph, 1)]
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
