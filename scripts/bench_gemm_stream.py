#!/usr/bin/env python3
"""The streaming ceiling of the Triton Marlin GEMM at M <= 16 (issue #13), one run on a CUDA machine.

    PYTHONPATH=. python3 scripts/bench_gemm_stream.py [--shapes 28672x8192,8192x28672] [--out DIR]

A kernel that only reads what the GEMM reads, with the swapped kernel's tiling (`_swap_tile`: `BT` tile rows
of `NB` 64-column blocks a step, the words as they lie, the same grid and K split) and sums it into one
word a program (no decode, no tensor cores): `B` alone, `B` + the group scales, `B` + scales + the x tile.
Also our GEMM with its decode replaced by four `mov`s a word (`nodecode`: the same loads, `cp.async`
pipeline, joins, `wgmma`s and stores; the weights are the words' raw halves), a copy of the kernels module
made at run time (`_nodecode_kernels`), so decode cost = ours - nodecode.
Timed beside our GEMM (`pick_config`'s shape and the same grid), dense fp16 `linear` and a device copy, in
CUDA-graph replays with the weights rotating past 3x the L2 (as `bench_gemm.py`). If the stream runs near
dense fp16's read rate and the GEMM does not, the decode / matrix work limits us; if the stream is as slow
as the GEMM, the loads (tiling, programs in flight) do. Prints a table last; JSON to DIR/bench_gemm_stream.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _cuda_timing import graph_time_us  # noqa: E402
from bench_gemm import copies_for, copy_bandwidth  # noqa: E402
from marlin_convert.runtime import triton_gemm  # noqa: E402
from marlin_convert.runtime.triton_gemm import KernelConfig, marlin_gemm, pick_config  # noqa: E402


NODECODE_ASM = ("mov.b32 {$0, $4}, $8;\nmov.b32 {$1, $5}, $8;\nmov.b32 {$2, $6}, $8;\nmov.b32 {$3, $7}, $8;")
NODECODE_FN = '''

@triton.jit
def _nodecode8(words):
    """Bench only: the eight "weights" of a word are its two halves, four times (no decode)."""
    return tl.inline_asm_elementwise(NODECODE, CONSTRAINTS_1, [words], dtype=EIGHT_F16, is_pure=True, pack=1)
'''


def _nodecode_kernels(tmp: Path) -> Any:
    """`_triton_gemm_kernels` with the symmetric fp16 decode (`_int8`, SCALE_ACC) swapped for `_nodecode8`."""
    import importlib.util

    from marlin_convert.runtime import _triton_gemm_kernels as tk

    src = Path(tk.__file__).read_text()
    old = "wts = _int8(words, words, words, ZMODE, IS_FP16)"
    assert src.count(old) == 2, "the kernels module changed: update the nodecode bench"
    src = src.replace(old, "wts = _nodecode8(words)")
    src += f"\nNODECODE = tl.constexpr({NODECODE_ASM!r})\n" + NODECODE_FN
    path = tmp / "_nodecode_kernels.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("_nodecode_kernels", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@triton.jit
def stream_kernel(b_ptr, s_ptr, x_ptr, out_ptr, N, K, steps_per_tile, split_k, g_shift,
                  BT: tl.constexpr, NB: tl.constexpr, BM: tl.constexpr, SCALES: tl.constexpr, XTILE: tl.constexpr):
    """Sum (xor) of the words `_swap_tile` loads for this program's tile and split (+ its scales, x tile)."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(2)
    s0 = (pid_k * steps_per_tile) // split_k
    s1 = ((pid_k + 1) * steps_per_tile) // split_k
    jj = tl.arange(0, 128 * NB)
    off5 = tl.arange(0, BT)[:, None] * (2 * N) + (pid_n * NB * 128 + jj)[None, :]
    cm5 = (pid_n * NB + jj // 128 < N // 64)[None, :]
    n = pid_n * NB * 64 + tl.arange(0, 64 * NB)
    kk = tl.arange(0, 16 * BT)
    rows = tl.arange(0, BM)
    acc = tl.zeros((BT, 128 * NB), dtype=tl.int32)
    facc = tl.zeros((64 * NB,), dtype=tl.float32)
    xacc = tl.zeros((BM, 16 * BT), dtype=tl.float32)
    for step in range(s0, s1):
        t0 = step * BT
        acc ^= tl.load(b_ptr + t0.to(tl.int64) * (2 * N) + off5, mask=cm5, other=0)
        if SCALES:
            g = (16 * t0) >> g_shift
            facc += tl.load(s_ptr + g * N + n, mask=n < N, other=0).to(tl.float32)
        if XTILE:
            xacc += tl.load(x_ptr + rows[:, None] * K + (16 * t0 + kk)[None, :], mask=(rows < 1)[:, None],
                            other=0).to(tl.float32)
    total = tl.sum(tl.sum(acc, axis=1), axis=0)
    ftotal = tl.sum(facc, axis=0) + tl.sum(tl.sum(xacc, axis=1), axis=0)
    pid = pid_n * split_k + pid_k
    tl.store(out_ptr + pid, total + ftotal.to(tl.int32))


def stream(B: torch.Tensor, s: torch.Tensor, x: torch.Tensor, out: torch.Tensor, cfg: KernelConfig, gs: int,
           scales: bool, xtile: bool) -> Any:
    k, n = 16 * B.shape[0], B.shape[1] // 2
    steps = k // (16 * cfg.bt)
    grid = (-(-n // (64 * cfg.nb)), 1, cfg.split_k)
    return stream_kernel[grid](B, s, x, out, n, k, steps, cfg.split_k, gs.bit_length() - 1, BT=cfg.bt, NB=cfg.nb,
                               BM=16, SCALES=scales, XTILE=xtile, num_warps=cfg.warps, num_stages=cfg.stages)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--shapes", default="28672x8192,8192x28672")
    ap.add_argument("--splits", default="1,2,4,8,16")
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    bw = copy_bandwidth()
    res: dict[str, Any] = {"device": torch.cuda.get_device_name(), "copy_GBps": bw / 1e9, "rows": []}
    print(f"copy {bw / 1e9:.0f} GB/s (read + write)", flush=True)
    gs = 128
    nodecode = _nodecode_kernels(Path(tempfile.mkdtemp()))
    for n, k in [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]:
        gen = torch.Generator(device="cuda").manual_seed(n + k)
        B = torch.randint(-2**31, 2**31 - 1, (k // 16, 2 * n), dtype=torch.int32, device="cuda", generator=gen)
        s = (torch.rand(k // gs, n, device="cuda", generator=gen) * 0.02 + 1e-3).half()
        wbytes = B.numel() * 4 + s.numel() * 2
        nc = copies_for(wbytes)
        Bs = [B] + [B.clone() for _ in range(nc - 1)]
        ss = [s] + [s.clone() for _ in range(nc - 1)]
        x = torch.randn(1, k, device="cuda", generator=gen).half()
        w = (torch.randn(n, k, device="cuda", generator=gen) * 0.01).half()
        wd = [w] + [w.clone() for _ in range(copies_for(w.numel() * 2) - 1)]
        dense = graph_time_us([lambda w=w: torch.nn.functional.linear(x, w) for w in wd])
        del wd, w
        base = pick_config(1, n, k, gs)
        ours = graph_time_us([lambda b=b, sc=sc: marlin_gemm(x, b, sc, group_size=gs) for b, sc in zip(Bs, ss)])
        real = triton_gemm._kernels
        triton_gemm._kernels = lambda: nodecode  # type: ignore[assignment]
        try:
            nd = graph_time_us([lambda b=b, sc=sc: marlin_gemm(x, b, sc, group_size=gs) for b, sc in zip(Bs, ss)])
        finally:
            triton_gemm._kernels = real  # type: ignore[assignment]
        row: dict[str, Any] = {"n": n, "k": k, "wbytes": wbytes, "dense_fp16_us": dense, "ours_us": ours,
                               "nodecode_us": nd,
                               "ours_cfg": repr(base), "roofline_us": wbytes / bw * 1e6, "stream": []}
        print(f"{n}x{k}: dense fp16 {dense:.1f} us ({2 * n * k / dense / 1e3:.0f} GB/s read), ours {ours:.1f} us "
              f"({base.split_k=}), nodecode {nd:.1f} us, roofline {row['roofline_us']:.1f} us", flush=True)
        variants = [("B", False, False), ("B+s", True, False), ("B+s+x", True, True)]
        shapes = [base, dataclasses.replace(base, bt=16), dataclasses.replace(base, nb=4),
                  dataclasses.replace(base, stages=4), dataclasses.replace(base, warps=8),
                  dataclasses.replace(base, bt=4, stages=6)]
        out = torch.empty(1 << 20, dtype=torch.int32, device="cuda")
        for cfg in shapes:
            steps = k // (16 * cfg.bt)
            for split in sorted({int(v) for v in args.splits.split(",")} | {base.split_k}):
                if steps % split or steps // split < 2:
                    continue
                c = dataclasses.replace(cfg, split_k=split)
                for name, sc_, xt in (variants if cfg is base else variants[1:2]):
                    t = graph_time_us([lambda b=b, sc=sc: stream(b, sc, x, out, c, gs, sc_, xt) for b, sc in zip(Bs, ss)])
                    kern = stream(B, s, x, out, c, gs, sc_, xt)
                    regs = getattr(kern, "n_regs", None)
                    row["stream"].append({"cfg": repr(c), "what": name, "us": t, "regs": regs})
                    print(f"  bt{c.bt} nb{c.nb} w{c.warps} s{c.stages} split {split} {name}: {t:.1f} us "
                          f"({wbytes / t / 1e3:.0f} GB/s), {regs} regs", flush=True)
        best = min(row["stream"], key=lambda r: r["us"])
        same = [r for r in row["stream"] if r["cfg"] == repr(base) and r["what"] == "B+s+x"]
        row["best_stream"], row["same_tiling_stream"] = best, same[0] if same else None
        res["rows"].append(row)
        (out_dir / "bench_gemm_stream.json").write_text(json.dumps(res, indent=1))
        del Bs, ss
        torch.cuda.empty_cache()
    print("\nN x K | dense fp16 | ours (default) | ours, no decode | stream, same tiling (B+s+x) | best stream (shape) | roofline | "
          "3x dense target")
    for r in res["rows"]:
        same, best = r["same_tiling_stream"], r["best_stream"]
        print(f"{r['n']}x{r['k']} | {r['dense_fp16_us']:.1f} | {r['ours_us']:.1f} | {r['nodecode_us']:.1f} | "
              f"{same['us'] if same else float('nan'):.1f} | {best['us']:.1f} ({best['what']} {best['cfg']}) | "
              f"{r['roofline_us']:.1f} | {r['dense_fp16_us'] / 3:.1f}")


if __name__ == "__main__":
    main()
