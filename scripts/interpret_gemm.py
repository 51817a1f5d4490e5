#!/usr/bin/env python3
"""Run the Triton GEMM's kernels on the CPU, in Triton's interpreter with their inline PTX emulated
(`tests/_support/ptx_emulation.py`), against float64 weights of the source layer, to check a kernel or launch-shape change
before spending device time on it (issue #13). Needs torch, numpy and Triton (the CPU build of torch will do).

    PYTHONPATH=. python3 scripts/interpret_gemm.py 256x512:1:g128 256x512:16:g128+z:balance=-3 \\
        512x1024:5:g-1:split_k=4 --bf16

Each argument is `NxK:M:MODE[:field=value,...]` as in `sass_gemm.py`: a random source layer of `MODE` (`g128`,
`g128+z`, `g64+shift`, `g-1`, `g128+z+act` (act-order), ...; fp16 unless `--bf16`) converted by `to_marlin`,
`pick_config`'s launch shape for `M` rows with the given `KernelConfig` fields replaced
(`bench_launch_variants.py`'s rule). Per layer: the kernels launched, and the largest error against `x @ W.T` in
float64, W dequantized from the source record (so the layout is checked too), relative to the output's largest
value. TMA is off (the interpreter has no copy engine); keep layers small (the interpreter runs each program in numpy).
Exits non-zero when an error passes `--tol` or is NaN (default 2e-3, bf16 1.6e-2; correct kernels measured 2-5e-4,
bf16 4-7e-3: the output's own rounding). Triton 3.6's interpreter needs numpy < 2.3 (newer numpy refuses its
`int()` of one-element arrays).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"  # before Triton is imported

SCRIPTS = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("layers", nargs="+")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--tol", type=float, default=None, help="default 2e-3, bf16 1.6e-2 (8x: 3 mantissa bits fewer)")
    ap.add_argument("--seed", type=int, default=20)
    args = ap.parse_args()
    sys.path[:0] = [str(SCRIPTS.parent), str(SCRIPTS)]
    import torch

    from tests._support import ptx_emulation
    from bench_gemm import Mode, mode_record
    from bench_launch_variants import parse_fields, with_fields
    from marlin_convert.formats import to_marlin
    from marlin_convert.runtime import triton_gemm

    ptx_emulation.install()
    dtype = torch.bfloat16 if args.bf16 else torch.float16
    tol = args.tol if args.tol is not None else (1.6e-2 if args.bf16 else 2e-3)
    gen = torch.Generator().manual_seed(args.seed)
    failed = []
    for spec in args.layers:
        shape, m, mode_text, *fields = spec.split(":")
        n, k = (int(v) for v in shape.split("x"))
        m, mode = int(m), Mode.parse(mode_text)
        gs = mode.group_size
        rec = mode_record(n, k, mode, dtype, gen, "cpu")
        t = to_marlin(rec)
        # the weights from the source record (not from the Marlin tensors): the layout is checked too
        g_idx = rec.g_idx.long() if rec.g_idx is not None else torch.arange(k) // (k if gs == -1 else gs)
        codes, zeros, shift = rec.codes.full().double(), rec.zeros, rec.shift
        sg = rec.scales.double()[g_idx].t()
        if shift is not None:
            w = sg * codes - shift.double()[g_idx].t()
        else:
            w = (codes - (zeros.double()[g_idx].t() if zeros is not None else 8.0)) * sg
        zmode = 1 if zeros is not None else (2 if shift is not None else 0)
        cfg = triton_gemm.pick_config(m, n, k, k if gs == -1 else gs, 132, zmode)
        cfg = with_fields(cfg, parse_fields(fields[0]) if fields else {}, m, n, k, 132, triton_gemm)
        x = torch.randn(m, k, generator=gen).to(dtype)
        p = triton_gemm.plan(m, dtype, torch.device("cpu"), t["B"], t["s"], group_size=gs, z=t.get("z"),
                             shift=t.get("shift"), perm=t.get("perm"), config=cfg)
        y = p(x).double()
        ref = x.double() @ w.t()
        err = float((y - ref).abs().max() / ref.abs().max())
        kernels = ", ".join(f"{launch.fn.__name__} {tuple(launch.grid)}" for launch in p.launches)
        print(f"{spec}{' bf16' if args.bf16 else ''}: {kernels}; max error {err:.2e} of the largest output")
        if not err <= tol:  # NaN too
            failed.append(spec)
    if failed:
        sys.exit(f"max error above {tol:g}: {', '.join(failed)}")


if __name__ == "__main__":
    main()
