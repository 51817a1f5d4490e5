#!/usr/bin/env python3
"""The one-row GEMV (`KernelConfig.gemv`) against the tensor-core kernel and dense fp16, side by side (issue #13,
GEMM round 22; `--dtype bf16`: bfloat16 x and scales against dense bf16, round 23). Per shape: CUDA-graph µs of
one row through `triton_gemm.plan` (four copies of the weights in turn) with `gemv_config`'s split (the rule),
with `pick_config`'s tensor-core shape (the kernel the GEMV replaces; for `--mode g128+z` the zero-point shape),
with the GEMV at each `--splits` value, and dense `F.linear`; how far each GEMV output lies from the tensor-core
one's (max |diff| / max |y|). JSON lines, then a table.

    PYTHONPATH=. python3 scripts/bench_gemv.py --shapes 28672x8192,8192x28672 --splits 4,8,14 --mode g128
    PYTHONPATH=. python3 scripts/bench_gemv.py --shapes 256x4096 --splits 3 --mode g128+z --dry-run  # CPU

`--dry-run` runs every call once on the CPU in Triton's interpreter, its inline PTX emulated
(`tests/_support/ptx_emulation.py`; a side venv with Triton 3.6 and numpy < 2.3), untimed: the script's own check.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS.parent), str(SCRIPTS)]
if "--dry-run" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"  # before Triton is imported
SHAPES = ("28672x8192,8192x28672,4096x4096,14336x4096,4096x14336,8192x8192,18944x3584,3584x18944,3584x3584,"
          "1024x4096,512x3584,1024x8192")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=SHAPES)
    ap.add_argument("--splits", default="", help="GEMV splits timed beside the rule's (comma-separated)")
    ap.add_argument("--mode", default="g128", choices=("g128", "g-1", "g128+z", "g-1+z"),
                    help="+z: Marlin zero points (the GEMV runs them by an explicit config only, GEMV_ZMODES)")
    ap.add_argument("--dtype", default="fp16", choices=("fp16", "bf16"), help="x's (and the scales') dtype")
    ap.add_argument("--dry-run", action="store_true", help="on the CPU in Triton's interpreter, untimed")
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F

    import _cuda_timing
    from bench_gemm import Mode, mode_layers

    from marlin_convert.runtime import triton_gemm

    device = "cpu" if args.dry_run else "cuda"
    if args.dry_run:
        from tests._support import ptx_emulation

        ptx_emulation.install()
        _cuda_timing.graph_time_us = lambda fns, reps=5: [f() for f in fns] and 1.0
    graph_time_us, time_beside = _cuda_timing.graph_time_us, _cuda_timing.time_beside
    mode = Mode.parse(args.mode)
    gen = torch.Generator(device=device).manual_seed(22)
    sms = torch.cuda.get_device_properties(0).multi_processor_count if device == "cuda" else 132
    dtype = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    rows = []
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.split("x"))
        gs = k if mode.group_size == -1 else mode.group_size
        layers = [layer.tensors() for layer in mode_layers(n, k, mode, dtype, 4, gen, device)]
        x = torch.randn(1, k, device=device, generator=gen).to(dtype)
        rule = triton_gemm.gemv_config(n, k, gs, sms, dtype)
        zmode = 1 if mode.zero_point else 0
        configs: dict[str, Any] = {"tensor_cores": triton_gemm.pick_config(1, n, k, gs, sms, zmode)}
        if rule is not None:
            configs["rule"] = rule
        nb = 2 if n % 128 == 0 else 1
        for split in (int(v) for v in args.splits.split(",") if v):
            configs[f"split{split}"] = triton_gemm.KernelConfig(1, 8, nb, split_k=split, gemv=True)
        row: dict[str, Any] = {"shape": shape, "mode": args.mode, "dtype": args.dtype,
                               "rule_split": rule.split_k if rule else None}
        ref = None
        for name, cfg in configs.items():
            plans = [triton_gemm.plan(1, dtype, x.device, t["B"], t["s"], group_size=gs, z=t.get("z"), config=cfg)
                     for t in layers]
            ref = time_beside(row, name, [lambda p=p: p(x) for p in plans], ref)
        dense = [torch.randn(n, k, device=device, generator=gen).to(dtype) for _ in range(4)]
        row["dense"] = round(graph_time_us([lambda w=w: F.linear(x, w) for w in dense], reps=7), 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\nN x K | dense µs | tensor cores µs (× dense) | GEMV, rule's split µs (÷ tensor cores, × dense)"
          " | splits µs")
    for r in rows:
        rule = (f"{r['rule']} (split {r['rule_split']}; {r['rule'] / r['tensor_cores']:.2f}, "
                f"{r['dense'] / r['rule']:.2f}×)" if "rule" in r else "-")
        splits = ", ".join(f"{key[5:]}: {v}" for key, v in r.items() if key.startswith("split") and not
                           key.endswith("_diff"))
        print(f"{r['shape']} | {r['dense']} | {r['tensor_cores']} ({r['dense'] / r['tensor_cores']:.2f}×) | {rule} | "
              f"{splits}")


if __name__ == "__main__":
    main()
