"""Benchmarks, side by side with their baselines in one run (figures go in BENCHMARKS.md).

    python scripts/bench.py cpu [options of scripts/bench_cpu.py]   # this machine: CPU pack vs the seed, e2e vs cp -r
    python scripts/bench.py gpu [options of scripts/bench_gpu.py]   # a CUDA machine: Triton vs vLLM repack, e2e vs cp -r
    python scripts/bench.py                                         # cpu, then gpu when CUDA is available
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(part: str, argv: list[str]) -> None:
    sys.argv = [str(HERE / f"bench_{part}.py"), *argv]
    runpy.run_path(str(HERE / f"bench_{part}.py"), run_name="__main__")


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] in ("cpu", "gpu"):
        _run(args[0], args[1:])
        return
    _run("cpu", args)
    import torch

    if torch.cuda.is_available():
        _run("gpu", [])


if __name__ == "__main__":
    main()
