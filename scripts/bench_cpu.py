#!/usr/bin/env python3
"""CPU throughput of the Marlin layout kernels, side by side with the seed's numpy pack, and of a
whole-checkpoint `pack_checkpoint(..., device="cpu")` against `cp -r`, with its peak RSS.

Usage:
    python scripts/bench_cpu.py                 # layers 4096x4096 and 28672x8192, then a >= 2 GB e2e run
    python scripts/bench_cpu.py --quick         # small sizes: a smoke run of a few seconds
    python scripts/bench_cpu.py --e2e-gb 0      # kernels only
    python scripts/bench_cpu.py --e2e-gb 4 --workdir /big/tmp --keep

Units (every number printed is one of these):
    time       median wall time of `--reps` runs (the seed at the largest size: 1 run), in ms.
    codes MB/s N*K / time / 1e6: int4 codes processed per second (one code = one uint8 byte of the
               [N, K] codes matrix), whatever the input form (uint8 codes or GPTQ int32 words).
    out MB/s   bytes written per second: the packed Marlin int32 [K/16, 2N] (N*K/2 bytes) for the
               pack rows, the uint8 [N, K] codes (N*K bytes) or GPTQ words (N*K/2) for the unpack rows.
    speedup    seed time / time, both measured in this run: pack rows against the seed's pack,
               unpack rows against the seed's unpack.
Every fast result is checked byte for byte against the seed's result in the same run.

The seed (optimum-quanto `MarlinInt4PackedTensor.pack` / `unpack`, numpy restatement) comes from
tests/_support/reference.py, not from the package under test.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests._support.reference import seed_pack, seed_unpack  # noqa: E402
from tests._support.words import pack_rows  # noqa: E402


# ----------------------------------------------------------------------------- machine

def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count())
    import torch

    return {
        "nproc": nproc,
        "cpu": model,
        "mem_total_gib": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
        "loadavg_at_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "",
    }


# ----------------------------------------------------------------------------- kernels

def timed(fn: Callable[[], object], reps: int) -> tuple[float, object]:
    """Median seconds of `reps` calls (after one untimed warm-up when reps > 1), and the last result."""
    result = fn() if reps > 1 else None
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def bench_kernels(shapes: list[tuple[int, int]], reps: int, seed_reps_big: int) -> list[dict]:
    import torch

    from marlin_convert.layout import portable

    rows = []
    rng = np.random.default_rng(0)
    for n, k in shapes:
        codes_np = rng.integers(0, 16, (n, k), dtype=np.uint8)
        codes = torch.from_numpy(codes_np)
        qweight = torch.from_numpy(pack_rows(codes_np.T))
        perm_np = rng.permutation(k)
        perm = torch.from_numpy(perm_np.astype(np.int32))
        big = n * k >= 64 << 20
        sreps = seed_reps_big if big else max(1, min(reps, 3))
        nk = n * k

        def row(op: str, t: float, out_bytes: int, base: float | None) -> None:
            rows.append({
                "shape": f"{n}x{k}", "op": op, "ms": t * 1e3, "codes_MBps": nk / t / 1e6,
                "out_MBps": out_bytes / t / 1e6, "speedup": (base / t) if base else None,
            })
            print(f"  {n}x{k:<6} {op:34s} {t * 1e3:9.1f} ms {nk / t / 1e6:8.0f} codes MB/s"
                  + (f"  x{base / t:6.1f}" if base else ""), flush=True)

        print(f"[{n}x{k}] seed pack ({sreps} run{'s' if sreps > 1 else ''}) ...", flush=True)
        t_seed, ref = timed(lambda: seed_pack(codes_np), sreps)
        row("seed pack (numpy, restated)", t_seed, nk // 2, None)
        t, got = timed(lambda: portable.pack_codes(codes), reps)
        assert np.array_equal(got.numpy(), ref), "pack_codes differs from the seed"
        row("pack_codes", t, nk // 2, t_seed)
        t, got = timed(lambda: portable.pack_kpacked_portable(qweight), reps)
        assert np.array_equal(got.numpy(), ref), "pack_kpacked differs from the seed"
        row("pack_kpacked (GPTQ qweight)", t, nk // 2, t_seed)
        ref_perm = seed_pack(np.ascontiguousarray(codes_np[:, perm_np]))
        t, got = timed(lambda: portable.pack_kpacked_portable(qweight, perm), max(1, min(reps, 3)))
        assert np.array_equal(got.numpy(), ref_perm), "pack_kpacked(perm) differs from the seed"
        row("pack_kpacked + act-order perm", t, nk // 2, t_seed)
        del got

        packed = torch.from_numpy(ref)
        t_seed_u, back = timed(lambda: seed_unpack(ref, n, k), sreps)
        assert np.array_equal(back, codes_np), "seed unpack is not the inverse"
        row("seed unpack (numpy, restated)", t_seed_u, nk, None)
        t, got = timed(lambda: portable.unpack_codes(packed, n=n, k=k), reps)
        assert np.array_equal(got.numpy(), codes_np), "unpack_codes differs"
        row("unpack_codes", t, nk, t_seed_u)
        t, got = timed(lambda: portable.unpack_to_kpacked(packed, n=n, k=k), reps)
        assert torch.equal(got, qweight), "unpack_to_kpacked differs"
        row("unpack_to_kpacked", t, nk // 2, t_seed_u)
        packed_perm = torch.from_numpy(ref_perm)
        t, got = timed(lambda: portable.unpack_to_kpacked(packed_perm, n=n, k=k, perm=perm), max(1, min(reps, 3)))
        assert torch.equal(got, qweight), "unpack_to_kpacked(perm) differs"
        row("unpack_to_kpacked + act-order perm", t, nk // 2, t_seed_u)
        del got, back, packed, packed_perm, ref, ref_perm, codes, codes_np, qweight
    return rows


# ----------------------------------------------------------------------------- end to end

LLAMA_70B = {  # (N, K) of each quantized Linear of one decoder block (hidden 8192, intermediate 28672, GQA 8 kv heads)
    "self_attn.q_proj": (8192, 8192), "self_attn.k_proj": (1024, 8192), "self_attn.v_proj": (1024, 8192),
    "self_attn.o_proj": (8192, 8192), "mlp.gate_proj": (28672, 8192), "mlp.up_proj": (28672, 8192),
    "mlp.down_proj": (8192, 28672),
}
SMALL = {  # --quick
    "self_attn.q_proj": (1024, 1024), "self_attn.o_proj": (1024, 1024),
    "mlp.up_proj": (2816, 1024), "mlp.down_proj": (1024, 2816),
}
GROUP = 128


def _layer_bytes(n: int, k: int) -> int:
    g = k // GROUP
    return n * k // 2 + g * n * 2 + g * n // 2 + 4 * k  # qweight, scales fp16, qzeros, g_idx


def make_checkpoint(root: Path, target_bytes: int, shapes: dict[str, tuple[int, int]]) -> dict:
    """A synthetic GPTQ checkpoint (sym, group 128, no act-order), one shard per decoder block."""
    import torch

    from tests._support.checkpoints import ShardedCheckpointWriter, gptq_config

    rng = np.random.default_rng(1)
    per_block = sum(_layer_bytes(n, k) for n, k in shapes.values())
    blocks = max(2, -(-target_bytes // per_block))
    root.mkdir(parents=True)
    writer = ShardedCheckpointWriter(root, gptq_config(GROUP, sym=True, desc_act=False, v2=False,
                                                       hidden_size=shapes["self_attn.q_proj"][1]))
    for b in range(blocks):
        tensors = {}
        for name, (n, k) in shapes.items():
            p = f"model.layers.{b}.{name}"
            g = k // GROUP
            tensors[f"{p}.qweight"] = torch.from_numpy(rng.integers(0, 2**32, (k // 8, n), dtype=np.uint32).view(np.int32))
            tensors[f"{p}.qzeros"] = torch.full((g, n // 8), 0x77777777, dtype=torch.int32)
            tensors[f"{p}.scales"] = torch.from_numpy(rng.uniform(1e-3, 2e-2, (g, n)).astype(np.float16))
            tensors[f"{p}.g_idx"] = torch.from_numpy((np.arange(k) // GROUP).astype(np.int32))
        tensors[f"model.layers.{b}.input_layernorm.weight"] = torch.ones(shapes["self_attn.q_proj"][1], dtype=torch.float16)
        writer.add_shard(tensors)
        del tensors
    writer.close()
    return {"blocks": blocks, "tensor_bytes": writer.total_size, "largest_tensor_bytes": writer.largest,
            "files": len(list(root.iterdir())), "disk_bytes": sum(f.stat().st_size for f in root.iterdir())}


def _child(argv: list[str]) -> None:
    """Runs inside the measured subprocess; prints one JSON line with its wall time and peak RSS."""
    what = argv[0]
    t0 = time.perf_counter()
    info: dict = {}
    if what == "pack":
        import marlin_convert

        report = marlin_convert.pack_checkpoint(argv[1], argv[2], device="cpu")
        info = {"layers_converted": report.layers_converted, "tensors_copied": report.tensors_copied,
                "bytes_in": report.bytes_in, "bytes_out": report.bytes_out, "shards": len(report.shards)}
    wall = time.perf_counter() - t0
    hwm_kib = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # peak RSS of this process image (reset by exec, unlike ru_maxrss)
            hwm_kib = int(line.split()[1])
    kids_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"wall_s": wall, "vmhwm_kib": hwm_kib, "maxrss_children_kib": kids_kib, **info}))


def _run_timed(cmd: list[str], what: str) -> tuple[subprocess.CompletedProcess, float, int | None]:
    """Run `cmd` under `/usr/bin/time -v` when it exists: the finished process, its wall seconds, and the
    peak RSS `time -v` reports (KiB; None without it). Raises RuntimeError naming `what` when it fails."""
    if Path("/usr/bin/time").exists():
        cmd = ["/usr/bin/time", "-v", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    kib = None
    for line in proc.stderr.splitlines():
        if "Maximum resident set size" in line:
            kib = int(line.rsplit(":", 1)[1])
    return proc, wall, kib


def run_code(code: str) -> dict:
    """Peak RSS (`/usr/bin/time -v`, else VmHWM is not available: 0) and wall of `python -c CODE`."""
    _, wall, kib = _run_timed([sys.executable, "-c", code], f"python -c {code!r}")
    return {"cmd": f"python -c {code!r}", "peak_kib": kib or 0, "outer_wall_s": wall}


def run_child(*args: str) -> dict:
    """Run `--_child ARGS` in a fresh interpreter. Peak RSS comes from the child's own VmHWM and, when
    /usr/bin/time exists, from `time -v` (the child is forked from that small process, so its
    ru_maxrss does not inherit this big parent's high-water mark, which ours would after fork+exec)."""
    proc, outer, kib = _run_timed([sys.executable, str(Path(__file__).resolve()), "--_child", *args], f"child {args}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["outer_wall_s"] = outer
    res["time_v_maxrss_kib"] = kib
    res["peak_kib"] = max(res["vmhwm_kib"], res["maxrss_children_kib"], res["time_v_maxrss_kib"] or 0)
    return res


def spot_check(src: Path, out: Path, shapes: dict[str, tuple[int, int]]) -> str:
    """One converted layer of the output against the seed's pack of its source codes."""
    from safetensors import safe_open

    name = "mlp.gate_proj" if "mlp.gate_proj" in shapes else "mlp.up_proj"
    n, k = shapes[name]
    prefix = f"model.layers.0.{name}"
    src_file = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"][f"{prefix}.qweight"]
    with safe_open(str(src / src_file), "np") as f:
        q = f.get_tensor(f"{prefix}.qweight")
    idx = out / "model.safetensors.index.json"
    files = sorted(out.glob("*.safetensors"))
    if idx.exists():
        wm = json.loads(idx.read_text())["weight_map"]
        files = [out / wm[key] for key in wm if key.startswith(prefix + ".")][:1] or files
    for fpath in files:
        with safe_open(str(fpath), "np") as f:
            for key in f.keys():
                if key.startswith(prefix + ".") and tuple(f.get_slice(key).get_shape()) == (k // 16, 2 * n):
                    got = f.get_tensor(key)
                    codes = np.empty((n, k), dtype=np.uint8)
                    words = q.view(np.uint32)
                    for i in range(8):
                        codes[:, i::8] = ((words >> (4 * i)) & 0xF).T
                    ok = np.array_equal(got, seed_pack(codes))
                    return f"{key}: {'identical to the seed pack of its qweight' if ok else 'DIFFERS from the seed pack'}"
    return f"{prefix}: packed weight not found in the output"


def bench_e2e(workdir: Path, gb: float, shapes: dict[str, tuple[int, int]], keep: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="marlin-bench-", dir=str(workdir)))
    src, out, cp_dst = work / "src", work / "out", work / "cp"
    try:
        print(f"[e2e] writing a {gb:g} GB synthetic GPTQ checkpoint under {work} ...", flush=True)
        t0 = time.perf_counter()
        ck = make_checkpoint(src, int(gb * 1e9), shapes)
        print(f"[e2e] written in {time.perf_counter() - t0:.1f} s: {ck}", flush=True)
        base = run_code("import marlin_convert")
        base_torch = run_code("import marlin_convert.pipeline")
        print(f"[e2e] baseline RSS: import marlin_convert {base['peak_kib'] / 1024:.0f} MiB, "
              f"+ pipeline/torch {base_torch['peak_kib'] / 1024:.0f} MiB", flush=True)
        subprocess.run(["sync"], check=False)
        t0 = time.perf_counter()
        subprocess.run(["cp", "-r", str(src), str(cp_dst)], check=True)
        subprocess.run(["sync"], check=False)
        cp_s = time.perf_counter() - t0
        shutil.rmtree(cp_dst)
        print(f"[e2e] cp -r (+ sync): {cp_s:.2f} s", flush=True)
        subprocess.run(["sync"], check=False)
        t0 = time.perf_counter()
        pack = run_child("pack", str(src), str(out))
        subprocess.run(["sync"], check=False)
        pack_sync_s = time.perf_counter() - t0
        print(f"[e2e] pack_checkpoint(device='cpu'): {pack}", flush=True)
        check = spot_check(src, out, shapes)
        print(f"[e2e] spot check: {check}", flush=True)
        peak = pack["peak_kib"] * 1024
        return {
            "checkpoint": ck, "cp_s": cp_s, "pack_wall_s": pack["wall_s"], "pack_outer_s": pack["outer_wall_s"],
            "pack_plus_sync_s": pack_sync_s, "pack": pack, "spot_check": check,
            "baseline_import_bytes": base["peak_kib"] * 1024,
            "baseline_torch_bytes": base_torch["peak_kib"] * 1024, "peak_rss_bytes": peak,
        }
    finally:
        if keep:
            print(f"[e2e] kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- report

def print_report(args: argparse.Namespace, info: dict, rows: list[dict], e2e: dict | None) -> None:
    print("\n## Results (markdown)\n")
    print(f"- date: {datetime.date.today().isoformat()}; command: `python scripts/bench_cpu.py {' '.join(sys.argv[1:])}`")
    print(f"- machine: {info['nproc']} cores (`nproc`), {info['cpu']}, {info['mem_total_gib']} GiB RAM; "
          f"python {info['python']}, numpy {info['numpy']}, torch {info['torch']} ({info['torch_threads']} threads); "
          f"load average at start {info['loadavg_at_start']}")
    if rows:
        print("\n| N x K | op | time (ms) | codes MB/s | out MB/s | speedup vs seed |")
        print("|---|---|---:|---:|---:|---:|")
        for r in rows:
            sp = f"{r['speedup']:.1f}x" if r["speedup"] else "1x (reference)"
            print(f"| {r['shape']} | {r['op']} | {r['ms']:.1f} | {r['codes_MBps']:.0f} | {r['out_MBps']:.0f} | {sp} |")
    if e2e:
        ck = e2e["checkpoint"]
        gb = ck["tensor_bytes"] / 1e9
        largest = ck["largest_tensor_bytes"]
        limit = e2e["baseline_import_bytes"] + 2 * largest
        limit_t = e2e["baseline_torch_bytes"] + 2 * largest
        mib = 2**20
        print(f"\nEnd to end: {ck['blocks']} decoder blocks, {ck['files']} files, {gb:.2f} GB of tensors, "
              f"largest tensor {largest / 1e6:.1f} MB.\n")
        print("| step | wall (s) | GB/s of input |")
        print("|---|---:|---:|")
        print(f"| `cp -r` + `sync` | {e2e['cp_s']:.2f} | {gb / e2e['cp_s']:.2f} |")
        print(f"| `pack_checkpoint(device=\"cpu\")` (in-process wall) | {e2e['pack_wall_s']:.2f} | {gb / e2e['pack_wall_s']:.2f} |")
        print(f"| same, subprocess incl. interpreter start, + `sync` | {e2e['pack_plus_sync_s']:.2f} | {gb / e2e['pack_plus_sync_s']:.2f} |")
        print(f"\n| memory | MiB |\n|---|---:|")
        tv = e2e["pack"].get("time_v_maxrss_kib")
        print(f"| peak RSS of the pack subprocess (max of VmHWM, `time -v`) | {e2e['peak_rss_bytes'] / mib:.0f} |")
        print(f"| ... VmHWM / `/usr/bin/time -v` max RSS | {e2e['pack']['vmhwm_kib'] / 1024:.0f} / "
              f"{'n/a' if tv is None else f'{tv / 1024:.0f}'} |")
        print(f"| baseline `python -c 'import marlin_convert'` | {e2e['baseline_import_bytes'] / mib:.0f} |")
        print(f"| baseline `python -c 'import marlin_convert.pipeline'` (torch loaded) | {e2e['baseline_torch_bytes'] / mib:.0f} |")
        print(f"| 2 x largest tensor | {2 * largest / mib:.0f} |")
        print(f"| limit: import baseline + 2 x largest | {limit / mib:.0f} |")
        print(f"| limit: torch baseline + 2 x largest | {limit_t / mib:.0f} |")
        print(f"\npeak - torch baseline = {(e2e['peak_rss_bytes'] - e2e['baseline_torch_bytes']) / largest:.2f} x largest tensor; "
              f"layers converted {e2e['pack'].get('layers_converted')}; spot check: {e2e['spot_check']}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        _child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--e2e-gb", type=float, default=None, help="size of the e2e checkpoint in GB (default 2, --quick 0.1; 0 skips)")
    ap.add_argument("--reps", type=int, default=5, help="timed runs per kernel (median); the seed at the largest size runs once")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where the e2e data go (deleted after)")
    ap.add_argument("--keep", action="store_true", help="keep the e2e data")
    args = ap.parse_args()
    shapes = [(512, 1024), (2048, 4096)] if args.quick else [(4096, 4096), (28672, 8192)]
    gb = args.e2e_gb if args.e2e_gb is not None else (0.1 if args.quick else 2.0)
    info = machine()
    print(json.dumps(info), flush=True)
    rows = bench_kernels(shapes, args.reps, seed_reps_big=1)
    e2e = bench_e2e(args.workdir, gb, SMALL if args.quick else LLAMA_70B, args.keep) if gb > 0 else None
    print_report(args, info, rows, e2e)


if __name__ == "__main__":
    main()
