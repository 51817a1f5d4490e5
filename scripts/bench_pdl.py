#!/usr/bin/env python3
"""The reduce after a K split launched by programmatic dependent launch (`KernelConfig.pdl`, sm_90+) against the
same plan without it, side by side (issue #13, GEMM round 25). Per shape, row count, dtype and mode: CUDA-graph µs
of `triton_gemm.plan`'s launch shape for the call (the GEMV at one row where the rule takes it) with `pdl` as the
rule says and flipped, four copies of the weights in turn, and whether the two outputs are equal bit for bit (the
same kernels and sums: they must be). Random words, scales and zero points (timing does not depend on them).
JSON lines, then a table.

    PYTHONPATH=. python3 scripts/bench_pdl.py --shapes 28672x8192,4096x4096 --rows 1,2,16 --dtypes fp16,bf16
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS.parent), str(SCRIPTS)]

import torch  # noqa: E402

from _cuda_timing import graph_time_us  # noqa: E402
from marlin_convert.runtime import triton_gemm  # noqa: E402

SHAPES = ("28672x8192,8192x28672,4096x4096,14336x4096,4096x14336,8192x8192,18944x3584,3584x18944,5120x27648,"
          "1024x4096,512x3584")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _tensors(n: int, k: int, dtype: torch.dtype, zeros: bool, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random Marlin tensors of an N x K layer of group 128: any 32-bit word is valid codes."""
    words = torch.randint(-2**31, 2**31 - 1, (k // 16, 2 * n), dtype=torch.int32, device="cuda", generator=gen)
    s = (torch.rand(k // 128, n, device="cuda", generator=gen) * 0.02 + 1e-3).to(dtype)
    t = {"B": words, "s": s}
    if zeros:
        t["z"] = torch.randint(-2**31, 2**31 - 1, (k // 128, n // 8), dtype=torch.int32, device="cuda", generator=gen)
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=SHAPES)
    ap.add_argument("--rows", default="1,2,8,16")
    ap.add_argument("--dtypes", default="fp16,bf16")
    ap.add_argument("--modes", default="sym,z", help="sym: symmetric; z: Marlin zero points (group 128)")
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    gen = torch.Generator(device="cuda").manual_seed(25)
    table = []
    for text in args.shapes.split(","):
        n, k = (int(v) for v in text.split("x"))
        for mode in args.modes.split(","):
            for dname in args.dtypes.split(","):
                dtype = DTYPES[dname]
                layers = [_tensors(n, k, dtype, mode == "z", gen) for _ in range(4)]
                zmode = int(mode == "z")
                for m in (int(v) for v in args.rows.split(",")):
                    gemv = triton_gemm.gemv_fits(m, dtype, zmode, None) and triton_gemm.gemv_config(n, k, 128, sms,
                                                                                                   dtype)
                    cfg = gemv or triton_gemm.pick_config(m, n, k, 128, sms, zmode)
                    x = torch.randn(m, k, device="cuda", generator=gen).to(dtype)
                    row: dict[str, Any] = {"shape": text, "mode": mode, "dtype": dname, "m": m, "gemv": cfg.gemv,
                                           "balance": cfg.balance, "split": cfg.split_k, "rule_pdl": cfg.pdl}
                    outs = {}
                    for pdl in (cfg.pdl, not cfg.pdl):
                        c = dataclasses.replace(cfg, pdl=pdl)
                        plans = [triton_gemm.plan(m, dtype, x.device, t["B"], t["s"], group_size=128, z=t.get("z"),
                                                  config=c) for t in layers]
                        outs[pdl] = plans[0](x)
                        row["pdl" if pdl else "plain"] = round(graph_time_us([lambda p=p: p(x) for p in plans]), 1)
                    row["equal"] = torch.equal(outs[True], outs[False])
                    row["ratio"] = round(row["pdl"] / row["plain"], 3)
                    print(json.dumps(row), flush=True)
                    table.append(row)
    print("\n| N × K | mode | dtype | rows | grid | rule | pdl µs | plain µs | pdl ÷ plain | equal |")
    print("|---|---|---|---:|---|---|---:|---:|---:|---|")
    for r in table:
        grid = "GEMV" if r["gemv"] else (f"balanced {r['balance']}" if r["balance"] else f"split {r['split']}")
        print(f"| {r['shape']} | {r['mode']} | {r['dtype']} | {r['m']} | {grid} | {'pdl' if r['rule_pdl'] else '-'} "
              f"| {r['pdl']} | {r['plain']} | {r['ratio']} | {r['equal']} |")


if __name__ == "__main__":
    main()
