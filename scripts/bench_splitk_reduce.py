#!/usr/bin/env python3
"""The split-K reduce's block size (issue #13, GEMM round 17 in BENCHMARKS.md). `splitk_reduce_kernel` sums the
float32 partials of a split GEMM, `BLOCK` outputs a program. At 1024 a program, one row of an 8192-wide layer is
8 programs on 132 multiprocessors; ncu timed that reduce at 3.8 µs after a 39 µs GEMM. Here: the CUDA-graph µs of
the whole call (`triton_gemm.plan` with `pick_config`'s launch shape, four copies of the weights in turn) with the
reduce's block as served (`_reduce_block`) and forced to 128, 256, 512 and 1024 (1024: the rule before round 17),
for every shape, mode and row count whose launch shape splits K or runs a balanced grid (whose
`segment_reduce_kernel` takes the same block; added in GEMM round 23: ncu gave it 5.4 µs at 16 rows of 28672x8192,
17 % achieved occupancy). The outputs of every block are compared bit for bit with the served one's (the sum over
the splits is the same whatever the block).

    PYTHONPATH=. python3 scripts/bench_splitk_reduce.py
"""
from __future__ import annotations

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

SHAPES = [(1024, 4096), (4096, 4096), (14336, 4096), (4096, 14336), (28672, 8192), (8192, 28672)]
BLOCKS = (128, 256, 512, 1024)


def main() -> None:
    gen = torch.Generator(device="cuda").manual_seed(17)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    served_rule = triton_gemm._reduce_block
    for dtype in (torch.float16, torch.bfloat16):
        for n, k in SHAPES:
            for mode in ("g128", "g128+z"):
                tensors = [layer.tensors() for layer in mode_layers(n, k, Mode.parse(mode), dtype, 4, gen)]
                for m in (1, 16, 64):
                    cfg = triton_gemm.pick_config(m, n, k, 128, sms, 1 if "z" in mode else 0)
                    if (cfg.split_k == 1 and not cfg.balance) or cfg.zred:
                        continue
                    x = torch.randn(m, k, device="cuda", generator=gen).to(dtype)
                    row: dict[str, Any] = {"shape": f"{n}x{k}", "dtype": str(dtype)[6:], "mode": mode, "m": m,
                                           "split": cfg.split_k, "balance": cfg.balance,
                                           "served_block": served_rule(m * n, sms)}
                    ref = None
                    for name, block in (("served", None), *((str(b), b) for b in BLOCKS)):
                        triton_gemm._reduce_block = served_rule if block is None else (lambda e, s, b=block: b)
                        try:
                            plans = [triton_gemm.plan(m, dtype, x.device, t["B"], t["s"], group_size=128, z=t.get("z"))
                                     for t in tensors]
                        finally:
                            triton_gemm._reduce_block = served_rule
                        y = plans[0](x)
                        if ref is None:
                            ref = y
                        elif not torch.equal(y, ref):
                            raise SystemExit(f"{row}: block {name} gives other bits than the served block")
                        row[name] = round(graph_time_us([lambda p=p: p(x) for p in plans]), 1)
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
