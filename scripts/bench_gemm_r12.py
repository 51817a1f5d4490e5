#!/usr/bin/env python3
"""GEMM round 12 (issue #13, BENCHMARKS.md): the launch variants of the swapped kernel, and where the 3x gap lies.

    PYTHONPATH=. python3 scripts/bench_gemm_r12.py --part variants [--out DIR]   # call 1
    PYTHONPATH=. python3 scripts/bench_gemm_r12.py --part ceiling [--out DIR]    # call 3

`variants`: at M = 1 / 16 (and 64 for symmetric) on 28672x8192 and 8192x28672, round 11's launch shape
(`pick_config` with the round-12 fields cleared) beside the same shape with `tma` (words through a TMA
descriptor), `zpre` (the fold's scales / zero words a step ahead), `xsum` (the sums of x per step from the
caller) and their combinations, a few stage / split / register-cap changes, optimum-quanto's Marlin kernel and
dense fp16; every variant's relative error against the float64 product is printed beside its time.
`ceiling`: a load-only kernel (each program XORs the `[8, 128 NB]` word boxes of its tile and split, plain
loads or TMA) over splits, block widths and stages, and the symmetric group-128 GEMM under TMA over stages,
register caps, warps and splits. CUDA-graph timing with the weights rotating past 3x the L2 (as
`bench_gemm.py`); JSON to DIR/bench_gemm_r12_<part>.json.
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
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _cuda_timing import graph_time_us  # noqa: E402
from bench_gemm import Mode, copies_for, copy_bandwidth, mode_layers  # noqa: E402
from marlin_convert.runtime import backends  # noqa: E402
from marlin_convert.runtime.triton_gemm import KernelConfig, marlin_gemm, pick_config  # noqa: E402

R = dataclasses.replace
SHAPES = [(28672, 8192), (8192, 28672)]


def round11(cfg: KernelConfig) -> KernelConfig:
    """`pick_config`'s shape as round 11 left it: the round-12 fields cleared."""
    return R(cfg, tma=False, zpre=False, xsum=False)


