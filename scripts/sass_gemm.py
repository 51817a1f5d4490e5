#!/usr/bin/env python3
"""Compile the Triton GEMM's kernels for sm_90 on any machine, a GPU or not, and count what their main loop issues
(issue #13; GEMM round 19 in BENCHMARKS.md). Needs torch and Triton (the CPU build of torch will do); uses the
`cuobjdump` that Triton ships.

    PYTHONPATH=. python3 scripts/sass_gemm.py 28672x8192:1:g128+z 28672x8192:1:g128+z:maxnreg=0,balance=3

Each argument is `NxK:M:MODE[:field=value,...]`: a layer of `MODE` (`g128`, `g128+z`, `g-1`, `g32+shift`, ...,
fp16 unless `--bf16`), `pick_config`'s launch shape for `M` rows with the given `KernelConfig` fields replaced (as
`bench_launch_variants.py` replaces them: `balance=0` alone also takes the unbalanced split).
`triton_gemm.plan` builds the launches from CPU tensors (TMA where the shape asks for it, as on an H200), and each
launch is compiled as Triton would compile it for an H200 (pointers and multiples of 16 specialized as 16-aligned).
`--tree PATH` compiles another checkout's kernels and rule (e.g. `git archive` of the commit before a change).
`--const N,stride_xm,...` compiles those integer arguments in as their values (a kernel specialized per layer).
Per launch: registers and spilled bytes a thread (ptxas), shared memory, and for the steps' loop (the innermost
backward branch around the `HGMMA`s) its instruction count and mix. `--dump DIR` keeps TTGIR, PTX and SASS.
"""
from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

SCRIPTS = Path(__file__).resolve().parent
triton_gemm: Any = None  # marlin_convert.runtime.triton_gemm of --tree, and the rest, set by main()
Slot: Any = None
Mode: Any = None
parse_fields: Any = None
with_fields: Any = None
TARGET = GPUTarget("cuda", 90, 32)
SMS = 132
"""The H200's multiprocessors, for `pick_config`."""
OPTIONS = ("num_warps", "num_stages", "maxnreg")
SHOWN = ("HGMMA", "LDG", "LDS", "STS", "LDL", "STL", "BAR", "LOP3", "HFMA2", "HADD2", "FFMA", "FMUL", "FADD", "PRMT",
         "IMAD", "SHFL")
_TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.int32: "i32",
          torch.int64: "i64", torch.uint8: "u8"}


