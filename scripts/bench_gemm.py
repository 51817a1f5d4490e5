#!/usr/bin/env python3
"""GEMM benchmark of issue #13, one run on a CUDA machine, side by side.

    PYTHONPATH=. python3 scripts/bench_gemm.py [--out DIR] [--no-quanto] [--no-gemlite] [--no-sweep]

Per layer shape N x K (N = out_features, K = in_features) and batch M in 1, 16, 64, 256, with random
weights and activations, times with CUDA events around CUDA-graph replays of back-to-back calls (median of
repeats; weights rotate over enough copies that no call runs from L2):
- `triton`: our `marlin_gemm` on Marlin tensors (fp16 and bf16 activations, group 128, symmetric), with its
  default launch shape, and (`--sweep`) the best of a few launch shapes, reported with its shape;
- `quanto`: optimum-quanto's Marlin CUDA kernel (fp16, g128; built on first use, about 90 s);
- `gemlite`: GemLite's A16W4 (HQQ layout, fp16, g128, its own tuned configs);
- `dense`: fp16 and bf16 `torch.nn.functional.linear` (cuBLAS);
- `roofline`: bytes of B + scales per call over the device-to-device copy bandwidth measured in this run.
Also checks each kernel's output against the dense fp16 product of the same dequantized weights.

`--modes g128,g-1,g32,g128+z,g128+shift,g128+act,...` (group size -1/32/64/128; `+z` Marlin int4 zero points,
`+shift` optimum-quanto's float shift, `+act` act-order with a random g_idx of equal groups) times instead, per
mode, what the runtime runs for a `MarlinLinear` of that mode: the `triton` and `quanto` backends' `forward`
(x gathered by `perm` and the per-column zero-point term included, as served), the Triton GEMM with scales
(and shift) in each activation dtype of `--dtypes`, Marlin's kernel at fp16 where it serves the mode (else
the reason it refuses), beside dense `linear` and the roofline (B + scales + zero points).
Full results go to DIR/bench_gemm.json (DIR: --out, else $OUT, else .); a table is printed last.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _cuda_timing import graph_time_us  # noqa: E402  (scripts/, first on sys.path)
from marlin_convert.layout import permute_scales  # noqa: E402
from marlin_convert.layout.pack_triton import pack_codes_cuda  # noqa: E402
from marlin_convert.runtime.triton_gemm import KernelConfig, marlin_gemm, pick_config, split_for  # noqa: E402

SHAPES = [(4096, 4096), (28672, 8192), (8192, 28672)]
"""(N, K) = (out_features, in_features)."""
MS = [1, 16, 64, 256]
GS = 128
L2_BYTES = 60 << 20
SW = KernelConfig(16, 8, 2, 4, 3)
SW128 = dataclasses.replace(SW, bm=128, warps=8)
SWEEP_SWAP3 = {
    "small": [dataclasses.replace(SW, maxnreg=128), SW],
    "mid": [dataclasses.replace(SW, bm=64), dataclasses.replace(SW, bm=64, nb=1)],
    "large": [SW128, dataclasses.replace(SW128, bm=64)],
}
"""`--sweep-set swap3` (with `--splits`): round 8's third call, the split of K for the new defaults."""
SWEEP_SWAP4 = {
    "small": [],
    "mid": [dataclasses.replace(SW, bm=64, xperm=True), dataclasses.replace(SW, bm=64, nb=1, xperm=True)],
    "large": [dataclasses.replace(SW128, xperm=True)],
}
"""`--sweep-set swap4` (with `--splits`): round 9, 64 x 128 against 64 x 64 tiles at 64 rows and the split of K
for 128-row tiles (no longer refused) above; nothing at M <= 16 (the default row only)."""
SW_R128 = dataclasses.replace(SW, maxnreg=128)
SWEEP_DEEP = {
    "small": [SW_R128, dataclasses.replace(SW_R128, stages=4), dataclasses.replace(SW_R128, stages=5),
              dataclasses.replace(SW_R128, bt=4, stages=6), dataclasses.replace(SW_R128, bt=4, stages=8),
              dataclasses.replace(SW_R128, bt=2, stages=12)],
    "mid": [], "large": [],
}
"""`--sweep-set deep` (with `--splits`): round 10, more weights in flight at M <= 16 (issue #13's 3x dense):
the default 16 x 128 tiles (3 stages of 128 k) against 4-5 stages, and 64 / 32 k a step with 6-12 stages."""
SW1 = dataclasses.replace(SW_R128, nb=1)
SWEEP_R11 = {
    "small": [SW_R128, SW1, dataclasses.replace(SW1, maxnreg=80), dataclasses.replace(SW1, maxnreg=64),
              dataclasses.replace(SW1, maxnreg=80, stages=4), dataclasses.replace(SW1, maxnreg=80, stages=5)],
    "mid": [], "large": [],
}
"""`--sweep-set r11` (with `--splits`): round 11, more programs resident at M <= 16 (issue #13's 3x dense): one
64-column block a program (a 64 x 128 weight tile: sm_90 ptxas, symmetric fp16, 91 registers, 79 under a cap of
80 or 96, 64 with 24 bytes spilled under 64; the default's two blocks: 127) with 3-5 stages, at splits that fill
4-8 programs a multiprocessor, against the default. Round 11 (BENCHMARKS.md): none was faster than the default
(47.1-49.6 us at best against 41.9-46.6 at 1-16 rows of 28672x8192 / 8192x28672)."""
SWEEP = SWEEP_SWAP3
"""The default sweep (`--sweep`): round 8's launch shapes of the swapped kernel at each batch class. (The sweeps of
rounds 6-8 that timed the unswapped kernel, `r7`, `x`, `swap` and `swap2`, went with it in round 24.)"""
SWEEPS = {"deep": SWEEP_DEEP, "r11": SWEEP_R11, "swap3": SWEEP_SWAP3, "swap4": SWEEP_SWAP4}


