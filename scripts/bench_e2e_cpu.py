"""End to end on the CPU, side by side in one run: `cp -r` + `sync` against `pack` + `sync`, `verify SRC OUT`,
`verify OUT` and `unpack` + `sync` of marlin-convert's console script (the "after" side: this checkout's) and
of a baseline console script (`--baseline-exe`, the "before" side, e.g. a venv of an older commit), over layer
shapes and checkpoint sizes; peak RSS of every command, and the per-stage breakdown (`--debug`) of the after side.

Each checkpoint is a synthetic GPTQ one (random qweight words, sym, group 128, trivial g_idx, fp16 scales), one
layer shape throughout, 8 layers a shard, written once per (shape, size) and read from the page cache by every
command. Every command runs as its own process with `MARLIN_CONVERT_DEBUG=1` (both sides: it only adds the
stage table and tracebacks) under `/usr/bin/time -v` (peak RSS); wall times include the interpreter start and,
where named, a `sync` after the command. Each step's time is the minimum over `--reps` runs (before and after
alternate within a rep). Both sides' outputs are compared file by file (`cmp`), the unpacked checkpoints with
the source, and one layer of the after side's output with the seed's pack of its qweight.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
GROUP = 128
PER_SHARD = 8
STEPS = ["pack", "verify SRC OUT", "verify OUT", "unpack"]


def make_checkpoint(root: Path, n: int, k: int, target_bytes: int) -> dict[str, Any]:
    """A GPTQ checkpoint of `n x k` layers (`model.layers.i.mlp.up_proj`), about `target_bytes` of tensors."""
    import torch

    from tests._support.checkpoints import ShardedCheckpointWriter, gptq_config

    g = k // GROUP
    per_layer = n * k // 2 + g * n * 2 + g * n // 2 + 4 * k
    layers = max(2, round(target_bytes / per_layer))
    rng = np.random.default_rng(1)
    writer = ShardedCheckpointWriter(root, gptq_config(GROUP, sym=True, desc_act=False, v2=False, hidden_size=k))
    tensors: dict[str, Any] = {}
    for i in range(layers):
        p = f"model.layers.{i}.mlp.up_proj"
        tensors[f"{p}.qweight"] = torch.from_numpy(rng.integers(0, 2**32, (k // 8, n), dtype=np.uint32).view(np.int32))
        tensors[f"{p}.qzeros"] = torch.full((g, n // 8), 0x77777777, dtype=torch.int32)
        tensors[f"{p}.scales"] = torch.from_numpy(rng.uniform(1e-3, 2e-2, (g, n)).astype(np.float16))
        tensors[f"{p}.g_idx"] = torch.from_numpy((np.arange(k) // GROUP).astype(np.int32))
        if (i + 1) % PER_SHARD == 0 or i == layers - 1:
            writer.add_shard(tensors)
            tensors = {}
    writer.close()
    return {"layers": layers, "tensor_bytes": writer.total_size, "largest_tensor_bytes": writer.largest,
            "files": len(list(root.iterdir()))}


def run(cmd: list[str], *, sync: bool = False, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `cmd` (then `sync` when asked, inside the timing); wall seconds, peak RSS (KiB) and stderr."""
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    if sync:
        subprocess.run(["sync"], check=False)
    stolen = steal_seconds()
    t0 = time.perf_counter()
    proc = subprocess.run([*timer, *cmd], capture_output=True, text=True, env=env)
    if sync:
        subprocess.run(["sync"], check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {"s": wall, "rss_kib": int(rss.group(1)) if rss else 0, "stderr": proc.stderr,
            "steal_s": steal_seconds() - stolen}


def steal_seconds() -> float:
    """CPU seconds the hypervisor has taken from this VM's cores since boot (/proc/stat's `steal`, all cores
    summed; 0 where there is no such file): on the 2-core VM a run can lose a quarter of its CPU to the host,
    which is most of the spread between repeated runs."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def stage_table(stderr: str) -> str:
    """The `--debug` stage table a marlin-convert command printed (empty for a build without one)."""
    start = stderr.find("marlin-convert --debug: time per stage")
    if start < 0:
        return ""
    lines = stderr[start:].splitlines()[1:]
    return "\n".join(line for line in lines if not line.startswith(("\t", "Command being timed")) and
                     not re.match(r"^\s+\S.*: ", line))


def same_tree(a: Path, b: Path) -> bool:
    """Every file of `a` and `b` byte-identical (`cmp`), and the same file names."""
    names_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    names_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    return names_a == names_b and all(subprocess.run(["cmp", "-s", str(a / n), str(b / n)]).returncode == 0 for n in names_a)


def spot_check(src: Path, out: Path, n: int, k: int) -> str:
    """Layer 0's `B` in the output against the seed's pack of its qweight (tests/_support/reference.py)."""
    from safetensors import safe_open

    from tests._support.reference import seed_pack

    prefix = "model.layers.0.mlp.up_proj"

    def tensor(root: Path, name: str) -> np.ndarray:
        for f in sorted(root.glob("*.safetensors")):
            with safe_open(str(f), "np") as st:
                if name in st.keys():
                    return st.get_tensor(name)
        raise KeyError(name)

    words = tensor(src, f"{prefix}.qweight").view(np.uint32)
    codes = np.empty((n, k), dtype=np.uint8)
    for i in range(8):
        codes[:, i::8] = ((words >> (4 * i)) & 0xF).T
    ok = np.array_equal(tensor(out, f"{prefix}.B"), seed_pack(codes))
    return f"{prefix}.B {'identical to' if ok else 'DIFFERS from'} the seed's pack of its qweight"


def bench_config(work: Path, sides: dict[str, Path], n: int, k: int, gb: float, reps: int) -> dict[str, Any]:
    """One (shape, size): every step for every side, `reps` times, alternating sides."""
    root = Path(tempfile.mkdtemp(prefix=f"e2e-{n}x{k}-{gb:g}GB-", dir=str(work)))
    src = root / "src"
    env = {**os.environ, "MARLIN_CONVERT_DEBUG": "1"}
    try:
        t0 = time.perf_counter()
        ck = make_checkpoint(src, n, k, int(gb * 1e9))
        print(f"[e2e] {n}x{k} {gb:g} GB: {ck} written in {time.perf_counter() - t0:.1f} s", flush=True)
        best: dict[str, dict[str, Any]] = {}

        def keep(key: str, res: dict[str, Any]) -> None:
            print(f"[e2e]   {key}: {res['s']:.2f} s, {res['rss_kib'] / 1024:.0f} MiB", flush=True)
            res["rss_kib"] = max(res["rss_kib"], best.get(key, {}).get("rss_kib", 0))
            if key not in best or res["s"] < best[key]["s"]:
                best[key] = res
            else:
                best[key]["rss_kib"] = res["rss_kib"]

        for rep in range(reps):
            cp = root / "cp"
            shutil.rmtree(cp, ignore_errors=True)
            keep("cp", run(["cp", "-r", str(src), str(cp)], sync=True))
            shutil.rmtree(cp)
            for side, exe in (sides.items() if rep % 2 == 0 else reversed(list(sides.items()))):
                out, back = root / f"out-{side}", root / f"back-{side}"
                for d in (out, back):
                    shutil.rmtree(d, ignore_errors=True)
                keep(f"{side} pack", run([str(exe), "pack", str(src), "-o", str(out), "--device", "cpu"], sync=True, env=env))
                keep(f"{side} verify SRC OUT", run([str(exe), "verify", str(src), str(out), "--device", "cpu"], env=env))
                keep(f"{side} verify OUT", run([str(exe), "verify", str(out), "--device", "cpu"], env=env))
                keep(f"{side} unpack", run([str(exe), "unpack", str(out), "-o", str(back)], sync=True, env=env))
        checks = [spot_check(src, root / f"out-{list(sides)[-1]}", n, k)]
        for side in sides:
            checks.append(f"{side}: unpacked == source: {same_tree(src, root / f'back-{side}')}")
        if len(sides) == 2:
            a, b = (root / f"out-{s}" for s in sides)
            checks.append(f"outputs of both sides byte-identical: {same_tree(a, b)}")
        print("[e2e]   " + "; ".join(checks), flush=True)
        return {"n": n, "k": k, "gb": gb, "checkpoint": ck, "best": best, "checks": checks}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def baselines(sides: dict[str, Path]) -> dict[str, Any]:
    """Per side (its own venv: the RSS of the same torch differs by tens of MiB between two venvs, with how
    much of its shared libraries the page cache holds): peak RSS of `python -c 'import torch,
    marlin_convert.pipeline'` (min of 3), and the fixed start, `marlin-convert --help` (min of 3)."""
    out = {}
    for side, exe in sides.items():
        python = str(exe.parent / "python")
        rss = min(run([python, "-c", "import torch, marlin_convert.pipeline"])["rss_kib"] for _ in range(3))
        start = min(run([str(exe), "--help"])["s"] for _ in range(3))
        out[side] = {"torch_rss_kib": rss, "help_s": start}
        print(f"[e2e] {side}: import torch + pipeline {rss / 1024:.0f} MiB; `--help` {start:.2f} s", flush=True)
    return out


def print_tables(results: list[dict[str, Any]], sides: list[str], base: dict[str, Any], breakdown: bool) -> None:
    after = sides[-1]
    before = sides[0] if len(sides) == 2 else None
    torch_mib = base[after]["torch_rss_kib"] / 1024
    for side in sides:
        print(f"\n{side}: peak RSS of `python -c 'import torch, marlin_convert.pipeline'` "
              f"{base[side]['torch_rss_kib'] / 1024:.0f} MiB; `marlin-convert --help` {base[side]['help_s']:.2f} s")
    print("(peak RSS columns: the command's peak minus its own venv's `import torch` peak, in MiB and in largest tensors)\n")
    head = "| shape | GB | layers | step | " + (f"{before} (s) | " if before else "") + f"{after} (s) | " + \
           ("speedup (before / after) | " if before else "") + "ratio (target) | peak RSS over torch, MiB (x largest)" + (" before / after" if before else "") + \
           " | CPU s stolen by the host" + (" before / after" if before else "") + " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    verdicts = []
    for r in results:
        b, ck = r["best"], r["checkpoint"]
        cp = b["cp"]["s"]
        limit = torch_mib + 2 * ck["largest_tensor_bytes"] / 2**20
        label = f"| {r['n']}x{r['k']} | {ck['tensor_bytes'] / 1e9:.2f} | {ck['layers']} |"
        print(f"{label} `cp -r` + `sync` | " + ("| " if before else "") + f"{cp:.2f} | " + ("| " if before else "") +
              f"1.00 | | {b['cp']['steal_s']:.1f} |")
        for step in STEPS:
            a = b[f"{after} {step}"]
            name = {"pack": "`pack` + `sync`", "unpack": "`unpack` + `sync`"}.get(step, f"`{step}`")
            if step in ("pack", "unpack"):
                ratio, target = a["s"] / cp, f"{a['s'] / cp:.2f}x cp (<= 2)"
            elif step == "verify SRC OUT":
                ratio, target = a["s"] / b[f"{after} pack"]["s"], f"{a['s'] / b[f'{after} pack']['s']:.2f}x pack (<= 1.5)"
            else:
                ratio, target = None, f"{a['s'] / cp:.2f}x cp"
            cells = [name]
            if before:
                cells.append(f"{b[f'{before} {step}']['s']:.2f}")
            cells.append(f"{a['s']:.2f}")
            if before:
                cells.append(f"{b[f'{before} {step}']['s'] / a['s']:.2f}x")
            cells.append(target)
            largest = ck["largest_tensor_bytes"] / 2**20

            def over(side: str) -> str:
                extra = b[f"{side} {step}"]["rss_kib"] / 1024 - base[side]["torch_rss_kib"] / 1024
                return f"+{extra:.0f} ({extra / largest:.1f}x)"
            cells.append((f"{over(before)} / " if before else "") + over(after))
            cells.append((f"{b[f'{before} {step}']['steal_s']:.1f} / " if before else "") + f"{a['steal_s']:.1f}")
            print(f"{label} " + " | ".join(cells) + " |")
            if ratio is not None:
                verdicts.append(f"{r['n']}x{r['k']} {ck['tensor_bytes'] / 1e9:.2f} GB {step}: {target} -> "
                                f"{'met' if ratio <= (1.5 if step == 'verify SRC OUT' else 2.0) else 'NOT met'}")
        for s in STEPS:
            extra = b[f"{after} {s}"]["rss_kib"] / 1024 - torch_mib
            verdicts.append(f"{r['n']}x{r['k']} {ck['tensor_bytes'] / 1e9:.2f} GB {s}: peak RSS {extra:+.0f} MiB over "
                            f"`import torch` ({torch_mib:.0f} MiB), limit 2 x largest tensor = {limit - torch_mib:.0f} MiB "
                            f"-> {'met' if extra <= limit - torch_mib else 'NOT met'}")
    print("\nTargets (after side):")
    for v in verdicts:
        print(f"- {v}")
    print("\nChecks: " + " / ".join(f"{r['n']}x{r['k']} {r['gb']:g} GB: " + "; ".join(r["checks"]) for r in results))
    if breakdown:
        for r in results:
            for step in STEPS:
                table = stage_table(r["best"][f"{after} {step}"]["stderr"])
                if table:
                    print(f"\n{after} `{step}`, {r['n']}x{r['k']}, {r['checkpoint']['tensor_bytes'] / 1e9:.2f} GB "
                          f"(stage seconds are summed over threads):\n```\n{table}\n```")


def main(args: Any) -> None:
    after = Path(args.exe).resolve() if args.exe else Path(sys.executable).parent / "marlin-convert"
    sides = {"before": Path(args.baseline_exe).resolve(), "after": after} if args.baseline_exe else {"after": after}
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    sizes = [float(x) for x in args.sizes.split(",")]
    base = baselines(sides)
    results = [bench_config(args.workdir, sides, n, k, gb, args.reps) for n, k in shapes for gb in sizes]
    print_tables(results, list(sides), base, breakdown=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "baselines": base}, indent=1, default=str))
