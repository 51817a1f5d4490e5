#!/usr/bin/env python3
"""The Triton GEMM's served launch shape against named variants of it, side by side (issue #13; GEMM round 19 in
BENCHMARKS.md). Per shape, batch and dtype: the CUDA-graph µs of the whole call (`triton_gemm.plan`, four copies
of the weights in turn) with `pick_config`'s shape, and with each variant (the served shape with some
`KernelConfig` fields replaced); how far each variant's output lies from the served one's; and the registers and
spills of each compiled kernel.

    PYTHONPATH=. python3 scripts/bench_launch_variants.py --mode g128+z --ms 1,4,16 \\
        --variants 'b4:balance=4;split:balance=0;cap0b3:maxnreg=0,balance=3'

A variant is `name:field=value,...` (ints; a bool field takes 0 / 1). `balance=0` alone also sets the split
`pick_config` gives the unbalanced shape. `--tree PATH` runs another checkout's `marlin_convert` (e.g. `git
archive` of the commit before a change) with this checkout's timing helpers: run once per tree for a before /
after. JSON lines on stdout, then a table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
SHAPES = "28672x8192,8192x28672,8192x8192,14336x4096,4096x14336,3584x18944,18944x3584,27648x5120,5120x27648,4096x4096"


def parse_fields(text: str) -> dict[str, int]:
    """`'f=v,f=v'` -> {field: value}."""
    return {f: int(v) for f, v in (kv.split("=") for kv in filter(None, text.split(",")))}


def parse_variants(text: str) -> list[tuple[str, dict[str, int]]]:
    """`'name:f=v,f=v;name2:...'` -> [(name, {field: value})]."""
    out = []
    for part in filter(None, text.split(";")):
        name, _, fields = part.partition(":")
        out.append((name, parse_fields(fields)))
    return out


def with_fields(cfg: Any, fields: dict[str, int], m: int, n: int, k: int, sms: int, triton_gemm: Any) -> Any:
    """`cfg` (a `KernelConfig`) with `fields` replaced (a bool field from 0 / 1); `balance=0` without `split_k`
    also takes the split `split_for` gives the unbalanced shape (as `pick_config` would)."""
    cfg = dataclasses.replace(cfg, **{f: bool(v) if isinstance(getattr(cfg, f), bool) else v for f, v in fields.items()})
    if fields.get("balance") == 0 and "split_k" not in fields:
        cfg = dataclasses.replace(cfg, split_k=triton_gemm.split_for(cfg, m, n, k, 2 * sms, 4))
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=SHAPES)
    ap.add_argument("--mode", default="g128+z", help="a layer mode of bench_gemm.py (group 128 or -1)")
    ap.add_argument("--dtypes", default="fp16,bf16")
    ap.add_argument("--ms", default="1,4,16")
    ap.add_argument("--variants", default="")
    ap.add_argument("--tree", default=str(SCRIPTS.parent), help="the checkout whose marlin_convert is timed")
    args = ap.parse_args()
    tree = Path(args.tree).resolve()
    sys.path[:0] = [str(tree), str(SCRIPTS)]
    import torch

    from marlin_convert.runtime import triton_gemm  # before bench_gemm, which puts this checkout first on the path

    from _cuda_timing import time_beside
    from bench_gemm import Mode, mode_layers

    if not Path(triton_gemm.__file__).resolve().is_relative_to(tree):
        sys.exit(f"marlin_convert came from {triton_gemm.__file__}, not {tree}")
    mode = Mode.parse(args.mode)
    zmode = 1 if mode.zero_point == "int" else (2 if mode.zero_point == "float" else 0)
    variants = parse_variants(args.variants)
    gen = torch.Generator(device="cuda").manual_seed(19)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
    rows = []
    for dname in args.dtypes.split(","):
        dtype = dtypes[dname]
        for shape in args.shapes.split(","):
            n, k = (int(v) for v in shape.split("x"))
            gs = k if mode.group_size == -1 else mode.group_size
            layers = [layer.tensors() for layer in mode_layers(n, k, mode, dtype, 4, gen)]
            for m in (int(v) for v in args.ms.split(",")):
                x = torch.randn(m, k, device="cuda", generator=gen).to(dtype)
                served = triton_gemm.pick_config(m, n, k, gs, sms, zmode)
                row: dict[str, Any] = {"tree": str(tree), "shape": shape, "dtype": dname, "m": m,
                                       "served_config": _short(served)}
                ref = None
                for name, fields in [("served", {})] + variants:
                    cfg = with_fields(served, fields, m, n, k, sms, triton_gemm)
                    plans = [triton_gemm.plan(m, dtype, x.device, t["B"], t["s"], group_size=gs, z=t.get("z"),
                                              shift=t.get("shift"), perm=t.get("perm"), config=cfg) for t in layers]
                    ref = time_beside(row, name, [lambda p=p: p(x) for p in plans], ref)
                    row[f"{name}_regs"] = [f"{launch.fn.__name__}:{getattr(kern, 'n_regs', '?')}/"
                                           f"{getattr(kern, 'n_spills', '?')}"
                                           for launch in plans[0].launches for kern in launch.compiled.values()]
                print(json.dumps(row), flush=True)
                rows.append(row)
    names = ["served"] + [name for name, _ in variants]
    print("\nN x K, dtype, M | served shape | " + " | ".join(f"{n} µs (÷ served)" for n in names))
    for r in rows:
        cells = " | ".join(f"{r[n]} ({r[n] / r['served']:.2f})" for n in names)
        print(f"{r['shape']}, {r['dtype']}, {r['m']} | {r['served_config']} | {cells}")


def _short(cfg: Any) -> str:
    grid = f"balanced {cfg.balance}" if cfg.balance else f"split {cfg.split_k}"
    return f"{cfg.bm}x{64 * cfg.nb}, {grid}, {'cap ' + str(cfg.maxnreg) if cfg.maxnreg else 'uncapped'}"


if __name__ == "__main__":
    main()