def copy_bandwidth() -> float:
    """Device-to-device copy, bytes read + written per second."""
    n = 1 << 29
    a = torch.randn(n, dtype=torch.float32, device="cuda")
    b = torch.empty_like(a)
    us = graph_time_us([lambda: b.copy_(a)], reps=5, inner=5)
    return 2 * 4 * n / (us * 1e-6)


def copies_for(nbytes: int) -> int:
    return max(1, min(32, -(-3 * L2_BYTES // nbytes)))


@dataclasses.dataclass(frozen=True)
class Mode:
    """A layer mode for `--modes`: group size, zero-point kind (None, "int", "float") and act-order."""

    group_size: int
    zero_point: str | None = None
    act_order: bool = False

    @staticmethod
    def parse(text: str) -> "Mode":
        head, *flags = text.strip().split("+")
        if not head.startswith("g") or any(f not in ("z", "shift", "act") for f in flags):
            raise ValueError(f"mode {text!r}: g<group>[+z|+shift][+act], e.g. g128+z+act")
        zp = "int" if "z" in flags else ("float" if "shift" in flags else None)
        return Mode(int(head[1:]), zp, "act" in flags)

    def __str__(self) -> str:
        return f"g{self.group_size}" + {None: "", "int": "+z", "float": "+shift"}[self.zero_point] + \
            ("+act" if self.act_order else "")


def mode_record(n: int, k: int, mode: Mode, dtype: torch.dtype, gen: torch.Generator, device: str = "cuda") -> Any:
    """A random source layer (`QuantizedLinear`) of this mode: codes, scales (and shift) in `dtype`, zero points,
    an act-order `g_idx` of equal groups."""
    from marlin_convert.formats import DenseCodes, QuantizedLinear

    groups = 1 if mode.group_size == -1 else k // mode.group_size
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, device=device, generator=gen)
    scales = (torch.rand(groups, n, device=device, generator=gen) * 0.02 + 1e-3).to(dtype)
    zeros = torch.randint(0, 16, (groups, n), dtype=torch.uint8, device=device, generator=gen) \
        if mode.zero_point == "int" else None
    shift = ((torch.rand(groups, n, device=device, generator=gen) - 0.3) * 0.1).to(dtype) \
        if mode.zero_point == "float" else None
    g_idx = None
    if mode.act_order:
        g_idx = (torch.arange(k, device=device) // (k if mode.group_size == -1 else mode.group_size))
        g_idx = g_idx[torch.randperm(k, device=device, generator=gen)].to(torch.int32)
    return QuantizedLinear(DenseCodes(codes), scales, zeros, shift, g_idx, mode.group_size, {})


def mode_layers(n: int, k: int, mode: Mode, dtype: torch.dtype, copies: int, gen: torch.Generator,
                device: str = "cuda") -> list[Any]:
    """`copies` `MarlinLinear`s (the same weights, separate tensors) of this mode, scales (and shift) in
    `dtype`, built by the package's converter (`to_marlin`) from a random source layer (`mode_record`)."""
    from marlin_convert.formats import to_marlin
    from marlin_convert.runtime.linear import MarlinLinear
    from marlin_convert.runtime.spec import LayerSpec

    rec = mode_record(n, k, mode, dtype, gen, device)
    tensors = {name: t.to(device) for name, t in to_marlin(rec).items()}
    spec = LayerSpec(mode.group_size, mode.zero_point, mode.act_order,
                     "float16" if dtype == torch.float16 else "bfloat16")
    layers = []
    for i in range(copies):
        layer = MarlinLinear(k, n, spec, device="meta")
        for name, t in tensors.items():
            setattr(layer, name, t if i == 0 else t.clone())
        layers.append(layer)
    return layers


def round9_config(m: int, n: int, k: int, symmetric: bool, sms: int = 132) -> KernelConfig:
    """`pick_config` as round 9 left it (8 tile rows a step for every group size, x gathered in the kernel
    under act-order up to 16 rows): `--modes --compare-round9` times it beside the current default."""
    if m <= 16:
        cfg = KernelConfig(bm=16, bt=8, nb=2, maxnreg=128 if symmetric else 0)
        return dataclasses.replace(cfg, split_k=split_for(cfg, m, n, k, 2 * sms))
    if m <= 64:
        cfg = KernelConfig(bm=64, bt=8, nb=1 if n * k <= 1 << 26 else 2, xperm=True)
        return dataclasses.replace(cfg, split_k=split_for(cfg, m, n, k, sms, min_steps=8))
    cfg = KernelConfig(bm=128, bt=8, nb=2, warps=8, xperm=True)
    return dataclasses.replace(cfg, split_k=split_for(cfg, m, n, k, sms // 2, min_steps=8))


def bench_modes(args: argparse.Namespace, res: dict[str, Any], bw: float, out_dir: Path) -> None:
    """`--modes`: per shape, mode and batch, the runtime's `triton` and `quanto` backends and dense."""
    from marlin_convert.runtime import backends

    modes = [Mode.parse(v) for v in args.modes.split(",")]
    dts = {"fp16": torch.float16, "bf16": torch.bfloat16}
    dtypes = [dts[v] for v in args.dtypes.split(",")]
    shapes = SHAPES if args.shapes is None else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    ms = MS if args.ms is None else [int(v) for v in args.ms.split(",")]
    tri, qto = backends.BACKENDS["triton"], backends.BACKENDS["quanto"]
    for n, k in shapes:
        gen = torch.Generator(device="cuda").manual_seed(n + k)
        xs = {m: torch.randn(m, k, device="cuda", generator=gen) for m in ms}
        w = torch.randn(n, k, device="cuda", generator=gen).half() * 0.01
        nd = copies_for(w.numel() * 2)
        dense = {}
        for dt in dtypes:
            wd = [w.to(dt)] + [w.to(dt) for _ in range(nd - 1)]
            for m in ms:
                if not args.no_dense:
                    xd = xs[m].to(dt)
                    dense[(dt, m)] = graph_time_us([lambda w_=w_: torch.nn.functional.linear(xd, w_) for w_ in wd])
            del wd
        for mode in modes:
            if mode.group_size != -1 and k % mode.group_size:
                continue
            for dt in dtypes:
                t0 = time.time()
                probe = mode_layers(n, k, mode, dt, 1, gen)[0]
                t = probe.tensors()
                wbytes = sum(t[nm].numel() * t[nm].element_size() for nm in ("B", "s", "z", "shift") if nm in t)
                nc = copies_for(wbytes)
                layers = [probe] + [mode_layers(n, k, mode, dt, 1, gen)[0] for _ in range(nc - 1)]
                wref = backends.dense_weight(probe, torch.float32)
                for m in ms:
                    x = xs[m].to(dt)
                    ref = x.float() @ wref.t()
                    row: dict[str, Any] = {"n": n, "k": k, "m": m, "mode": str(mode), "dtype": str(dt)[6:],
                                           "roofline_us": wbytes / bw * 1e6, "copies": nc}
                    if (dt, m) in dense:
                        row["dense_us"] = dense[(dt, m)]
                    if args.compare_round9:
                        t_ = probe.tensors()
                        sym = "z" not in t_ and "shift" not in t_
                        c9 = round9_config(m, n, k, sym)
                        row["round9_cfg"] = repr(c9)
                        row["triton_cfg"] = repr(pick_config(m, n, k, k if mode.group_size == -1 else mode.group_size,
                                                             zmode=2 if "shift" in t_ else int("z" in t_)))

                        def call(ly: Any, cfg: KernelConfig | None) -> torch.Tensor:
                            t = ly.tensors()
                            return marlin_gemm(x, t["B"], t["s"], group_size=mode.group_size, z=t.get("z"),
                                               shift=t.get("shift"), perm=t.get("perm"), config=cfg)

                        row["round9_us"] = graph_time_us([lambda ly=ly: call(ly, c9) for ly in layers])
                        row["round9_err"] = float((call(probe, c9).float() - ref).norm() / ref.norm())
                    for name, be in (("triton", tri), ("quanto", qto)):
                        if name == "quanto" and args.no_quanto:
                            continue
                        reason = be.unsupported_reason(probe, x)
                        if reason is not None:
                            row[name + "_refused"] = reason
                            continue
                        try:
                            row[name + "_us"] = graph_time_us([lambda ly=ly, be=be: be.forward(ly, x) for ly in layers])
                            y = be.forward(probe, x)
                            row[name + "_err"] = float((y.float() - ref).norm() / ref.norm())
                        except Exception as e:  # noqa: BLE001
                            row[name + "_error"] = str(e)[:300]
                    res["rows"].append(row)
                    print(json.dumps({kk: (round(v, 5) if isinstance(v, float) else v) for kk, v in row.items()}),
                          flush=True)
                (out_dir / "bench_gemm.json").write_text(json.dumps(res, indent=1))
                print(f"  {n}x{k} {mode} {str(dt)[6:]}: {time.time() - t0:.1f} s", flush=True)
                del layers, probe, wref
                torch.cuda.empty_cache()
    print("\nN x K, M, mode, dtype | triton | round 9 shape | quanto | dense | roofline | triton / quanto (speed) | "
          "triton / dense (speed)")
    for r in res["rows"]:
        tq = f"{r['quanto_us'] / r['triton_us']:.2f}x" if "quanto_us" in r and "triton_us" in r else "-"
        td = f"{r['dense_us'] / r['triton_us']:.2f}x" if "dense_us" in r and "triton_us" in r else "-"
        print(f"{r['n']}x{r['k']}, {r['m']}, {r['mode']}, {r['dtype']} | {r.get('triton_us', float('nan')):.1f} | "
              f"{r.get('round9_us', float('nan')):.1f} | {r.get('quanto_us', float('nan')):.1f} | {r.get('dense_us', float('nan')):.1f} | {r['roofline_us']:.1f} | "
              f"{tq} | {td}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--no-quanto", action="store_true")
    ap.add_argument("--no-gemlite", action="store_true")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--shapes", default=None, help="e.g. 4096x4096,28672x8192")
    ap.add_argument("--ms", default=None, help="batch sizes, e.g. 1,16 (default 1,16,64,256)")
    ap.add_argument("--no-dense", action="store_true")
    ap.add_argument("--sweep-set", default="default", choices=("default", *SWEEPS))
    ap.add_argument("--splits", default=None,
                    help="sweep each launch shape at these splits of K (e.g. 1,2,4,8,16) instead of split_for's")
    ap.add_argument("--modes", default=None,
                    help="time these layer modes through the runtime's backends instead, e.g. g128,g-1,g32,g128+z,"
                         "g128+shift,g128+act (module docstring)")
    ap.add_argument("--dtypes", default="fp16,bf16", help="--modes: activation (and scale) dtypes, fp16 and/or bf16")
    ap.add_argument("--compare-round9", action="store_true",
                    help="--modes: also time round 9's launch shape (`round9_config`) beside the current default")
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    dev = torch.cuda.get_device_name()
    res: dict[str, Any] = {"device": dev, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                           "torch": torch.__version__, "rows": []}
    import triton

    res["triton"] = triton.__version__
    bw = copy_bandwidth()
    res["copy_GBps"] = bw / 1e9
    print(f"{dev}; copy {bw / 1e9:.0f} GB/s (read + write)", flush=True)

    if args.modes:
        bench_modes(args, res, bw, out_dir)
        return
    quanto = None
    if not args.no_quanto:
        try:
            t0 = time.time()
            from marlin_convert.runtime.gemm_check import marlin_gemm as quanto_gemm

            quanto = quanto_gemm()
            print(f"quanto built in {time.time() - t0:.0f} s", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"quanto unavailable: {e}", flush=True)
            res["quanto_error"] = str(e)
    gemlite_mod = None
    if not args.no_gemlite:
        try:
            from gemlite.helper import A16W4_HQQ_INT

            gemlite_mod = A16W4_HQQ_INT
        except Exception as e:  # noqa: BLE001
            print(f"gemlite unavailable: {e}", flush=True)
            res["gemlite_error"] = str(e)

    shapes = SHAPES if args.shapes is None else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    for n, k in shapes:
        gen = torch.Generator(device="cuda").manual_seed(n + k)
        codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, device="cuda", generator=gen)
        g = k // GS
        scales = (torch.rand(g, n, device="cuda", generator=gen) * 0.02 + 1e-3).half()
        B = pack_codes_cuda(codes)
        s = permute_scales(scales, group_size=GS, k=k)
        wbytes = B.numel() * 4 + s.numel() * 2
        nc = copies_for(wbytes)
        Bs = [B] + [B.clone() for _ in range(nc - 1)]
        ss = [s] + [s.clone() for _ in range(nc - 1)]
        w_f16 = ((codes.float() - 8) * scales.float().repeat_interleave(GS, 0).t()).half()
        w_b16 = w_f16.bfloat16()
        nd = copies_for(w_f16.numel() * 2)
        Wd = {torch.float16: [w_f16] + [w_f16.clone() for _ in range(nd - 1)],
              torch.bfloat16: [w_b16] + [w_b16.clone() for _ in range(nd - 1)]}
        s_b16 = [permute_scales(scales.bfloat16(), group_size=GS, k=k)] * nc  # bf16 activations take bf16 scales
        sz = permute_scales((-8.0 * scales.float()).half(), group_size=GS, k=k)
        n_pad = -(-n // 128) * 128
        ws = torch.zeros(n_pad // 128 * 16, dtype=torch.int32, device="cuda")
        gl = None
        if gemlite_mod is not None:
            try:
                zeros = torch.full((n, g), 8.0, device="cuda", dtype=torch.float16)
                gl = gemlite_mod(device="cuda", dtype=torch.float16).from_weights(
                    codes, scales.t().contiguous(), zeros)
            except Exception as e:  # noqa: BLE001
                print(f"gemlite pack failed for {n}x{k}: {e}", flush=True)
                traceback.print_exc()
        for m in (MS if args.ms is None else [int(v) for v in args.ms.split(",")]):
            row: dict[str, Any] = {"n": n, "k": k, "m": m, "roofline_us": wbytes / bw * 1e6}
            xs = {dt: torch.randn(m, k, device="cuda", generator=gen).to(dt) for dt in (torch.float16, torch.bfloat16)}
            ref = (xs[torch.float16].float() @ w_f16.float().t())
            ref_n = ref.norm()

            def err(y: torch.Tensor) -> float:
                return float((y.float() - ref).norm() / ref_n)

            x = xs[torch.float16]
            for dt, tag, sl in ((torch.float16, "triton_fp16", ss), (torch.bfloat16, "triton_bf16", s_b16)):
                xd = xs[dt]
                row[tag + "_us"] = graph_time_us([lambda b=b, sc=sc: marlin_gemm(xd, b, sc, group_size=GS)
                                                  for b, sc in zip(Bs, sl)])
            row["triton_cfg"] = repr(pick_config(m, n, k, GS))
            row["triton_err"] = err(marlin_gemm(x, B, s, group_size=GS))
            if not args.no_sweep:
                cls = "small" if m <= 16 else ("mid" if m <= 64 else "large")
                best = None
                for cfg in SWEEPS.get(args.sweep_set, SWEEP)[cls]:
                    auto = split_for(cfg, m, n, k, 7 * 132 // 2 if m <= 16 else (132 if m <= 64 else 0),
                                     min_steps=4 if m <= 16 else 16)
                    splits = {max(1, auto // 2), auto, 2 * auto} if m <= 64 else {auto}
                    if args.splits:
                        steps = k // (16 * cfg.bt)
                        splits = {sp for sp in (int(v) for v in args.splits.split(",")) if steps // sp >= 4 and not steps % sp}
                    for split in sorted(splits):
                        c = dataclasses.replace(cfg, split_k=split)
                        try:
                            t = graph_time_us([lambda b=b, sc=sc: marlin_gemm(x, b, sc, group_size=GS, config=c)
                                               for b, sc in zip(Bs, ss)], reps=3)
                        except Exception as e:  # noqa: BLE001
                            print(f"  config {c} failed: {str(e)[:200]}", flush=True)
                            continue
                        e = err(marlin_gemm(x, B, s, group_size=GS, config=c))
                        if not e < 2e-3:
                            print(f"  config {c} WRONG: rel err {e:.2e}", flush=True)
                            continue
                        row.setdefault("sweep", []).append((repr(c), t))
                        tags = f"{'' if c.scale_acc else ' sw'}{f' r{c.maxnreg}' if c.maxnreg else ''}"
                        print(f"  {n}x{k} m{m} bm{c.bm} bt{c.bt} nb{c.nb} w{c.warps} s{c.stages} k{c.split_k}"
                              f"{tags}: {t:.1f} us  err {e:.1e}", flush=True)
                        if best is None or t < best[1]:
                            best = (repr(c), t)
                if best is not None:
                    row["triton_best_cfg"], row["triton_best_us"] = best
            if quanto is not None:
                try:
                    Bp = [torch.nn.functional.pad(b.view(k // 16, n // 64, 128), (0, 0, 0, (n_pad - n) // 64)).view(k // 16, 2 * n_pad)
                          if n_pad != n else b for b in Bs]
                    row["quanto_us"] = graph_time_us([lambda b=b, sc=sc: quanto(x, b, sc, sz, ws) for b, sc in zip(Bp, ss)])
                    row["quanto_err"] = err(quanto(x, Bp[0], s, sz, ws)[:, :n])
                except Exception as e:  # noqa: BLE001
                    row["quanto_error"] = str(e)[:300]
            if gl is not None:
                try:
                    row["gemlite_us"] = graph_time_us([lambda: gl(x)])
                    row["gemlite_err"] = err(gl(x))
                    row["gemlite_note"] = "one weight copy (GemLite module); may run partly from L2 on 4096x4096"
                except Exception as e:  # noqa: BLE001
                    row["gemlite_error"] = str(e)[:300]
            for dt, tag in ((torch.float16, "dense_fp16"), (torch.bfloat16, "dense_bf16")):
                if args.no_dense:
                    break
                xd = xs[dt]
                row[tag + "_us"] = graph_time_us([lambda w=w: torch.nn.functional.linear(xd, w) for w in Wd[dt]])
            res["rows"].append(row)
            print(json.dumps({kk: (round(v, 2) if isinstance(v, float) else v) for kk, v in row.items() if kk != "sweep"}),
                  flush=True)
            (out_dir / "bench_gemm.json").write_text(json.dumps(res, indent=1))
        del Bs, ss, Wd, gl
        torch.cuda.empty_cache()

    cols = ["triton_fp16_us", "triton_bf16_us", "triton_best_us", "quanto_us", "gemlite_us", "dense_fp16_us",
            "dense_bf16_us", "roofline_us"]
    print("\nN x K, M | " + " | ".join(c[:-3] for c in cols) + " | triton_fp16 vs dense_fp16 | % roofline")
    for r in res["rows"]:
        vals = " | ".join(f"{r[c]:.1f}" if c in r else "-" for c in cols)
        print(f"{r['n']}x{r['k']}, {r['m']} | {vals} | {r.get('dense_fp16_us', float('nan')) / r['triton_fp16_us']:.2f}x | "
              f"{100 * r['roofline_us'] / r['triton_fp16_us']:.0f}%")


if __name__ == "__main__":
    main()
