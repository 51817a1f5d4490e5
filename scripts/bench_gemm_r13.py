#!/usr/bin/env python3
"""GEMM round 13 (issue #13, BENCHMARKS.md): Marlin zero points of group 128 with their terms added after the
dot's loop (`KernelConfig.zlate`), at every batch class.

    PYTHONPATH=. python3 scripts/bench_gemm_r13.py [--out DIR] [--shapes 28672x8192,...] [--ms 1,16,64,256]

Per shape, batch and activation dtype: `pick_config`'s shape for zero points (round 12's rule), the folded
kernel with `zlate` (with and without TMA, and up to 16 rows with and without the 128-register cap; at 64 and
more rows, where the rule does not fold, at the rule's tile); optimum-quanto's
Marlin kernel (fp16) and the symmetric default as yardsticks. Each variant's relative error against the
float64 product of the dequantized weight is printed beside its time. CUDA-graph timing with the weights
rotating past 3x the L2 (as `bench_gemm.py`); JSON to DIR/bench_gemm_r13.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _cuda_timing import graph_time_us  # noqa: E402
from bench_gemm import Mode, copies_for, mode_layers  # noqa: E402
from bench_gemm_r12 import timed_variant  # noqa: E402
from marlin_convert.runtime import backends  # noqa: E402
from marlin_convert.runtime.triton_gemm import KernelConfig, marlin_gemm, pick_config  # noqa: E402

R = dataclasses.replace


def variants(c: KernelConfig) -> list[tuple[str, KernelConfig]]:
    """The launch shapes timed beside `pick_config`'s `c`."""
    late = R(c, fold=True, zpre=False, xsum=True, zlate=True)
    rows = [("default", c), ("zlate", R(late, tma=False)), ("zlate tma", R(late, tma=True))]
    if c.bm == 16:
        rows += [("zlate tma nocap", R(late, tma=True, maxnreg=0)), ("zlate tma cap", R(late, tma=True, maxnreg=128))]
    return rows


def mode_rows(mname: str, shapes: list[tuple[int, int]], ms: list[int], dtypes: tuple[torch.dtype, ...],
              variants_for: Callable[[int, int, int, int], list[tuple[str, KernelConfig]]],
              head: dict[str, Any]) -> list[dict[str, Any]]:
    """Per shape, activation dtype and batch of layers of mode `mname`: the symmetric default and optimum-quanto's
    Marlin kernel (fp16, where it serves) as yardsticks, then `variants_for(m, n, k, group_size)`'s launch shapes
    (time and relative error against the float64 product of the dequantized weight); each row starts with `head`
    and is printed as a JSON line."""
    rows = []
    qto = backends.BACKENDS["quanto"]
    mode = Mode.parse(mname)
    sym = R(mode, zero_point=None)
    for n, k in shapes:
        gs = k if mode.group_size == -1 else mode.group_size
        gen = torch.Generator(device="cuda").manual_seed(n + k)
        xs = {m: torch.randn(m, k, device="cuda", generator=gen) for m in ms}
        for dt in dtypes:
            probe = mode_layers(n, k, mode, dt, 1, gen)[0]
            t = probe.tensors()
            copies = copies_for(sum(t[nm].numel() * t[nm].element_size() for nm in ("B", "s", "z")))
            layers = [probe] + [mode_layers(n, k, mode, dt, 1, gen)[0] for _ in range(copies - 1)]
            sym_layers = mode_layers(n, k, sym, dt, copies, gen)
            wref = backends.dense_weight(probe, torch.float32)
            for m in ms:
                x = xs[m].to(dt)
                ref = x.double() @ wref.double().t()
                row: dict[str, Any] = {**head, "n": n, "k": k, "m": m, "dtype": str(dt)[6:]}
                row["sym default"] = round(graph_time_us([lambda ly=ly: marlin_gemm(
                    x, ly.tensors()["B"], ly.tensors()["s"], group_size=gs, perm=ly.tensors().get("perm"))
                    for ly in sym_layers]), 2)
                if dt == torch.float16 and qto.unsupported_reason(probe, x) is None:
                    row["marlin"] = round(graph_time_us([lambda ly=ly: qto.forward(ly, x) for ly in layers]), 2)
                for vname, cfg in variants_for(m, n, k, gs):
                    row[vname] = timed_variant(layers, probe, x, ref, gs, cfg)
                rows.append(row)
                print(json.dumps(row), flush=True)
            del layers, sym_layers, probe, wref
            torch.cuda.empty_cache()
    return rows


def run(shapes: list[tuple[int, int]], ms: list[int]) -> list[dict[str, Any]]:
    return mode_rows("g128+z", shapes, ms, (torch.float16, torch.bfloat16),
                     lambda m, n, k, gs: variants(pick_config(m, n, k, gs, zmode=1)), {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--shapes", default="28672x8192,8192x28672,14336x4096,4096x4096")
    ap.add_argument("--ms", default="1,16,64,256")
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    print(torch.cuda.get_device_name(), flush=True)
    rows = run(shapes, [int(v) for v in args.ms.split(",")])  # type: ignore[arg-type]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gemm_r13.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
