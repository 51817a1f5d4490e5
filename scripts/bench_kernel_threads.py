#!/usr/bin/env python3
"""The numpy k-packed layout kernels (GPTQ words <-> Marlin tiles) on one thread and on two at once, for a few
chunk sizes side by side in one run (`numpy_kernels._KPACKED_CHUNK_BYTES`): every numpy call of a chunk gives
the GIL up and takes it back, so small chunks keep two threads from converting faster than one.

Usage:
    python scripts/bench_kernel_threads.py                     # 4096x4096, 28672x8192, 8192x28672
    python scripts/bench_kernel_threads.py --shapes 1024x1024 --chunks 131072,1048576

Units: GB/s = GPTQ word bytes (N*K/2) converted per second, all threads together; best of `--reps` runs, each
run converting `--bytes` per thread. Every result is checked byte for byte against the one-thread result.
"""
from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
import sys

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from marlin_convert.layout import numpy_kernels as nk  # noqa: E402


def _run(threads: int, work: callable, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        t0 = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="4096x4096,28672x8192,8192x28672", help="N x K, comma-separated")
    ap.add_argument("--chunks", default="131072,1048576", help="_KPACKED_CHUNK_BYTES values, comma-separated")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bytes", type=float, default=3e8, help="word bytes converted per thread and run")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # as the commands run: one torch thread per layer worker
    rng = np.random.default_rng(0)
    print("| N x K | chunk (KiB) | tile rows a chunk | pack 1 thread | pack 2 threads | unpack 1 thread | unpack 2 threads |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for shape in args.shapes.split(","):
        n, k = (int(x) for x in shape.split("x"))
        words = rng.integers(0, 2**32, (k // 8, n), dtype=np.uint32).view(np.int32)
        kt, calls = k // 16, max(1, int(args.bytes // words.nbytes))
        tiles = [np.empty((kt, 2 * n), dtype=np.int32) for _ in range(2)]
        back = [np.empty_like(words) for _ in range(2)]

        def pack(i: int) -> None:
            for _ in range(calls):
                nk._move_kpacked(nk._tile_view(tiles[i], kt, n), words, None, to_marlin=True)

        def unpack(i: int) -> None:
            for _ in range(calls):
                nk._move_kpacked(nk._tile_view(tiles[i], kt, n), back[i], None, to_marlin=False)

        pack(0), pack(1), unpack(0), unpack(1)  # touch every array once (fresh pages are dear on a VM)
        reference = tiles[0].copy()
        for chunk in (int(c) for c in args.chunks.split(",")):
            nk._KPACKED_CHUNK_BYTES = chunk
            rates = []
            for work in (pack, unpack):
                for threads in (1, 2):
                    seconds = _run(threads, work, args.reps)
                    rates.append(threads * calls * words.nbytes / seconds / 1e9)
            for i in range(2):
                if not (np.array_equal(tiles[i], reference) and np.array_equal(back[i], words)):
                    raise SystemExit(f"{shape} chunk {chunk}: results differ")
            print(f"| {n}x{k} | {chunk >> 10} | {nk._tile_rows_per_chunk(n)} | " +
                  " | ".join(f"{r:.2f} GB/s" for r in rates) + " |")


if __name__ == "__main__":
    main()
