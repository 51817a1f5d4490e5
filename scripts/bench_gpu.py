#!/usr/bin/env python3
"""GPU benchmark of issue #4, one run on a CUDA machine (optimum-quanto importable for vLLM's kernel).

    PYTHONPATH=. python3 scripts/bench_gpu.py [--out DIR] [--e2e-gb 8] [--no-e2e] [--sweep]

1. Builds optimum-quanto's CUDA extension (vLLM's `gptq_marlin_repack`, ~90 s the first time).
2. Per layer shape N x K (N = out_features, K = in_features, as DESIGN): checks that our Triton pack
   (from a GPTQ qweight and from uint8 codes), vLLM's repack and the seed's algorithm as plain torch ops
   give identical bytes, then times each of them and a device-to-device copy of the same bytes, with CUDA
   events around CUDA-graph replays of back-to-back calls (median of repeats; inputs rotate over several
   copies so that no shape runs from L2); eager timings (launch overhead included) are kept in the JSON.
   Throughput is packed output bytes (K*N/2) per second; `traffic` adds the bytes read.
3. verify --gemm: optimum-quanto's Marlin GEMM errors on our packed layers (the bound's evidence).
4. End to end: writes a multi-shard GPTQ checkpoint of >= --e2e-gb GB (Llama-70B-like layers, random
   words), then times `cp -r` of it and `marlin_convert.pack_checkpoint(..., device="cuda")`, each
   followed by `sync`, and the peak GPU memory of the pack.
Full results go to DIR/bench_gpu.json (DIR: --out, else $OUT, else .); a compact table is printed last.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marlin_convert.runtime.gemm_check import quanto_lib  # noqa: E402
from marlin_convert.layout import pack_triton  # noqa: E402
from marlin_convert.layout.pack_triton import pack_codes_cuda, pack_kpacked_cuda, unpack_codes_cuda  # noqa: E402
from tests._support.reference import seed_pack_torch  # noqa: E402
from tests._support.words import pack_rows  # noqa: E402

__all__ = ["SHAPES", "main"]

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (28672, 8192), (8192, 28672)]
"""(N, K) = (out_features, in_features)."""
SWEEP = {
    "kpacked_shuffle": [(4, 2, 4), (2, 4, 4), (4, 4, 4), (8, 2, 4), (4, 2, 8), (8, 4, 4)],
    "kpacked_gather": [(4, 2, 4), (8, 4, 4)],
    "codes_shuffle": [(4, 2, 4), (8, 2, 4), (4, 4, 4), (8, 4, 4), (16, 2, 4), (8, 4, 8)],
}
"""(tile rows, 64-column blocks, warps) tried per kernel and variant with --sweep."""
ROTATE_BYTES = 512 << 20
"""Input bytes cycled through per timing (several times the 60 MB L2)."""


# ----------------------------------------------------------------------------- timing


def _median_ms(run: Callable[[], None], reps: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def time_calls(calls: list[Callable[[], Any]], *, graph: bool = True, reps: int = 10) -> dict[str, float | None]:
    """Median microseconds per call: eager (back-to-back launches) and CUDA-graph replay."""
    for f in calls:  # warm-up: compilation, allocator, module load
        f()
    torch.cuda.synchronize()

    def eager() -> None:
        for f in calls:
            f()

    result: dict[str, float | None] = {"eager_us": 1e3 * _median_ms(eager, max(3, reps // 2)) / len(calls), "graph_us": None}
    if graph:
        try:
            g = torch.cuda.CUDAGraph()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                eager()  # side-stream warm-up, as CUDA graph capture wants
            torch.cuda.current_stream().wait_stream(stream)
            with torch.cuda.graph(g):
                eager()
            g.replay()
            torch.cuda.synchronize()
            result["graph_us"] = 1e3 * _median_ms(g.replay, reps) / len(calls)
            del g
        except Exception as e:  # noqa: BLE001 - report, keep the eager number
            result["graph_error"] = f"{type(e).__name__}: {e}"[:200]
    torch.cuda.synchronize()
    return result


def _warm_gpu(seconds: float = 1.0) -> None:
    """Busy the GPU for a moment so that the first timed contender does not pay for the clocks ramping up."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()


