#!/usr/bin/env python3
"""GEMM round 14 (issue #13, BENCHMARKS.md): Marlin zero points through the symmetric kernel, their terms added
in the reduce (`KernelConfig.zred`), at every batch class.

    PYTHONPATH=. python3 scripts/bench_gemm_r14.py [--out DIR] [--shapes 28672x8192,...] [--ms 1,16,64,256]
        [--modes g128+z,g32+z,g128+z+act]

Per mode, shape, batch and activation dtype (bf16 for `g128+z` only): `pick_config`'s launch shape for zero
points (round 13's rule), the symmetric shape of the same layer with `zred` (x gathered once under act-order),
and the same with twice its K split; optimum-quanto's Marlin kernel (fp16, where it serves) and
the symmetric default as yardsticks. Each variant's relative error against the float64 product of the
dequantized weight is printed beside its time. CUDA-graph timing with the weights rotating past 3x the L2
(as `bench_gemm.py`); JSON to DIR/bench_gemm_r14.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_gemm_r13 import mode_rows  # noqa: E402
from marlin_convert.runtime.triton_gemm import KernelConfig, pick_config  # noqa: E402

R = dataclasses.replace


def variants(m: int, n: int, k: int, gs: int) -> list[tuple[str, KernelConfig]]:
    """The launch shapes timed: the rule's for zero points (round 13's), the symmetric shape with `zred` (x
    gathered once under act-order), and the same with twice its K split."""
    red = R(pick_config(m, n, k, gs, zmode=0), zred=True, xperm=True)
    return [("round 13", pick_config(m, n, k, gs, zmode=1)), ("zred", red), ("zred x2", R(red, split_k=2 * red.split_k))]


def run(shapes: list[tuple[int, int]], ms: list[int], modes: list[str]) -> list[dict[str, Any]]:
    return [row for mname in modes
            for row in mode_rows(mname, shapes, ms, (torch.float16, torch.bfloat16) if mname == "g128+z"
                                 else (torch.float16,), variants, {"mode": mname})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--shapes", default="28672x8192,8192x28672,14336x4096,4096x4096")
    ap.add_argument("--ms", default="1,16,64,256")
    ap.add_argument("--modes", default="g128+z,g32+z,g128+z+act")
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    ms = [int(v) for v in args.ms.split(",")]
    print(torch.cuda.get_device_name(), flush=True)
    rows = run(shapes, ms, args.modes.split(","))  # type: ignore[arg-type]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gemm_r14.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
