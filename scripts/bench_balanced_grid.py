#!/usr/bin/env python3
"""The swapped kernel on a balanced grid (issue #13, GEMM round 18 in BENCHMARKS.md). Up to 16 rows the kernel
runs 4 programs a multiprocessor, and a program's time is set by its steps, not by how many programs share the
multiprocessor: on the H200, one row of N x 8192 took 44.4-44.7 µs for N = 26624, 28672 and 30720 alike (416,
448 and 480 programs of 32 steps). The (column tile, split) grid gives 28672x8192 448 programs of 32 steps on 528
places; a balanced grid (`KernelConfig.balance`) gives every place an equal share, 27.2 steps. Here: the
CUDA-graph µs of the whole call (`triton_gemm.plan`, four copies of the weights in turn) with `pick_config`'s
launch shape as served (`pick_config`: the split grid, or a balanced one where `balance_pays`), on the split grid
alone, and on balanced grids of 3 and 4 programs a multiprocessor; and how far each output lies from the split
grid's (the partial sums are added in another order).

    PYTHONPATH=. python3 scripts/bench_balanced_grid.py [--shapes 28672x8192,...] [--modes g128,g128+z]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _cuda_timing import graph_time_us  # noqa: E402
from bench_gemm import Mode, mode_layers  # noqa: E402
from marlin_convert.runtime import triton_gemm  # noqa: E402

SHAPES = "28672x8192,8192x28672,14336x4096,4096x14336,4096x4096,1024x4096"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=SHAPES)
    ap.add_argument("--modes", default="g128,g128+z")
    ap.add_argument("--dtypes", default="fp16,bf16")
    ap.add_argument("--ms", default="1,16")
    ap.add_argument("--balances", default="3,4")
    args = ap.parse_args()
    gen = torch.Generator(device="cuda").manual_seed(18)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
    for dname in args.dtypes.split(","):
        dtype = dtypes[dname]
        for shape in args.shapes.split(","):
            n, k = (int(v) for v in shape.split("x"))
            for mode in args.modes.split(","):
                parsed = Mode.parse(mode)
                tensors = [layer.tensors() for layer in mode_layers(n, k, parsed, dtype, 4, gen)]
                zmode = 1 if "z" in mode else 0
                for m in (int(v) for v in args.ms.split(",")):
                    cfg = triton_gemm.pick_config(m, n, k, 128, sms, zmode)
                    split = cfg
                    if cfg.balance:  # the split grid pick_config had before it took the balanced one
                        split = dataclasses.replace(cfg, balance=0, split_k=1)
                        split = dataclasses.replace(split, split_k=triton_gemm.split_for(split, m, n, k, 2 * sms, 4))
                    x = torch.randn(m, k, device="cuda", generator=gen).to(dtype)
                    row: dict[str, Any] = {"shape": shape, "dtype": dname, "mode": mode, "m": m,
                                           "served_balance": cfg.balance, "split": split.split_k}
                    ref = None
                    for name, c in (("split_grid", split), ("served", cfg),
                                    *((f"balance{b}", dataclasses.replace(split, balance=int(b)))
                                      for b in args.balances.split(","))):
                        plans = [triton_gemm.plan(m, dtype, x.device, t["B"], t["s"], group_size=128, z=t.get("z"),
                                                  config=c) for t in tensors]
                        y = plans[0](x).float()
                        if ref is None:
                            ref = y
                        else:
                            row[name + "_diff"] = float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
                        row[name] = round(graph_time_us([lambda p=p: p(x) for p in plans]), 1)
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
