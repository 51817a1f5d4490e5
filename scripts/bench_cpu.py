#!/usr/bin/env python3
"""CPU throughput of the Marlin layout kernels, side by side with the seed's numpy pack, then end to end:
`cp -r` + `sync` against `pack` + `sync`, `verify SRC OUT`, `verify OUT` and `unpack` + `sync` of this checkout's
console script and, side by side in the same run, of a baseline one, over layer shapes and checkpoint sizes,
with peak RSS and the per-stage breakdown (`--debug`); see scripts/bench_e2e_cpu.py.

Usage:
    python scripts/bench_cpu.py                 # kernels at 4096x4096 and 28672x8192, then e2e 0.25/1/2 GB of each
    python scripts/bench_cpu.py --quick         # small sizes: a smoke run of seconds
    python scripts/bench_cpu.py --baseline-exe /tmp/base/.venv/bin/marlin-convert   # before/after side by side
    python scripts/bench_cpu.py --skip-kernels --sizes 2 --e2e-reps 2
    python scripts/bench_cpu.py --sizes 0       # kernels only

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
sys.path.insert(0, str(REPO / "scripts"))

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


# ----------------------------------------------------------------------------- report

def print_report(args: argparse.Namespace, info: dict, rows: list[dict]) -> None:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run of seconds)")
    ap.add_argument("--reps", type=int, default=5, help="timed runs per kernel (median); the seed at the largest size runs once")
    ap.add_argument("--skip-kernels", action="store_true", help="only the end-to-end table")
    ap.add_argument("--shapes", default=None, help="e2e layer shapes NxK, comma-separated (default 4096x4096,28672x8192)")
    ap.add_argument("--sizes", default=None, help="e2e checkpoint sizes in GB, comma-separated (default 0.25,1,2; 0 skips)")
    ap.add_argument("--e2e-reps", type=int, default=1, help="runs of every e2e step (the minimum is reported)")
    ap.add_argument("--exe", default=None, help="the after side's console script (default: marlin-convert beside this python)")
    ap.add_argument("--baseline-exe", default=None, help="a second console script timed side by side (the before side)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where the e2e data go (deleted after)")
    ap.add_argument("--json", default=None, help="also write the e2e results (with stage tables) to this file")
    args = ap.parse_args()
    shapes = [(512, 1024), (2048, 4096)] if args.quick else [(4096, 4096), (28672, 8192)]
    args.shapes = args.shapes or ("1024x1024,2048x4096" if args.quick else "4096x4096,28672x8192")
    args.sizes = args.sizes or ("0.03" if args.quick else "0.25,1,2")
    info = machine()
    print(json.dumps(info), flush=True)
    rows = [] if args.skip_kernels else bench_kernels(shapes, args.reps, seed_reps_big=1)
    print_report(args, info, rows)
    if args.sizes != "0":
        from bench_e2e_cpu import main as e2e_main

        args.reps = args.e2e_reps
        print("\n### End to end (`cp -r` + `sync` and every command, side by side)\n", flush=True)
        e2e_main(args)


if __name__ == "__main__":
    main()
