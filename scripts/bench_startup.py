#!/usr/bin/env python3
"""Start-up time of the `marlin-convert` console script: two installs side by side (e.g. the unchanged main
and this branch), each command run `--reps` times, the two installs taking turns, in the same run.

Usage:
    python scripts/bench_startup.py --before /tmp/base/.venv/bin/marlin-convert --after .venv/bin/marlin-convert
    python scripts/bench_startup.py --after .venv/bin/marlin-convert --reps 3      # one side only

A side may be a wrapper that runs `python -P -m marlin_convert` with `PYTHONPATH` set to a tree: without `-P`,
`-m` puts the current folder (this repository) first on `sys.path`, and the wrapper runs this checkout instead.

Commands timed: `--help`; `inspect` (text and --json) of a producer fixture, of a synthetic 256-layer GPTQ
checkpoint (1,024 tensors, 8 shards) and of a synthetic 1,024-layer one (4,096 tensors, 32 shards), where
header parsing and planning are all the work; `pack`, `verify SRC OUT`, `verify OUT` and `unpack` of a tiny
producer fixture (GPTQModel, 1.6 MB), where the fixed start is all the time. For reference, the interpreter
of `--after` alone, with `import numpy` and with `import torch`.

Units: wall time of the whole process in ms, as `median (min)` of the reps; `ratio` = before / after medians.
Outputs are written under a temporary folder and removed before each timed run (not timed).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PRODUCERS = REPO / "tests" / "fixtures" / "producers"


def make_gptq(root: Path, layers: int, shards: int, *, n: int = 128, k: int = 256, group_size: int = 128) -> Path:
    """A GPTQ checkpoint (v1 symmetric zeros, trivial g_idx, random words; seeded) of `layers` layers of
    `[n, k]`, four tensors a layer, spread over `shards` files with an index."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    groups = k // group_size
    names = [f"model.layers.{i // 7}.mlp.proj{i % 7}" for i in range(layers)]
    weight_map: dict[str, str] = {}
    per_shard = -(-layers // shards)
    for s in range(shards):
        shard = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {}
        for prefix in names[s * per_shard : (s + 1) * per_shard]:
            tensors[f"{prefix}.qweight"] = rng.integers(-2**31, 2**31, size=(k // 8, n), dtype=np.int64).astype(np.int32)
            tensors[f"{prefix}.qzeros"] = np.full((groups, n // 8), 0x77777777, dtype=np.int32)
            tensors[f"{prefix}.scales"] = rng.uniform(1e-3, 2e-2, size=(groups, n)).astype(np.float16)
            tensors[f"{prefix}.g_idx"] = (np.arange(k) // group_size).astype(np.int32)
        save_file(tensors, str(root / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard))
    total = sum((root / f).stat().st_size for f in set(weight_map.values()))
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": {
        "quant_method": "gptq", "bits": 4, "group_size": group_size, "sym": True, "desc_act": False, "checkpoint_format": "gptq"}}))
    return root


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stderr.decode()[-2000:]}")
    return took


def ms(times: list[float]) -> str:
    return f"{1000 * statistics.median(times):.0f} ({1000 * min(times):.0f})"


def machine() -> str:
    model = platform.processor() or "unknown"
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--after", required=True, help="the marlin-convert console script under test")
    ap.add_argument("--before", help="a baseline marlin-convert console script (e.g. of the unchanged main)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--python", help="the interpreter of the reference rows (default: `python` beside --after)")
    args = ap.parse_args()
    sides = {"before": args.before, "after": args.after} if args.before else {"after": args.after}
    python = args.python or str(Path(args.after).parent / "python")
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        syn256 = make_gptq(work / "syn256", 256, 8)
        syn1024 = make_gptq(work / "syn1024", 1024, 32)
        print(f"# synthetic checkpoints written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        tiny = PRODUCERS / "gptqmodel_sym"
        run([args.after, "pack", str(tiny), "-o", str(work / "packed")])
        cases: list[tuple[str, list[str], Path | None]] = [
            ("`--help`", ["--help"], None),
            ("`inspect` gptqmodel_actorder", ["inspect", str(PRODUCERS / "gptqmodel_actorder")], None),
            ("`inspect --json` gptqmodel_actorder", ["inspect", "--json", str(PRODUCERS / "gptqmodel_actorder")], None),
            ("`inspect` 256 layers, 8 shards", ["inspect", str(syn256)], None),
            ("`inspect --json` 256 layers, 8 shards", ["inspect", "--json", str(syn256)], None),
            ("`inspect` 1,024 layers, 32 shards", ["inspect", str(syn1024)], None),
            ("`inspect` of a pack output", ["inspect", str(work / "packed")], None),
            ("`pack` gptqmodel_sym", ["pack", str(tiny), "-o", str(work / "out")], work / "out"),
            ("`verify SRC OUT` gptqmodel_sym", ["verify", str(tiny), str(work / "packed")], None),
            ("`verify OUT` gptqmodel_sym", ["verify", str(work / "packed")], None),
            ("`unpack` gptqmodel_sym", ["unpack", str(work / "packed"), "-o", str(work / "back")], work / "back"),
        ]
        rows = []
        for label, argv, output in cases:
            times: dict[str, list[float]] = {side: [] for side in sides}
            for _ in range(args.reps):
                for side, exe in sides.items():
                    if output is not None:
                        shutil.rmtree(output, ignore_errors=True)
                    times[side].append(run([exe, *argv]))
            rows.append((label, times))
            print(f"# {label}: " + ", ".join(f"{s} {ms(t)}" for s, t in times.items()), file=sys.stderr)
        reference = []
        for label, code in (("python -c pass", "pass"), ("python -c 'import numpy'", "import numpy"),
                            ("python -c 'import torch'", "import torch"),
                            ("`import torch`, leaving without teardown as the commands do", "import os, torch; os._exit(0)"),
                            ("`import torch`, collector held off, no teardown", "import gc, os; gc.disable(); import torch; os._exit(0)")):
            reference.append((label, [run([python, "-c", code]) for _ in range(args.reps)]))
    print(f"\n{datetime.date.today().isoformat()}, {machine()}, {args.reps} runs each, sides taking turns; "
          f"`python scripts/bench_startup.py {' '.join(sys.argv[1:])}`\n")
    head = " | ".join(f"{s} ms, median (min)" for s in sides)
    print(f"| command | {head} |" + (" ratio |" if len(sides) == 2 else ""))
    print("|---|" + "---:|" * (len(sides) + (len(sides) == 2)))
    for label, times in rows:
        cells = " | ".join(ms(times[s]) for s in sides)
        ratio = f" {statistics.median(times['before']) / statistics.median(times['after']):.1f}× |" if len(sides) == 2 else ""
        print(f"| {label} | {cells} |{ratio}")
    for label, times in reference:
        print(f"| {label} (reference) | " + " | ".join([ms(times)] * len(sides)) + " |" + (" |" if len(sides) == 2 else ""))


if __name__ == "__main__":
    main()