def layer_tensors(n: int, k: int, mode: Any, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Marlin tensors of the right dtypes and shapes (values do not matter to the compiler)."""
    groups = 1 if mode.group_size == -1 else k // mode.group_size
    t = {"B": torch.zeros(k // 16, 2 * n, dtype=torch.int32), "s": torch.ones(groups, n, dtype=dtype)}
    if mode.zero_point == "int":
        t["z"] = torch.zeros(groups, n // 8, dtype=torch.int32)
    elif mode.zero_point == "float":
        t["shift"] = torch.zeros(groups, n, dtype=dtype)
    if mode.act_order:
        t["perm"] = torch.arange(k, dtype=torch.int32)
    return t


def launches(spec: str, dtype: torch.dtype) -> tuple[Any, list[Any]]:
    """The config and the launches `plan` makes for one `NxK:M:MODE[:fields]` argument."""
    shape, m, mode_text, *rest = spec.split(":")
    n, k = (int(v) for v in shape.split("x"))
    mode = Mode.parse(mode_text)
    gs = k if mode.group_size == -1 else mode.group_size
    zmode = 1 if mode.zero_point == "int" else (2 if mode.zero_point == "float" else 0)
    cfg = triton_gemm.pick_config(int(m), n, k, gs, SMS, zmode)
    if rest:
        cfg = with_fields(cfg, parse_fields(rest[0]), int(m), n, k, SMS, triton_gemm)
    t = layer_tensors(n, k, mode, dtype)
    triton_gemm._tma_ok = lambda B: True  # an H200's answer for a 16-byte aligned B
    p = triton_gemm.plan(int(m), dtype, torch.device("cpu"), t["B"], t["s"], group_size=gs, z=t.get("z"),
                         shift=t.get("shift"), perm=t.get("perm"), config=cfg)
    return cfg, list(p.launches)


def compile_launch(launch: Any, dtype: torch.dtype, constants: frozenset[str] = frozenset()) -> Any:
    """`triton.compile` of one launch for sm_90, with Triton's runtime specializations of its arguments; the integer
    arguments named in `constants` compiled in as their values (`--const`)."""
    fn = launch.fn
    slots = {"x": dtype, "xk": dtype, "out": dtype, "ws": torch.float32, "sums": torch.float32, "cnt": torch.int32}
    signature: dict[str, str] = {}
    attrs: dict[tuple[int, ...], list[list[Any]]] = {}
    skip = set(getattr(fn, "do_not_specialize", ()) or ())
    for i, (param, arg) in enumerate(zip(fn.arg_names, launch.args)):
        if isinstance(arg, Slot):
            signature[param] = "*" + _TYPES[slots[arg.name]]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(arg, torch.Tensor):
            signature[param] = "*" + _TYPES[arg.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif hasattr(arg, "block_shape"):  # a TMA tensor descriptor
            signature[param] = f"tensordesc<{_TYPES[arg.base.dtype]}[{','.join(map(str, arg.block_shape))}]>"
        elif param in constants:
            signature[param] = "constexpr"
        else:
            signature[param] = "i32"
            if arg % 16 == 0 and param not in skip and i not in skip:
                attrs[(i,)] = [["tt.divisibility", 16]]
    consts = {name: value for name, value in launch.consts.items() if name not in OPTIONS}
    consts.update({param: arg for param, arg in zip(fn.arg_names, launch.args) if param in constants})
    for name in fn.arg_names[len(launch.args):]:
        signature[name] = "constexpr"
        consts.setdefault(name, next(p.default for p in fn.params if p.name == name))
    options = {name: launch.consts[name] for name in OPTIONS if name in launch.consts}
    return triton.compile(ASTSource(fn, signature, constexprs=consts, attrs=attrs), target=TARGET, options=options)


def cuobjdump(cubin: bytes, *flags: str) -> str:
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([str(tool), *flags, f.name], capture_output=True, text=True, check=True).stdout


def main_loop(sass: str, marker: str = "HGMMA") -> list[str]:
    """The instructions of the innermost loop (backward branch) that holds `marker` instructions (`HGMMA`: the
    steps' loop; a balanced grid's loop over column tiles holds it), or [] if none."""
    code = [(int(a, 16), text) for a, text in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    best: list[str] = []
    for addr, text in code:
        target = re.search(r"BRA\b.*?0x([0-9a-f]+)", text)
        if target and int(target.group(1), 16) < addr:
            body = [t for a, t in code if int(target.group(1), 16) <= a <= addr]
            if any(marker in t for t in body) and (not best or len(body) < len(best)):
                best = body
    return best


def opcode(text: str) -> str:
    return re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--dump", type=Path)
    ap.add_argument("--const", default="", help="integer arguments compiled in as constants, e.g. N,stride_xm "
                                                "(what a kernel specialized per layer would gain)")
    ap.add_argument("--tree", type=Path, default=SCRIPTS.parent, help="the checkout whose kernels are compiled")
    args = ap.parse_args()
    global triton_gemm, Slot, Mode, parse_fields, with_fields
    sys.path[:0] = [str(args.tree.resolve()), str(SCRIPTS)]
    from marlin_convert.runtime import triton_gemm
    from marlin_convert.runtime.triton_launch import Slot

    from bench_gemm import Mode
    from bench_launch_variants import parse_fields, with_fields

    print(f"marlin_convert from {Path(triton_gemm.__file__).parents[2]}")
    dtype = torch.bfloat16 if args.bf16 else torch.float16
    for spec in args.specs:
        cfg, plan_launches = launches(spec, dtype)
        print(f"{spec}: {cfg}")
        for j, launch in enumerate(plan_launches):
            kernel = compile_launch(launch, dtype, frozenset(filter(None, args.const.split(","))))
            usage = cuobjdump(kernel.asm["cubin"], "-res-usage")
            regs = re.search(r"REG:(\d+)", usage)
            stack = re.search(r"STACK:(\d+)", usage)
            sass = cuobjdump(kernel.asm["cubin"], "-sass")
            loop = main_loop(sass)
            mix = collections.Counter(opcode(t) for t in loop)
            print(f"  {launch.fn.__name__}: {regs.group(1) if regs else '?'} registers, {stack.group(1) if stack else '?'}"
                  f" bytes of stack (spills), {kernel.metadata.shared} bytes of shared memory"
                  + (f"; main loop {len(loop)} instructions: " + ", ".join(f"{o} {mix[o]}" for o in SHOWN if mix[o])
                     if loop else ""))
            if args.dump:
                args.dump.mkdir(parents=True, exist_ok=True)
                stem = args.dump / f"{re.sub(r'[^A-Za-z0-9]+', '_', spec)}_{j}_{launch.fn.__name__}"
                for ext, text in (("ttgir", kernel.asm["ttgir"]), ("ptx", kernel.asm["ptx"]), ("sass", sass)):
                    stem.with_suffix("." + ext).write_text(text)


if __name__ == "__main__":
    main()
