#!/usr/bin/env python3
"""The Triton Marlin GEMM called eagerly, as transformers' `generate` calls a layer (issue #13, BENCHMARKS.md):
the host's time per call beside the GPU's, with the words read through TMA (a host tensor descriptor built
every call) and with plain loads.

    PYTHONPATH=. python3 scripts/bench_gemm_eager.py [--out DIR] [--modules]

Per shape at M = 1 and 16 (group 128, fp16): symmetric, `marlin_gemm` as served (no config: it picks one),
`pick_config`'s shape passed in (TMA on an H200) and the same with `tma=False`; Marlin zero points as served
and in the symmetric shape with their terms added in the reduce (`zred`: three launches); each timed three ways: CUDA-graph replays (the GPU's time, as `bench_gemm.py`), eager calls
back to back with one synchronize at the end (host and GPU overlapped: the larger of the two), and the host
alone (wall time of the Python call, the kernel queued but not waited for). JSON to DIR/bench_gemm_eager.json.
`--modules`: instead, `MarlinLinear.forward` with optimum-quanto's Marlin kernel first (fp16, group 128) and with
ours first, with and without the layer's launch plans (`MODULE_MODES`: symmetric, zero points and act-order at
fp16 group 128, bf16, group 32), timed the same three ways (JSON: bench_gemm_eager_modules.json).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _cuda_timing import graph_time_us  # noqa: E402
from marlin_convert.layout import pack_zeros, permute_scales  # noqa: E402
from marlin_convert.layout.pack_triton import pack_codes_cuda  # noqa: E402
from marlin_convert.runtime.triton_gemm import marlin_gemm, pick_config  # noqa: E402

SHAPES = [(28672, 8192), (8192, 28672), (4096, 4096)]


def eager_us(fn, calls: int = 200, reps: int = 5) -> tuple[float, float]:
    """(µs per call back to back with one synchronize, µs of host time per call), medians of `reps`."""
    fn()
    torch.cuda.synchronize()
    both, host = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        host.append((t1 - t0) / calls * 1e6)
        both.append((t2 - t0) / calls * 1e6)
    return statistics.median(both), statistics.median(host)


def timed_row(call: Callable[[], Any], **fields: Any) -> dict[str, Any]:
    """`fields` with `call`'s µs per call replayed in a CUDA graph, eagerly (host and GPU) and on the host alone;
    printed as a JSON line."""
    graph = graph_time_us([call])
    both, host = eager_us(call)
    row = dict(fields, graph_us=round(graph, 2), eager_us=round(both, 2), host_us=round(host, 2))
    print(json.dumps(row), flush=True)
    return row


MODULE_MODES = [("g128", torch.float16), ("g128+z", torch.float16), ("g128+act", torch.float16),
                ("g128", torch.bfloat16), ("g32", torch.float16)]
"""--modules: (mode, activation dtype); optimum-quanto's kernel serves the fp16 group-128 ones only."""


def module_rows(shapes: list[tuple[int, int]], ms: list[int]) -> list[dict[str, Any]]:
    """`MarlinLinear.forward` (what transformers calls) per `MODULE_MODES` entry: optimum-quanto's Marlin kernel
    first (where it serves), our Triton GEMM first with the layer's launch plans (as served), and the same with
    plans off (`backends.PLAN_MAX_ROWS = 0`: checks, launch rule and Triton's binding every call, as before
    round 15); eager and graph-replayed."""
    from bench_gemm import Mode, mode_layers
    from marlin_convert.runtime import backends

    rows = []
    plan_rows = backends.PLAN_MAX_ROWS
    for n, k in shapes:
        gen = torch.Generator(device="cuda").manual_seed(n + k)
        for mname, dtype in MODULE_MODES:
            mode = Mode.parse(mname)
            layer = mode_layers(n, k, mode, dtype, 1, gen)[0]
            quanto = dtype == torch.float16 and mode.group_size == 128
            for m in ms:
                x = torch.randn(m, k, device="cuda", generator=gen).to(dtype)
                ways = ([("quanto first", "quanto", plan_rows)] if quanto else []) + [
                    ("triton first", "triton", plan_rows), ("triton first, no plans", "triton", 0)]
                for label, first, plans in ways:
                    backends.set_order([first, "reference"])
                    backends.PLAN_MAX_ROWS = plans
                    try:
                        rows.append(timed_row(lambda: layer(x), n=n, k=k, m=m, mode=mname, dtype=str(dtype)[6:],
                                              variant=label))
                    finally:
                        backends.PLAN_MAX_ROWS = plan_rows
            del layer
        backends.set_order(None)
        torch.cuda.empty_cache()
    return rows


def gemm_rows() -> list[dict[str, Any]]:
    """`marlin_gemm` per shape at 1 and 16 rows: symmetric as served, with `pick_config`'s shape passed in,
    the same with plain loads; zero points as served and with `zred`."""
    rows = []
    for n, k in SHAPES:
        gen = torch.Generator(device="cuda").manual_seed(n + k)
        codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, device="cuda", generator=gen)
        scales = (torch.rand(k // 128, n, device="cuda", generator=gen) * 0.02 + 1e-3).half()
        B, s = pack_codes_cuda(codes), permute_scales(scales, group_size=128, k=k)
        zeros = torch.randint(0, 16, (k // 128, n), dtype=torch.uint8, device="cuda", generator=gen)
        z = pack_zeros(zeros.cpu()).cuda()
        del codes
        for m in (1, 16):
            x = torch.randn(m, k, device="cuda", generator=gen).half()
            base, zbase = pick_config(m, n, k, 128), pick_config(m, n, k, 128, zmode=1)
            for name, cfg, zp in (("as served", None, None), ("default", base, None),
                                  ("plain loads", dataclasses.replace(base, tma=False), None),
                                  ("zero points as served", None, z),
                                  ("zero points zred", dataclasses.replace(base, zred=True, xperm=True), z)):
                call = lambda cfg=cfg, zp=zp: marlin_gemm(x, B, s, group_size=128, z=zp, config=cfg)  # noqa: E731
                rows.append(timed_row(call, n=n, k=k, m=m, variant=name,
                                      tma=(cfg or (base if zp is None else zbase)).tma))
        del B, s
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--modules", action="store_true",
                    help="time MarlinLinear's forward with optimum-quanto's Marlin kernel first and with ours first, "
                         "with and without launch plans")
    ap.add_argument("--shapes", default=",".join(f"{n}x{k}" for n, k in SHAPES), help="--modules: N x K, comma-separated")
    ap.add_argument("--ms", default="1,16", help="--modules: rows of x, comma-separated")
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), flush=True)
    if args.modules:
        shapes = [tuple(int(v) for v in t.split("x")) for t in args.shapes.split(",")]
        rows = module_rows(shapes, [int(v) for v in args.ms.split(",")])  # type: ignore[arg-type]
    else:
        rows = gemm_rows()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "bench_gemm_eager_modules.json" if args.modules else "bench_gemm_eager.json"
    (out / name).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
