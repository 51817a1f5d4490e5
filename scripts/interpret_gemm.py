#!/usr/bin/env python3
"""Run the Triton GEMM's kernels on the CPU, in Triton's interpreter with their inline PTX emulated
(`_ptx_emulation.py`), against the exact reference path, to check a kernel or launch-shape change before spending
device time on it (issue #13). Needs torch, numpy and Triton (the CPU build of torch will do; no GPU).

    PYTHONPATH=. python3 scripts/interpret_gemm.py 256x512:1:g128 256x512:16:g128+z:balance=-3 \\
        512x1024:5:g-1:split_k=4 --bf16

Each argument is `NxK:M:MODE[:field=value,...]` as in `sass_gemm.py`: a random layer of `MODE` (`g128`, `g128+z`,
`g64+shift`, `g-1`, ...; fp16 unless `--bf16`), `pick_config`'s launch shape for `M` rows with the given
`KernelConfig` fields replaced (`bench_launch_variants.py`'s rule). Per layer: the kernels launched, and the
largest error against `x @ dequantize(B, s, z / shift).T` in float64 relative to the output's largest value.
TMA is off (the interpreter has no copy engine); keep layers small (the interpreter runs each program in numpy).
Exits non-zero when an error passes `--tol` or is NaN (default 2e-3, bf16 1.6e-2; correct kernels measured 2-5e-4,
bf16 4-7e-3: the output's own rounding). Triton 3.6's interpreter needs numpy < 2.3 (newer numpy refuses its
`int()` of one-element arrays). The check is of the kernels against the reference path on the same Marlin tensors,
not of the layout (the CUDA tests dequantize the source format for that).
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

    import _ptx_emulation
    from bench_launch_variants import parse_fields, with_fields
    from marlin_convert.layout import pack, pack_zeros, permute_scales
    from marlin_convert.runtime import triton_gemm
    from marlin_convert.runtime.dequant import dequantize_marlin

    _ptx_emulation.install()
    dtype = torch.bfloat16 if args.bf16 else torch.float16
    tol = args.tol if args.tol is not None else (1.6e-2 if args.bf16 else 2e-3)
    gen = torch.Generator().manual_seed(args.seed)
    failed = []
    for spec in args.layers:
        shape, m, mode, *fields = spec.split(":")
        n, k = (int(v) for v in shape.split("x"))
        m = int(m)
        group, _, extra = mode[1:].partition("+")
        gs = int(group)
        g = k if gs == -1 else gs
        codes = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.uint8)
        s_nat = (torch.rand(k // g, n, generator=gen) * 0.02 + 0.001).to(dtype)
        tensors = {"B": pack(codes), "s": permute_scales(s_nat, group_size=gs, k=k).contiguous()}
        if extra == "z":
            tensors["z"] = pack_zeros(torch.randint(0, 16, (k // g, n), generator=gen, dtype=torch.uint8))
        elif extra == "shift":
            shift = (torch.rand(k // g, n, generator=gen) * 0.1).to(dtype)
            tensors["shift"] = permute_scales(shift, group_size=gs, k=k).contiguous()
        elif extra:
            sys.exit(f"{spec}: mode {mode!r} (+z, +shift or nothing)")
        zmode = 1 if "z" in tensors else (2 if "shift" in tensors else 0)
        cfg = triton_gemm.pick_config(m, n, k, g, 132, zmode)
        cfg = with_fields(cfg, parse_fields(fields[0]) if fields else {}, m, n, k, 132, triton_gemm)
        x = torch.randn(m, k, generator=gen).to(dtype)
        p = triton_gemm.plan(m, dtype, torch.device("cpu"), tensors["B"], tensors["s"], group_size=gs,
                             z=tensors.get("z"), shift=tensors.get("shift"), config=cfg)
        y = p(x).double()
        w = dequantize_marlin(tensors["B"], tensors["s"], n=n, k=k, group_size=gs, z=tensors.get("z"),
                              shift=tensors.get("shift")).double()
        ref = x.double() @ w.t()
        err = float((y - ref).abs().max() / ref.abs().max())
        if not err <= tol:  # NaN too
            failed.append(spec)
        kernels = ", ".join(f"{launch.fn.__name__} {tuple(launch.grid)}" for launch in p.launches)
        print(f"{spec}{' bf16' if args.bf16 else ''}: {kernels}; max error {err:.2e} of the largest output")
    if failed:
        sys.exit(f"max error above {tol:g}: {', '.join(failed)}")


if __name__ == "__main__":
    main()