def best_us(t: dict[str, Any]) -> float:
    return t["graph_us"] if t.get("graph_us") is not None else t["eager_us"]


# ----------------------------------------------------------------------------- the contenders


def random_codes(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randint(0, 16, (n, k), dtype=torch.uint8, device="cuda", generator=g)


def bench_shape(n: int, k: int, lib: Any, *, sweep: bool, reps: int) -> dict[str, Any]:
    out_bytes = n * k // 2
    copies = max(2, math.ceil(ROTATE_BYTES / out_bytes))
    codes = [random_codes(n, k, seed=i) for i in range(copies)]
    words = [pack_rows(c.t()) for c in codes]
    empty = torch.empty(0, dtype=torch.int32, device="cuda")
    res: dict[str, Any] = {"N": n, "K": k, "packed_bytes": out_bytes, "rotated_inputs": copies}

    errors: dict[str, str] = {}

    def attempt(name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - one broken contender must not end the run
            errors[name] = f"{type(e).__name__}: {e}"[:300]
            return None

    ours = pack_kpacked_cuda(words[0])  # the seed's torch ops are the reference below, vLLM the oracle
    checks = {
        "kpacked_eq_seed_torch": torch.equal(ours, seed_pack_torch(codes[0])),
        "kpacked_eq_vllm": torch.equal(ours, lib.gptq_marlin_repack(words[0], empty, k, n, 4)),
        "codes_eq": attempt("codes_eq", lambda: torch.equal(ours, pack_codes_cuda(codes[0]))),
        "kpacked_gather_eq": attempt("kpacked_gather_eq", lambda: torch.equal(ours, pack_kpacked_cuda(words[0], variant="gather"))),
        "kpacked_shuffle_eq": attempt("kpacked_shuffle_eq", lambda: torch.equal(ours, pack_kpacked_cuda(words[0], variant="shuffle"))),
        "codes_gather_eq": attempt("codes_gather_eq", lambda: torch.equal(ours, pack_codes_cuda(codes[0], variant="gather"))),
        "unpack_roundtrip": attempt("unpack_roundtrip", lambda: torch.equal(unpack_codes_cuda(ours, n=n, k=k), codes[0])),
    }
    perm = torch.randperm(k, device="cuda", generator=torch.Generator(device="cuda").manual_seed(k)).to(torch.int32)
    ours_p = pack_kpacked_cuda(words[0], perm)
    checks["perm_eq_vllm"] = torch.equal(ours_p, lib.gptq_marlin_repack(words[0], perm, k, n, 4))
    checks["perm_eq_seed_torch"] = torch.equal(ours_p, seed_pack_torch(codes[0][:, perm.long()].contiguous()))
    res["checks"] = checks
    del ours, ours_p

    t: dict[str, Any] = {}

    def timed(name: str, calls: list[Callable[[], Any]], **kw: Any) -> None:
        result = attempt(name, lambda: time_calls(calls, **kw))
        if result is not None:
            t[name] = result

    timed("ours_kpacked", [lambda w=w: pack_kpacked_cuda(w) for w in words], reps=reps)
    other_kp = "gather" if pack_triton.DEFAULT_VARIANTS["kpacked"] == "shuffle" else "shuffle"
    timed(f"ours_kpacked_{other_kp}", [lambda w=w: pack_kpacked_cuda(w, variant=other_kp) for w in words], reps=reps)
    timed("ours_codes", [lambda c=c: pack_codes_cuda(c) for c in codes], reps=reps)
    other = "gather" if pack_triton.DEFAULT_VARIANTS["codes"] == "shuffle" else "shuffle"
    timed(f"ours_codes_{other}", [lambda c=c: pack_codes_cuda(c, variant=other) for c in codes], reps=reps)
    timed("vllm_repack", [lambda w=w: lib.gptq_marlin_repack(w, empty, k, n, 4) for w in words], reps=reps)
    # act-order: the kernel with a perm (validation left out of the timed call: it syncs), and vLLM with it
    outs = [pack_kpacked_cuda(w, perm) for w in words]
    timed("ours_kpacked_perm", [lambda w=w: pack_kpacked_cuda(w, perm, validate_perm=False) for w in words], reps=reps)
    timed("vllm_repack_perm", [lambda w=w: lib.gptq_marlin_repack(w, perm, k, n, 4) for w in words], reps=reps)
    timed("ours_unpack", [lambda o=o: unpack_codes_cuda(o, n=n, k=k) for o in outs], reps=reps)
    timed("seed_torch", [lambda c=c: seed_pack_torch(c) for c in codes[:2]], graph=False, reps=3)
    dsts = [torch.empty_like(w) for w in words]
    timed("d2d_copy", [lambda w=w, d=d: d.copy_(w) for w, d in zip(words, dsts, strict=True)], reps=reps)
    if sweep:
        for key, configs in SWEEP.items():
            kind, variant = key.split("_")
            for cfg in configs:
                if kind == "kpacked":
                    calls = [lambda w=w, v=variant, c=cfg: pack_kpacked_cuda(w, variant=v, config=c) for w in words]
                else:
                    calls = [lambda x=x, v=variant, c=cfg: pack_codes_cuda(x, variant=v, config=c) for x in codes]
                timed(f"sweep_{key}_{cfg[0]}x{cfg[1]}w{cfg[2]}", calls, reps=reps)
    read = {"ours_unpack": out_bytes, "seed_torch": 2 * out_bytes}  # else: codes paths 2x, word paths 1x
    for name, v in t.items():
        us = best_us(v)
        v["out_GBps"] = out_bytes / us / 1e3
        written = 2 * out_bytes if name == "ours_unpack" else out_bytes
        v["traffic_GBps"] = (read.get(name, 2 * out_bytes if "codes" in name else out_bytes) + written) / us / 1e3
    res["timings"] = t
    res["errors"] = errors
    del codes, words, outs, dsts
    torch.cuda.empty_cache()
    return res


# ----------------------------------------------------------------------------- verify --gemm errors


def bench_gemm() -> list[dict[str, Any]]:
    """Errors of optimum-quanto's Marlin GEMM on our packed layers (random records, packed on the GPU)."""
    from marlin_convert.formats import DenseCodes, QuantizedLinear, to_marlin
    from marlin_convert.runtime.gemm_check import check_layer

    rows = []
    cases = [(n, k, "sym", 128, False) for n, k in SHAPES]
    cases += [(n, k, kind, gs, ao) for n, k in ((4096, 4096), (28672, 8192))
              for kind, gs, ao in (("asym", 128, True), ("asym", -1, False), ("shift", 128, False))]
    for n, k, kind, gs, act_order in cases:
        g = torch.Generator(device="cuda").manual_seed(n + k)
        groups = 1 if gs == -1 else k // gs
        scales = (torch.rand((groups, n), device="cuda", generator=g) * 0.02 + 1e-3).half()
        zeros = torch.randint(1, 16, (groups, n), dtype=torch.uint8, device="cuda", generator=g) if kind == "asym" else None
        shift = (torch.rand((groups, n), device="cuda", generator=g) * 0.1).half() if kind == "shift" else None
        g_idx = None
        if act_order:
            g_idx = (torch.arange(k, device="cuda") // gs).to(torch.int32)[torch.randperm(k, device="cuda", generator=g)]
        rec = QuantizedLinear(DenseCodes(random_codes(n, k, n * k)), scales, zeros, shift, g_idx, gs)
        t0 = time.perf_counter()
        result = check_layer(rec, to_marlin(rec))
        rows.append({"N": n, "K": k, "kind": kind, "group_size": gs, "act_order": act_order, "rel_err": result.rel_err,
                     "max_err": result.max_err, "skipped": result.skipped, "ok": result.ok,
                     "seconds": round(time.perf_counter() - t0, 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ----------------------------------------------------------------------------- end to end


def make_gptq_checkpoint(root: Path, target_gb: float, shard_gb: float = 2.0) -> dict[str, Any]:
    """Llama-70B-like GPTQ layers (hidden 8192, intermediate 28672, 8 KV heads), symmetric, group 128,
    random qweight words generated on the GPU, written with safetensors in ~shard_gb shards."""
    from tests._support.checkpoints import ShardedCheckpointWriter, gptq_config

    hidden, inter, kv = 8192, 28672, 1024
    shapes = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (kv, hidden), "self_attn.v_proj": (kv, hidden),
              "self_attn.o_proj": (hidden, hidden), "mlp.gate_proj": (inter, hidden), "mlp.up_proj": (inter, hidden),
              "mlp.down_proj": (hidden, inter)}
    per_layer = sum(n * k // 2 + (k // 128) * n * 2 + (k // 128) * n // 2 + 4 * k for n, k in shapes.values())
    layers = math.ceil(target_gb * 1e9 / per_layer)
    root.mkdir(parents=True)
    writer = ShardedCheckpointWriter(root, gptq_config(128, sym=True, desc_act=False, v2=False, hidden_size=hidden))
    g = torch.Generator(device="cuda").manual_seed(0)
    shard: dict[str, torch.Tensor] = {}
    for layer in range(layers):
        for proj, (n, k) in shapes.items():
            p = f"model.layers.{layer}.{proj}"
            words = torch.randint(-2**31, 2**31 - 1, (k // 8, n), dtype=torch.int32, device="cuda", generator=g)
            shard[f"{p}.qweight"] = words.cpu()
            shard[f"{p}.qzeros"] = torch.full((k // 128, n // 8), 0x77777777, dtype=torch.int32)
            shard[f"{p}.scales"] = (torch.rand((k // 128, n), device="cuda", generator=g) * 0.02 + 1e-3).half().cpu()
            shard[f"{p}.g_idx"] = (torch.arange(k, dtype=torch.int32) // 128)
        shard[f"model.layers.{layer}.input_layernorm.weight"] = torch.ones(hidden, dtype=torch.float16)
        if sum(t.numel() * t.element_size() for t in shard.values()) >= shard_gb * 1e9:
            writer.add_shard(shard)
            shard = {}
    if shard:
        writer.add_shard(shard)
    names = writer.close()
    size = sum(p.stat().st_size for p in root.iterdir())
    return {"layers": layers, "shards": len(names), "bytes": size}


def _sync() -> float:
    t0 = time.perf_counter()
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - t0


def bench_e2e(work: Path, target_gb: float) -> dict[str, Any]:
    from marlin_convert import pack_checkpoint

    src, copy, out = work / "src", work / "copy", work / "out"
    for p in (src, copy, out):
        shutil.rmtree(p, ignore_errors=True)
    t0 = time.perf_counter()
    info = make_gptq_checkpoint(src, target_gb)
    info["generate_s"] = time.perf_counter() - t0
    info["generate_sync_s"] = _sync()
    nbytes = info["bytes"]

    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(copy)], check=True)
    cp_s = time.perf_counter() - t0
    cp_sync = _sync()
    shutil.rmtree(copy)
    _sync()

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    report = pack_checkpoint(src, out, device="cuda")
    pack_s = time.perf_counter() - t0
    pack_sync = _sync()
    peak = torch.cuda.max_memory_allocated()
    out_bytes = sum(p.stat().st_size for p in out.iterdir())
    shutil.rmtree(out)
    shutil.rmtree(src)
    largest_layer = 28672 * 8192 // 2
    return {**info, "cp_s": cp_s, "cp_sync_s": cp_sync, "pack_s": pack_s, "pack_sync_s": pack_sync,
            "pack_report_s": report.seconds, "layers_converted": report.layers_converted, "out_bytes": out_bytes,
            "cp_GBps": nbytes / (cp_s + cp_sync) / 1e9, "pack_GBps": nbytes / (pack_s + pack_sync) / 1e9,
            "pack_over_cp": (pack_s + pack_sync) / (cp_s + cp_sync),
            "pack_over_cp_nosync": pack_s / cp_s, "peak_gpu_bytes": peak,
            "peak_gpu_over_largest_qweight": peak / largest_layer}


def breakdown_e2e(work: Path, target_gb: float = 0.9) -> dict[str, Any]:
    """Where end-to-end time goes: each host/GPU stage of one layer's trip, alone and single-threaded, over
    every qweight of a small generated checkpoint (page-cache warm), as GB/s of qweight bytes; then whole
    `pack_checkpoint` runs of the same checkpoint (cuda with default jobs and with jobs=1, and cpu)."""
    import hashlib

    from marlin_convert import pack_checkpoint
    from marlin_convert.checkpoint import open_checkpoint
    from marlin_convert.layout import pack_kpacked

    src = work / "bd_src"
    shutil.rmtree(work, ignore_errors=True)
    info = make_gptq_checkpoint(src, target_gb)
    _sync()
    stages = dict.fromkeys(["read", "sha256_in", "to_tensor", "pin_memory", "h2d_pinned", "pack_kernel",
                            "d2h_pageable", "d2h_pinned", "sha256_out", "write_fsync"], 0.0)
    total = 0

    def clock(name: str, fn: Callable[[], Any]) -> Any:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        value = fn()
        torch.cuda.synchronize()
        stages[name] += time.perf_counter() - t0
        return value

    pack_kpacked(torch.zeros((16, 64), dtype=torch.int32, device="cuda"))  # compile outside the clock
    with open_checkpoint(src) as ck:
        for name in [n for n in ck.specs() if n.endswith(".qweight")]:
            raw = clock("read", lambda name=name: ck.read_raw(name))
            clock("sha256_in", lambda raw=raw: hashlib.sha256(raw).hexdigest())
            t = clock("to_tensor", lambda name=name: ck.read(name))
            pinned = clock("pin_memory", lambda t=t: t.pin_memory())
            dev = clock("h2d_pinned", lambda p=pinned: p.to("cuda", non_blocking=True))
            out = clock("pack_kernel", lambda d=dev: pack_kpacked(d))
            host = clock("d2h_pageable", lambda o=out: o.to("cpu"))
            buf = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            clock("d2h_pinned", lambda o=out, b=buf: b.copy_(o, non_blocking=True))
            view = memoryview(host.numpy()).cast("B")
            clock("sha256_out", lambda v=view: hashlib.sha256(v).hexdigest())

            def write(v: memoryview = view) -> None:
                with open(work / "bd_write.bin", "wb") as f:
                    f.write(v)
                    f.flush()
                    os.fsync(f.fileno())

            clock("write_fsync", write)
            total += t.numel() * 4
    res: dict[str, Any] = {"bytes": info["bytes"], "qweight_bytes": total,
                           "stage_GBps": {k: total / v / 1e9 for k, v in stages.items()}, "stage_s": stages}
    for label, kw in (("pack_cuda", {"device": "cuda"}), ("pack_cuda_jobs1", {"device": "cuda", "jobs": 1}),
                      ("pack_cpu", {"device": "cpu"})):
        out_dir = work / f"bd_{label}"
        t0 = time.perf_counter()
        pack_checkpoint(src, out_dir, **kw)
        res[f"{label}_GBps"] = info["bytes"] / (time.perf_counter() - t0) / 1e9
        shutil.rmtree(out_dir)
    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(work / "bd_cp")], check=True)
    _sync()
    res["cp_GBps"] = info["bytes"] / (time.perf_counter() - t0) / 1e9
    shutil.rmtree(work)
    return res


# ----------------------------------------------------------------------------- main


def _table(shapes: list[dict[str, Any]], e2e: dict[str, Any] | None, gemm: list[dict[str, Any]] | None = None) -> str:
    cols = ["ours_kpacked", "ours_codes", "vllm_repack", "seed_torch", "d2d_copy"]
    lines = ["packed output GB/s (CUDA-graph median; N x K = out x in)",
             f"{'N x K':>13} | " + " | ".join(f"{c:>12}" for c in cols) + " | ours/vLLM | perm: ours / vLLM | equal"]
    nan = {"out_GBps": float("nan")}
    for r in shapes:
        t = r["timings"]
        g = {c: t.get(c, nan)["out_GBps"] for c in cols + ["ours_kpacked_perm", "vllm_repack_perm"]}
        perm = f"{g['ours_kpacked_perm']:6.0f} / {g['vllm_repack_perm']:4.0f}"
        lines.append(f"{r['N']:>6}x{r['K']:<6} | " + " | ".join(f"{g[c]:12.1f}" for c in cols)
                     + f" | {g['ours_kpacked'] / g['vllm_repack']:8.2f}x | {perm:>17} | {all(r['checks'].values())}")
        if r.get("errors"):
            lines.append(f"    errors: {r['errors']}")
    if gemm:
        lines.append("verify --gemm on our layers, max rel err " + ", ".join(
            f"{kind}: {max(r['rel_err'] for r in gemm if r['kind'] == kind and r['rel_err'] is not None):.1e}"
            for kind in dict.fromkeys(r["kind"] for r in gemm)) + f"; all ok: {all(r['ok'] for r in gemm)}")
    if e2e:
        lines.append(f"end to end: {e2e['bytes'] / 1e9:.2f} GB, {e2e['shards']} shards, {e2e['layers_converted']} layers: "
                     f"cp -r {e2e['cp_s'] + e2e['cp_sync_s']:.2f} s ({e2e['cp_GBps']:.2f} GB/s), "
                     f"pack --device cuda {e2e['pack_s'] + e2e['pack_sync_s']:.2f} s ({e2e['pack_GBps']:.2f} GB/s), "
                     f"ratio {e2e['pack_over_cp']:.2f} (without the final sync {e2e['pack_over_cp_nosync']:.2f}); "
                     f"peak GPU memory {e2e['peak_gpu_bytes'] / 1e9:.2f} GB "
                     f"({e2e['peak_gpu_over_largest_qweight']:.1f}x the largest qweight)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."), help="where bench_gpu.json goes")
    ap.add_argument("--work", default="/tmp/marlin_bench", help="scratch directory for the end-to-end run")
    ap.add_argument("--e2e-gb", type=float, default=8.5)
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="also time the k-packed kernel's block configurations")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--breakdown", action="store_true", help="only the end-to-end stage breakdown")
    args = ap.parse_args(argv)
    if args.breakdown:
        result = breakdown_e2e(Path(args.work))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bench_gpu_breakdown.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1), flush=True)
        return result

    import triton

    t0 = time.perf_counter()
    lib = quanto_lib()
    _warm_gpu()
    env = {"date": datetime.date.today().isoformat(), "device": torch.cuda.get_device_name(),
           "sms": torch.cuda.get_device_properties(0).multi_processor_count, "torch": torch.__version__,
           "cuda": torch.version.cuda, "triton": triton.__version__, "command": " ".join(sys.argv),
           "quanto_build_s": round(time.perf_counter() - t0, 1), "kpacked_variant": pack_triton.DEFAULT_VARIANTS["kpacked"],
           "config": pack_triton.DEFAULT_CONFIGS}
    print(json.dumps(env), flush=True)
    results: dict[str, Any] = {"env": env, "shapes": []}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for n, k in SHAPES:
        r = bench_shape(n, k, lib, sweep=args.sweep, reps=args.reps)
        results["shapes"].append(r)
        print(json.dumps({"N": n, "K": k, "checks": r["checks"],
                          **{name: round(v["out_GBps"], 1) for name, v in r["timings"].items()}}), flush=True)
        (out_dir / "bench_gpu.json").write_text(json.dumps(results, indent=1))
    results["gemm"] = bench_gemm()
    (out_dir / "bench_gpu.json").write_text(json.dumps(results, indent=1))
    if not args.no_e2e:
        results["e2e"] = bench_e2e(Path(args.work), args.e2e_gb)
        print(json.dumps(results["e2e"]), flush=True)
    (out_dir / "bench_gpu.json").write_text(json.dumps(results, indent=1))
    print(_table(results["shapes"], results.get("e2e"), results.get("gemm")), flush=True)
    return results


if __name__ == "__main__":
    main()