VARIANTS = {
    "g128": lambda c: [("base", c), ("tma", R(c, tma=True)), ("tma s4", R(c, tma=True, stages=4)),
                       ("tma s5", R(c, tma=True, stages=5)),
                       ("tma split/2", R(c, tma=True, split_k=max(1, c.split_k // 2))),
                       ("tma split*2", R(c, tma=True, split_k=c.split_k * 2)),
                       ("tma s4 nocap", R(c, tma=True, stages=4, maxnreg=0))],
    "g128+z": lambda c: [("base", c), ("zpre", R(c, zpre=True)), ("xsum", R(c, xsum=True)),
                         ("zpre+xsum", R(c, zpre=True, xsum=True)), ("tma", R(c, tma=True)),
                         ("tma+zpre+xsum", R(c, tma=True, zpre=True, xsum=True)),
                         ("xsum nocap", R(c, xsum=True, maxnreg=0)), ("zpre nocap", R(c, zpre=True, maxnreg=0))],
    "g-1+z": lambda c: [("base", c), ("tma", R(c, tma=True))],
    "g32": lambda c: [("base", c), ("tma", R(c, tma=True))],
}


def timed_variant(layers: list[Any], probe: Any, x: torch.Tensor, ref: torch.Tensor, group_size: int,
                  cfg: KernelConfig) -> tuple[Any, str]:
    """(µs per call of `marlin_gemm` with `cfg` over `layers`' Marlin tensors, CUDA-graph timed; the relative
    error of `probe`'s product against the float64 `ref`), or ("ERR", the message) when it fails."""
    def call(ly: Any) -> torch.Tensor:
        tt = ly.tensors()
        return marlin_gemm(x, tt["B"], tt["s"], group_size=group_size, z=tt.get("z"), perm=tt.get("perm"),
                           config=cfg)
    try:
        us = graph_time_us([lambda ly=ly: call(ly) for ly in layers])
        err = float((call(probe).double() - ref).norm() / ref.norm())
        return round(us, 2), f"{err:.1e}"
    except Exception as e:  # noqa: BLE001
        return "ERR", str(e)[:200]


def variants(bw: float) -> list[dict[str, Any]]:
    rows = []
    qto = backends.BACKENDS["quanto"]
    for n, k in SHAPES:
        gen = torch.Generator(device="cuda").manual_seed(n + k)
        w = torch.randn(n, k, device="cuda", generator=gen).half() * 0.01
        xs = {m: torch.randn(m, k, device="cuda", generator=gen) for m in (1, 16, 64)}
        wd = [w] + [w.clone() for _ in range(copies_for(w.numel() * 2) - 1)]
        dense = {m: graph_time_us([lambda w_=w_, m=m: torch.nn.functional.linear(xs[m].half(), w_) for w_ in wd])
                 for m in xs}
        del wd
        for mname, make in VARIANTS.items():
            mode = Mode.parse(mname)
            for dt in ((torch.float16, torch.bfloat16) if "+z" in mname else (torch.float16,)):
                probe = mode_layers(n, k, mode, dt, 1, gen)[0]
                t = probe.tensors()
                wbytes = sum(t[nm].numel() * t[nm].element_size() for nm in ("B", "s", "z") if nm in t)
                layers = [probe] + [mode_layers(n, k, mode, dt, 1, gen)[0] for _ in range(copies_for(wbytes) - 1)]
                wref = backends.dense_weight(probe, torch.float32)
                gs = k if mode.group_size == -1 else mode.group_size
                for m in ((1, 16, 64) if mname == "g128" else (1, 16)):
                    x = xs[m].to(dt)
                    ref = x.double() @ wref.double().t()
                    base = round11(pick_config(m, n, k, gs, zmode=int("z" in t)))
                    row: dict[str, Any] = {"n": n, "k": k, "m": m, "mode": mname, "dtype": str(dt)[6:],
                                           "dense": dense[m], "roof": wbytes / bw * 1e6}
                    if dt == torch.float16 and qto.unsupported_reason(probe, x) is None:
                        row["marlin"] = graph_time_us([lambda ly=ly: qto.forward(ly, x) for ly in layers])
                    for vname, cfg in make(base):
                        row[vname] = timed_variant(layers, probe, x, ref, mode.group_size, cfg)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                del layers, probe, wref
                torch.cuda.empty_cache()
    return rows


@triton.jit
def stream_kernel(desc, out_ptr, steps_per_tile, split_k, BT: tl.constexpr, NB: tl.constexpr, TMA: tl.constexpr,
                  b_ptr, N):
    """XOR of the `[BT, 128 NB]` word boxes of this program's tile and split (TMA: through `desc`)."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(2)
    s0 = (pid_k * steps_per_tile) // split_k
    s1 = ((pid_k + 1) * steps_per_tile) // split_k
    jj = tl.arange(0, 128 * NB)
    off5 = tl.arange(0, BT)[:, None] * (2 * N) + (pid_n * NB * 128 + jj)[None, :]
    acc = tl.zeros((BT, 128 * NB), dtype=tl.int32)
    for step in range(s0, s1):
        if TMA:
            acc ^= desc.load([step * BT, pid_n * NB * 128])
        else:
            acc ^= tl.load(b_ptr + (step * BT).to(tl.int64) * (2 * N) + off5)
    tl.store(out_ptr + pid_n * split_k + pid_k, tl.sum(tl.sum(acc, axis=1), axis=0))


def ceiling() -> list[dict[str, Any]]:
    from triton.tools.tensor_descriptor import TensorDescriptor

    rows: list[dict[str, Any]] = []
    for n, k in SHAPES:
        gen = torch.Generator(device="cuda").manual_seed(n + k)
        B = torch.randint(-2**31, 2**31 - 1, (k // 16, 2 * n), dtype=torch.int32, device="cuda", generator=gen)
        s = (torch.rand(k // 128, n, device="cuda", generator=gen) * 0.02 + 1e-3).half()
        nc = copies_for(B.numel() * 4)
        Bs = [B] + [B.clone() for _ in range(nc - 1)]
        ss = [s] + [s.clone() for _ in range(nc - 1)]
        w = (torch.randn(n, k, device="cuda", generator=gen) * 0.01).half()
        wd = [w] + [w.clone() for _ in range(copies_for(w.numel() * 2) - 1)]
        x1 = torch.randn(1, k, device="cuda", generator=gen).half()
        dense = graph_time_us([lambda w=w: torch.nn.functional.linear(x1, w) for w in wd])
        del wd, w
        out = torch.empty(1 << 17, dtype=torch.int32, device="cuda")
        base = pick_config(1, n, k, 128)
        print(f"{n}x{k} dense {dense:.1f} us, default {base}", flush=True)
        steps = k // 128
        for split in (base.split_k, 2 * base.split_k, 4 * base.split_k):
            for nb in (1, 2):
                descs = [TensorDescriptor.from_tensor(b, [8, 128 * nb]) for b in Bs]
                grid = (n // (64 * nb), 1, split)
                for stages in (2, 3, 4, 6):
                    for tma in (False, True):
                        us = graph_time_us([lambda d=d, b=b: stream_kernel[grid](
                            d, out, steps, split, BT=8, NB=nb, TMA=tma, b_ptr=b, N=n, num_warps=4, num_stages=stages)
                            for d, b in zip(descs, Bs)])
                        print(f"  stream nb{nb} split{split} stages{stages} tma{int(tma)}: {us:.1f} us", flush=True)
                        rows.append(dict(kind="stream", n=n, k=k, nb=nb, split=split, stages=stages, tma=tma, us=us))
        for m in (1, 16):
            x = torch.randn(m, k, device="cuda", generator=gen).half()
            c0 = pick_config(m, n, k, 128)
            shapes = [c0, R(c0, tma=False)] + [
                R(c0, stages=st, maxnreg=r, warps=wp, split_k=sp)
                for st in (3, 4) for r in (128, 96, 80) for wp in (4, 8) for sp in (c0.split_k, 2 * c0.split_k)
                if not (st == c0.stages and r == 128 and wp == 4 and sp == c0.split_k)]
            timed = []
            for cfg in shapes:
                us = graph_time_us([lambda b=b, sc=sc, cfg=cfg: marlin_gemm(x, b, sc, group_size=128, config=cfg)
                                    for b, sc in zip(Bs, ss)])
                timed.append((us, cfg))
                rows.append(dict(kind="gemm", n=n, k=k, m=m, cfg=repr(cfg), us=us, dense=dense))
            timed.sort(key=lambda r: r[0])
            print(f"  M={m}: default {next(u for u, c in timed if c == c0):.1f}, "
                  f"plain loads {next(u for u, c in timed if c == R(c0, tma=False)):.1f}", flush=True)
            for us, cfg in timed[:6]:
                print(f"    {us:.1f} stages {cfg.stages} cap {cfg.maxnreg} warps {cfg.warps} split {cfg.split_k} "
                      f"tma {int(cfg.tma)}", flush=True)
        del Bs, ss
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("variants", "ceiling"), required=True)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    bw = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}; copy {bw / 1e9:.0f} GB/s (read + write)", flush=True)
    rows = variants(bw) if args.part == "variants" else ceiling()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_gemm_r12_{args.part}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
