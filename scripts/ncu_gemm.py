#!/usr/bin/env python3
"""Launch each named launch shape of the Triton Marlin GEMM once inside a CUDA profiler range, for Nsight
Compute (issue #13):

    ncu --clock-control none --profile-from-start off --section SpeedOfLight --section Occupancy \\
        --section WarpStateStats python3 scripts/ncu_gemm.py 28672x8192:1:default 28672x8192:64:default

Each argument is `NxK:M:NAME[:MODE]`, NAME a key of CONFIGS (`default`: `pick_config`'s shape), MODE a layer mode
of scripts/bench_gemm.py (`g128` by default; e.g. `g128+z` for Marlin zero points), fp16. Every shape is compiled
and run once before the profiled range opens, so only the timed launches are profiled.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_gemm import Mode, mode_layers  # noqa: E402

from marlin_convert.runtime.triton_gemm import KernelConfig, marlin_gemm  # noqa: E402

CONFIGS = {
    "default": None,
    "k8": KernelConfig(16, 8, 2, split_k=8),
    "k8_r128": KernelConfig(16, 8, 2, maxnreg=128, split_k=8),
    "m64k4": KernelConfig(64, 8, 2, xperm=True, split_k=4),
}
"""Named launch shapes (the unswapped kernel's, profiled in GEMM rounds 6-8, went with it in round 24)."""


def main() -> None:
    runs = []
    for arg in sys.argv[1:]:
        shape, m, name, *mode = arg.split(":")
        n, k = (int(v) for v in shape.split("x"))
        gen = torch.Generator(device="cuda").manual_seed(n + k)
        layout = Mode.parse(mode[0] if mode else "g128")
        t = mode_layers(n, k, layout, torch.float16, 1, gen)[0].tensors()
        x = torch.randn(int(m), k, device="cuda", generator=gen).half()
        args = dict(group_size=layout.group_size, z=t.get("z"), shift=t.get("shift"), perm=t.get("perm"),
                    config=CONFIGS[name])
        marlin_gemm(x, t["B"], t["s"], **args)  # compile outside the profiled range
        runs.append((x, t, args))
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    for x, t, args in runs:
        marlin_gemm(x, t["B"], t["s"], **args)
        torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()


if __name__ == "__main__":
    main()
