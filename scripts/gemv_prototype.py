#!/usr/bin/env python3
"""A one-row Marlin GEMV on the CUDA cores, the prototype of the runtime's (issue #13: ≥ 3× dense fp16 at one
row; `--half 3 --chain 4` is the served kernel's arithmetic, the other options the variants measured beside it).

Round 12 found the served one-row kernel bound by its loop (wait, decode, `wgmma`) at 16 warps a multiprocessor,
not by the loads, which reach dense fp16's 4.1 TB/s only with about twice the programs resident. A matrix-vector
product needs no tensor core: each weight is decoded (`_int8`, the served kernel's exact `code - 8`), widened to
float32 and multiplied by its x in one fused multiply-add. The words are read as they lie, `[t, nb, c, q, w]` a
tile row (weight `4a + 2h + b` of word (nb, c, q, w) is row n = 64 nb + 16 w + 8 b + c, column k = 16 t + 8 h +
2 q + a: `_swap_tile`'s order), so x is needed as `[t, q, h, a]`, loaded once a step; the sums over a step's
tile rows are scaled by the step's group (group 128: one group a step) and the sums over q are taken once, at
the end (48-128 registers a thread by shape: `sass` counts them). Group 128 or one group, symmetric or Marlin zero points, fp16 or bf16, one row. `--half 1` (fp16): the products
and their pair sums in fp16 inside the decode's PTX (`_half_dot_asm`), fewer instructions a weight, each product
rounded once to fp16; `--half 2`: a word column's four products summed in fp16 too, widened once; `--half 3
--chain 4`: the runtime's GEMV (`runtime/_triton_gemv_kernel.py`, GEMM round 22), 16 products a chain. `--stream
1` times the loads alone; `--ahead` 0-3 steps of words in registers; `--bt` tile rows a step.

    PYTHONPATH=. python3 scripts/gemv_prototype.py check 256x1024 512x2048:g-1+z --split 2      # CPU, interpreter
    PYTHONPATH=. python3 scripts/gemv_prototype.py sass 28672x8192 --nb 2 --warps 4           # CPU, sm_90 SASS
    PYTHONPATH=. python3 scripts/gemv_prototype.py bench 28672x8192 8192x28672 --split 1,2,4 --nb 1,2 --half 0,1
    PYTHONPATH=. python3 scripts/gemv_prototype.py bench 256x1024 --half 0,1 --dry-run      # CPU: the bench untimed
    PYTHONPATH=. python3 scripts/gemv_prototype.py bench 28672x8192 --nb 2 --split 4 --ahead 1 --half 3 --chain 4

`check` runs the kernel in Triton's interpreter with its inline PTX emulated (`tests/_support/ptx_emulation.py`; a side venv
with Triton 3.6 and numpy < 2.3, as `interpret_gemm.py`) against `x @ W.T` in float64 from the source record, and
exits non-zero past the tolerance. `profile` (a CUDA GPU) runs the served plan and each GEMV shape once in a CUDA
profiler range, for `ncu --profile-from-start off`. `sass` compiles for sm_90 (`sass_gemm.py`'s helpers) and counts the steps'
loop. `bench` (a CUDA GPU) times, CUDA graphs, four copies of the weights in turn: the served plan
(`triton_gemm.plan`), each GEMV shape (the split's partials summed by `splitk_reduce_kernel`), and dense
`F.linear` of the same dtype; JSON lines, then a table.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
if len(sys.argv) > 1 and (sys.argv[1] == "check" or "--dry-run" in sys.argv):
    os.environ["TRITON_INTERPRET"] = "1"  # before Triton is imported
sys.path[:0] = [str(SCRIPTS.parent), str(SCRIPTS)]

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from marlin_convert.runtime._triton_gemv_kernel import WEIGHT_SCALE, chain_dot_asm  # noqa: E402
from marlin_convert.runtime._triton_gemm_kernels import (  # noqa: E402
    _dequant_asm, _grouped_places, _int8, _single_places, _zero_point_cols, _zero_terms, splitk_reduce_kernel)


def _half_dot_asm(lanes_in_f16: bool) -> str:
    """PTX for one word and its x (fp16, symmetric): `$0`, `$1` the float32 sums, b = 0 and 1, of the word's
    four weights (a, h = 0, 1) times x, each product and the sum of a pair over h rounded to fp16 (and, with
    `lanes_in_f16`, the sum over a too, then widened once); `$2` the word, `$3` / `$4` the x pairs (a = 0, 1 as
    the low and high halves) of h = 0 / 1. The decode is the served kernel's (`_dequant_asm(True, 0,
    scaled=False)`: exact `code - 8` pairs), kept in registers `v{h}{b}`."""
    decode = _dequant_asm(True, 0, scaled=False).replace("$8", "$2")
    decode = re.sub(r"mov\.b32 \{\$(\d+), \$\d+\}, v;", lambda m: f"mov.b32 v{int(m.group(1)) // 2}{int(m.group(1)) % 2}, v;",
                    decode)
    head, body = decode.rstrip().rstrip("}").split("\n", 1)  # "{", then the decode
    lines = [head, ".reg .b32 v00, v01, v10, v11, d;", ".reg .b16 lo, hi, e;", ".reg .f32 f0, f1;", body]
    for b in range(2):
        lines += [f"mul.f16x2 d, v0{b}, $3;", f"fma.rn.f16x2 d, v1{b}, $4, d;", "mov.b32 {lo, hi}, d;"]
        if lanes_in_f16:
            lines += ["add.f16 e, lo, hi;", f"cvt.f32.f16 ${b}, e;"]
        else:
            lines += ["cvt.f32.f16 f0, lo;", "cvt.f32.f16 f1, hi;", f"add.f32 ${b}, f0, f1;"]
    return "\n".join(lines + ["}"])


CHAIN_DOT1, CHAIN_DOT2, CHAIN_DOT4 = (tl.constexpr(chain_dot_asm(n)) for n in (1, 2, 4))
HALF3_BACK = tl.constexpr(float(WEIGHT_SCALE))
HALF_DOT = tl.constexpr(_half_dot_asm(False))
HALF_DOT_F16 = tl.constexpr(_half_dot_asm(True))


@triton.jit
def _scales(s_ptr, N, g, n, SINGLE: tl.constexpr):
    """The float32 scales of rows `n` in group `g`."""
    if SINGLE:
        return tl.load(s_ptr + _single_places(n)).to(tl.float32)
    else:
        spn, _, _ = _grouped_places(n)
        return tl.load(s_ptr + g * N + spn).to(tl.float32)


@triton.jit
def _lanes(v, BT: tl.constexpr, NB: tl.constexpr, CHAIN: tl.constexpr):
    """`v` `[BT, NB, 8, 4, 4]` as CHAIN tensors `[BT / CHAIN, NB, 8, 4, 4]`, tile rows t = (BT / CHAIN) i + j
    in the i-th."""
    v = tl.permute(tl.reshape(v, (CHAIN, BT // CHAIN, NB, 8, 4, 4)), (1, 2, 3, 4, 5, 0))
    if CHAIN == 2:
        a, b = tl.split(v)
        return a, b
    else:
        v0, v1 = tl.split(tl.reshape(v, (BT // CHAIN, NB, 8, 4, 4, 2, 2)))  # i = 2 i1 + i0: i0
        a, c = tl.split(v0)
        b, d = tl.split(v1)
        return a, b, c, d


@triton.jit
def _word_sums(w8, B: tl.constexpr, x00, x01, x10, x11):
    """float32 sum of the four weights of column b = `B` of each word (a, h = 0, 1) times their x: `x{a}{h}`."""
    r = w8[B].to(tl.float32) * x00
    r = tl.fma(w8[4 + B].to(tl.float32), x10, r)
    r = tl.fma(w8[2 + B].to(tl.float32), x01, r)
    return tl.fma(w8[6 + B].to(tl.float32), x11, r)


@triton.jit(do_not_specialize=["steps_per_split", "g_shift"])
def gemv_kernel(x_ptr, xw_ptr, b_ptr, s_ptr, z_ptr, out_ptr, ws_ptr, N, steps_per_split, g_shift,
                SINGLE: tl.constexpr, IS_FP16: tl.constexpr, BT: tl.constexpr, NB: tl.constexpr,
                SPLIT: tl.constexpr, AHEAD: tl.constexpr, HALF: tl.constexpr, ZMODE: tl.constexpr,
                CHAIN: tl.constexpr, STREAM: tl.constexpr):
    """`out[n] = sum_k x[k] W[n, k]` for one row of x, a program a (column tile of 64 NB rows n, split of K);
    with SPLIT > 1 the float32 partials go to `ws[split, n]`. The accumulators are shaped like a step's words
    (one a column b), so a weight costs its decode, a widening and one fused multiply-add, and a word column
    one more a step for its group's scale; the sums over tile rows and q are taken once, at the end. AHEAD: the
    words of the next AHEAD steps are loaded before this step's are used (AHEAD more sets of registers). HALF (fp16): a word's
    products and pair sums in fp16 (`_half_dot_asm`; 2: its four-term sums too), x taken at 1/8 (exact) so that
    they cannot overflow, the result times 8; 3: the runtime's decode to `(code - 8) / 64` and x's fp16
    pairs read as int32 (`chain_dot_asm`), CHAIN tile rows' products in one fp16 chain. ZMODE 1 (not HALF): Marlin zero points, decoded as the served
    kernel does (`_int8`'s exact `code - zero`, its terms from `_zero_terms`). STREAM: the same loads
    (words and x's int32 pairs) with the arithmetic replaced by one float32 add a word, for the loads' bound."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    jj = tl.arange(0, 128 * NB)
    off = tl.arange(0, BT)[:, None] * (2 * N) + (pid_n * NB * 128 + jj)[None, :]
    # x of a step as [t, q, h, a]: column 16 t + 8 h + 2 q + a
    xoff = (16 * tl.arange(0, BT)[:, None, None, None] + 2 * tl.arange(0, 4)[None, :, None, None]
            + 8 * tl.arange(0, 2)[None, None, :, None] + tl.arange(0, 2)[None, None, None, :])
    # HALF 3: x's pair (a = 0, 1) of (t, q, h) is its int32 8 t + 4 h + q
    xwoff = (8 * tl.arange(0, BT)[:, None, None] + tl.arange(0, 4)[None, :, None] + 4 * tl.arange(0, 2)[None, None, :])
    # the rows n of (nb, c, w) for b = 0 (b = 1: + 8)
    n0 = (64 * (pid_n * NB + tl.arange(0, NB)[:, None, None]) + 16 * tl.arange(0, 4)[None, None, :]
          + tl.arange(0, 8)[None, :, None])
    # zero points (ZMODE 1): word columns (nb, c, w) in `_swap_tile`'s order
    col = tl.arange(0, 32 * NB)
    zw, zsh0, zsh1 = _zero_point_cols(pid_n * NB + col // 32, (col // 4) % 8, col % 4)
    zm = (pid_n * NB + col // 32 < N // 64)[None, :]
    ACC: tl.constexpr = BT // CHAIN
    acc0 = tl.zeros((ACC, NB, 8, 4, 4), dtype=tl.float32)  # [t, nb, c, q, w], b = 0
    acc1 = tl.zeros((ACC, NB, 8, 4, 4), dtype=tl.float32)
    t_first = pid_k * steps_per_split * BT
    last = steps_per_split - 1
    if AHEAD >= 1:
        ahead = tl.load(b_ptr + t_first.to(tl.int64) * (2 * N) + off)
    if AHEAD >= 2:
        ahead2 = tl.load(b_ptr + (t_first + BT * tl.minimum(1, last)).to(tl.int64) * (2 * N) + off)
    if AHEAD >= 3:
        ahead3 = tl.load(b_ptr + (t_first + BT * tl.minimum(2, last)).to(tl.int64) * (2 * N) + off)
    for step in range(0, steps_per_split):
        t0 = t_first + step * BT
        if AHEAD:  # the words AHEAD steps on (past the last step: the last again)
            here = ahead
            t_next = (t_first + BT * tl.minimum(step + AHEAD, last)).to(tl.int64)
            if AHEAD == 1:
                ahead = tl.load(b_ptr + t_next * (2 * N) + off)
            elif AHEAD == 2:
                ahead = ahead2
                ahead2 = tl.load(b_ptr + t_next * (2 * N) + off)
            else:
                ahead = ahead2
                ahead2 = ahead3
                ahead3 = tl.load(b_ptr + t_next * (2 * N) + off)
        else:
            here = tl.load(b_ptr + t0.to(tl.int64) * (2 * N) + off)
        words = tl.reshape(here, (BT, NB, 8, 4, 4))
        if STREAM:  # the loads alone: each word added as a float32 bit pattern
            xw = tl.load(xw_ptr + 8 * t0 + xwoff)
            p0 = words.to(tl.float32, bitcast=True) + tl.reshape(tl.sum(xw, axis=2), (BT, 1, 1, 4, 1)).to(tl.float32)
            p1 = p0
        elif HALF == 3:
            xw = tl.load(xw_ptr + 8 * t0 + xwoff)  # [t, q, h]: x's fp16 pairs as int32
            xh0, xh1 = tl.split(xw)
            xh0 = tl.broadcast_to(tl.reshape(xh0, (BT, 1, 1, 4, 1)), words.shape)
            xh1 = tl.broadcast_to(tl.reshape(xh1, (BT, 1, 1, 4, 1)), words.shape)
            if CHAIN == 1:
                p0, p1 = tl.inline_asm_elementwise(CHAIN_DOT1, "=f,=f,r,r,r", [words, xh0, xh1],
                                                   dtype=(tl.float32, tl.float32), is_pure=True, pack=1)
            else:  # tile rows t = (BT / CHAIN) i + j: the CHAIN values of i in one asm
                ws, x0s, x1s = _lanes(words, BT, NB, CHAIN), _lanes(xh0, BT, NB, CHAIN), _lanes(xh1, BT, NB, CHAIN)
                if CHAIN == 2:
                    p0, p1 = tl.inline_asm_elementwise(
                        CHAIN_DOT2, "=f,=f" + ",r" * 6, [ws[0], ws[1], x0s[0], x1s[0], x0s[1], x1s[1]],
                        dtype=(tl.float32, tl.float32), is_pure=True, pack=1)
                else:
                    p0, p1 = tl.inline_asm_elementwise(
                        CHAIN_DOT4, "=f,=f" + ",r" * 12,
                        [ws[0], ws[1], ws[2], ws[3], x0s[0], x1s[0], x0s[1], x1s[1], x0s[2], x1s[2], x0s[3], x1s[3]],
                        dtype=(tl.float32, tl.float32), is_pure=True, pack=1)
        elif HALF:
            x8 = (tl.load(x_ptr + 16 * t0 + xoff) * 0.125).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
            xa0, xa1 = tl.split(x8)  # [t, q, h]
            xh0, xh1 = tl.split(xa0 | (xa1 << 16))  # the pairs (a = 0, 1) of h = 0, 1: [t, q]
            xh0 = tl.broadcast_to(tl.reshape(xh0, (BT, 1, 1, 4, 1)), words.shape)
            xh1 = tl.broadcast_to(tl.reshape(xh1, (BT, 1, 1, 4, 1)), words.shape)
            p0, p1 = tl.inline_asm_elementwise(HALF_DOT if HALF == 1 else HALF_DOT_F16, "=f,=f,r,r,r",
                                               [words, xh0, xh1], dtype=(tl.float32, tl.float32), is_pure=True,
                                               pack=1)
        else:
            if ZMODE == 1:
                e0, e1 = _zero_terms(z_ptr, N, 0 if SINGLE else (16 * t0) >> g_shift, zw, zsh0, zsh1, zm, IS_FP16)
                e0 = tl.broadcast_to(tl.reshape(e0, (1, NB, 8, 1, 4)), words.shape)
                e1 = tl.broadcast_to(tl.reshape(e1, (1, NB, 8, 1, 4)), words.shape)
                w8 = _int8(words, e0, e1, 1, IS_FP16)  # code - zero, exact
            else:
                w8 = _int8(words, words, words, 0, IS_FP16)  # weight 4a + 2h + b: code - 8, exact
            xv = tl.load(x_ptr + 16 * t0 + xoff).to(tl.float32)
            xa0, xa1 = tl.split(xv)  # [t, q, h]
            x00, x01 = tl.split(xa0)  # a = 0: h = 0, 1 -> [t, q]
            x10, x11 = tl.split(xa1)
            x00 = tl.reshape(x00, (BT, 1, 1, 4, 1))
            x01 = tl.reshape(x01, (BT, 1, 1, 4, 1))
            x10 = tl.reshape(x10, (BT, 1, 1, 4, 1))
            x11 = tl.reshape(x11, (BT, 1, 1, 4, 1))
            p0 = _word_sums(w8, 0, x00, x01, x10, x11)
            p1 = _word_sums(w8, 1, x00, x01, x10, x11)
        if SINGLE:
            acc0 += p0
            acc1 += p1
        else:
            g = (16 * t0) >> g_shift
            acc0 = tl.fma(p0, tl.reshape(_scales(s_ptr, N, g, n0, False), (1, NB, 8, 1, 4)), acc0)
            acc1 = tl.fma(p1, tl.reshape(_scales(s_ptr, N, g, n0 + 8, False), (1, NB, 8, 1, 4)), acc1)
    r0 = tl.sum(tl.sum(acc0, axis=3), axis=0)  # [nb, c, w]
    r1 = tl.sum(tl.sum(acc1, axis=3), axis=0)
    if SINGLE:
        r0 = r0 * _scales(s_ptr, N, 0, n0, True)
        r1 = r1 * _scales(s_ptr, N, 0, n0 + 8, True)
    if HALF == 3:  # the runtime's decode: (code - 8) / WEIGHT_SCALE
        r0 = r0 * HALF3_BACK
        r1 = r1 * HALF3_BACK
    elif HALF:
        r0 = r0 * 8.0
        r1 = r1 * 8.0
    if SPLIT == 1:
        tl.store(out_ptr + n0, r0.to(out_ptr.dtype.element_ty))
        tl.store(out_ptr + n0 + 8, r1.to(out_ptr.dtype.element_ty))
    else:
        tl.store(ws_ptr + pid_k * N + n0, r0)
        tl.store(ws_ptr + pid_k * N + n0 + 8, r1)


class Gemv:
    """One launch shape of the GEMV for one layer's `B` and `s`: `__call__(x)` -> `[1, N]`."""

    def __init__(self, B: torch.Tensor, s: torch.Tensor, group_size: int, dtype: torch.dtype, *, nb: int = 2,
                 split: int = 1, warps: int = 4, stages: int = 3, ahead: int = 0, half: int = 0,
                 z: torch.Tensor | None = None, bt: int = 8, chain: int = 1,
                 stream: bool = False) -> None:
        k, n = 16 * B.shape[0], B.shape[1] // 2
        single = group_size == -1 or group_size >= k
        steps = k // (16 * bt)
        if half and (dtype != torch.float16 or z is not None):
            raise ValueError("half: float16 activations and symmetric layers only")
        if chain > 1 and (half != 3 or bt % chain):
            raise ValueError("chain: half 3 only, a divisor of bt")
        if n % (64 * nb) or steps % split:
            raise ValueError(f"N={n} is not a multiple of {64 * nb} or split {split} does not divide {steps} steps")
        self.B, self.s, self.z, self.n, self.k, self.dtype = B, s, z if z is not None else B, n, k, dtype
        self.grid = (n // (64 * nb), split)
        self.consts = dict(SINGLE=single, IS_FP16=dtype == torch.float16, BT=bt, NB=nb, SPLIT=split, AHEAD=ahead,
                           HALF=half, ZMODE=int(z is not None), CHAIN=chain, STREAM=stream, num_warps=warps, num_stages=stages)
        self.args = (n, steps // split, 0 if single else group_size.bit_length() - 1)
        self.out = torch.empty(1, n, dtype=dtype, device=B.device)
        self.ws = torch.empty(split, n, dtype=torch.float32, device=B.device) if split > 1 else self.out
        self.split = split

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gemv_kernel[self.grid](x, x.view(torch.int32), self.B, self.s, self.z, self.out, self.ws, *self.args, **self.consts)
        if self.split > 1:
            block = 1024
            splitk_reduce_kernel[(-(-self.n // block),)](self.ws, self.s, self.out, 1, self.n, self.n, 0,
                                                         SPLIT=self.split, BLOCK=block)
        return self.out


def _layer(n: int, k: int, mode: Any, dtype: torch.dtype, gen: torch.Generator, device: str) -> tuple[Any, dict]:
    from bench_gemm import mode_record

    from marlin_convert.formats import to_marlin

    rec = mode_record(n, k, mode, dtype, gen, device)
    return rec, {name: t.to(device) for name, t in to_marlin(rec).items()}


def _spec(text: str) -> tuple[int, int, Any]:
    """`NxK[:MODE]` (`bench_gemm.py`'s modes: g128 (default), g-1, g128+z, g-1+z) -> (N, K, Mode)."""
    from bench_gemm import Mode

    shape, _, mode = text.partition(":")
    n, k = (int(v) for v in shape.split("x"))
    parsed = Mode.parse(mode or "g128")
    if parsed.group_size not in (-1, 128) or parsed.zero_point not in (None, "int") or parsed.act_order:
        raise SystemExit(f"{text}: the prototype takes group 128 or -1, symmetric or Marlin zero points")
    return n, k, parsed


def check(args: argparse.Namespace) -> None:
    from tests._support import ptx_emulation

    ptx_emulation.install()
    dtype = torch.bfloat16 if args.bf16 else torch.float16
    tol = 1.6e-2 if args.bf16 else 2e-3
    gen = torch.Generator().manual_seed(21)
    failed = []
    for text in args.layers:
        n, k, mode = _spec(text)
        gs = mode.group_size
        rec, t = _layer(n, k, mode, dtype, gen, "cpu")
        g_idx = torch.arange(k) // (k if gs == -1 else gs)
        zero = rec.zeros.double()[g_idx].t() if rec.zeros is not None else 8.0
        w = (rec.codes.full().double() - zero) * rec.scales.double()[g_idx].t()
        x = torch.randn(1, k, generator=gen).to(dtype)
        ref = x.double() @ w.t()
        for kw in _shapes(args, dtype, t.get("z") is not None):
            y = Gemv(t["B"], t["s"], gs, dtype, z=t.get("z"), **kw)(x).double()
            err = float((y - ref).abs().max() / ref.abs().max())
            name = f"{text} {_name(kw)}"
            print(f"{name}{' bf16' if args.bf16 else ''}: max error {err:.2e} of the largest output")
            if not err <= tol:
                failed.append(name)
    if failed:
        sys.exit(f"max error above {tol:g}: {', '.join(failed)}")


def sass(args: argparse.Namespace) -> None:
    import collections

    import sass_gemm
    from marlin_convert.runtime.triton_launch import Launch, Slot

    sass_gemm.Slot = Slot
    dtype = torch.bfloat16 if args.bf16 else torch.float16
    for text in args.layers:
        n, k, mode = _spec(text)
        gs, groups = mode.group_size, 1 if mode.group_size == -1 else k // mode.group_size
        z = torch.zeros(groups, n // 8, dtype=torch.int32) if mode.zero_point else None
        for kw in _shapes(args, dtype, z is not None):
            g = Gemv(torch.zeros(k // 16, 2 * n, dtype=torch.int32), torch.ones(groups, n, dtype=dtype), gs, dtype, z=z,
                     **kw)
            nb, warps = kw["nb"], kw["warps"]
            launch = Launch(gemv_kernel, g.grid, (Slot("x"), Slot("cnt"), g.B, g.s, g.z, Slot("out"), Slot("ws"), *g.args), g.consts,
                            None)
            kernel = sass_gemm.compile_launch(launch, dtype)
            usage = sass_gemm.cuobjdump(kernel.asm["cubin"], "-res-usage")
            code = sass_gemm.cuobjdump(kernel.asm["cubin"], "-sass")
            loop = sass_gemm.main_loop(code, marker="FFMA")
            mix = collections.Counter(sass_gemm.opcode(t) for t in loop)
            weights = kw["bt"] * 128 * nb * 8  # a step: BT tile rows of 128 NB words of 8 weights
            regs, stack = re.search(r"REG:(\d+)", usage), re.search(r"STACK:(\d+)", usage)
            print(f"{text} {_name(kw)}: {regs.group(1) if regs else '?'} registers, "
                  f"{stack.group(1) if stack else '?'} bytes of stack; loop {len(loop)} instructions a thread "
                  f"({len(loop) * 32 * warps / weights:.2f} a weight): "
                  + ", ".join(f"{o} {c}" for o, c in mix.most_common(12)))


def bench(args: argparse.Namespace) -> None:
    import torch.nn.functional as F
    from _cuda_timing import graph_time_us

    from marlin_convert.runtime import triton_gemm

    dtype = torch.bfloat16 if args.bf16 else torch.float16
    device = "cpu" if args.dry_run else "cuda"
    if args.dry_run:  # every call once, in the interpreter: the script's own check
        from tests._support import ptx_emulation

        ptx_emulation.install()
        graph_time_us = lambda fns: [f() for f in fns] and 1.0  # noqa: E731
    gen = torch.Generator(device=device).manual_seed(21)
    rows = []
    for text in args.layers:
        n, k, mode = _spec(text)
        gs = mode.group_size
        layers = [_layer(n, k, mode, dtype, gen, device) for _ in range(4)]
        x = torch.randn(1, k, device=device, generator=gen).to(dtype)
        served = [triton_gemm.plan(1, dtype, x.device, t["B"], t["s"], group_size=gs, z=t.get("z")) for _, t in layers]
        ref = served[0](x).float()
        row: dict[str, Any] = {"shape": text, "dtype": str(dtype), "served": round(graph_time_us([lambda p=p: p(x) for p in served]), 1)}
        dense = [torch.randn(n, k, device=device, generator=gen).to(dtype) for _ in range(4)]
        row["dense"] = round(graph_time_us([lambda w=w: F.linear(x, w) for w in dense]), 1)
        for kw in _shapes(args, dtype, mode.zero_point is not None):
            try:
                gemvs = [Gemv(t["B"], t["s"], gs, dtype, z=t.get("z"), **kw) for _, t in layers]
            except ValueError:
                continue
            name = _name(kw)
            y = gemvs[0](x).float()
            row[name + "_diff"] = float((y - ref).abs().max() / ref.abs().max())
            row[name] = round(graph_time_us([lambda g=g: g(x) for g in gemvs]), 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    for r in rows:
        shapes = {key: v for key, v in r.items() if key.startswith("nb=") and not key.endswith("_diff")}
        best = min(shapes, key=shapes.get) if shapes else None
        print(f"{r['shape']} {r['dtype']}: dense {r['dense']} µs, served {r['served']} ({r['dense'] / r['served']:.2f}× dense)"
              + (f", best GEMV {best}: {shapes[best]} ({r['dense'] / shapes[best]:.2f}× dense)" if best else ""))


def profile(args: argparse.Namespace) -> None:
    """Each GEMV shape (and the served plan) once inside a CUDA profiler range, for Nsight Compute (`ncu
    --profile-from-start off`): compiled and run once before the range opens."""
    from _cuda_timing import profile_once

    from marlin_convert.runtime import triton_gemm

    dtype = torch.bfloat16 if args.bf16 else torch.float16
    gen = torch.Generator(device="cuda").manual_seed(21)
    calls = []
    for text in args.layers:
        n, k, mode = _spec(text)
        _, t = _layer(n, k, mode, dtype, gen, "cuda")
        x = torch.randn(1, k, device="cuda", generator=gen).to(dtype)
        calls.append(lambda x=x, p=triton_gemm.plan(1, dtype, x.device, t["B"], t["s"], group_size=mode.group_size,
                                                      z=t.get("z")): p(x))
        calls += [lambda x=x, g=Gemv(t["B"], t["s"], mode.group_size, dtype, z=t.get("z"), **kw): g(x)
                  for kw in _shapes(args, dtype, mode.zero_point is not None)]
    profile_once(calls)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _shapes(args: argparse.Namespace, dtype: torch.dtype, zeros: bool) -> list[dict[str, Any]]:
    """Every launch shape the options name (`half` only for float16 and symmetric layers)."""
    keys = ("nb", "split", "warps", "stages", "ahead", "half", "bt", "chain", "stream")
    out = []
    for values in itertools.product(*(_ints(getattr(args, key)) for key in keys)):
        kw = dict(zip(keys, values))
        kw["stream"] = bool(kw["stream"])
        if kw["stream"] and (kw["chain"] > 1 or kw["half"]):
            continue
        if kw["chain"] > 1 and (kw["half"] != 3 or kw["bt"] % kw["chain"]):
            continue
        if not kw["half"] or (dtype == torch.float16 and not zeros):
            out.append(kw)
    return out


def _name(kw: dict[str, Any]) -> str:
    return " ".join(f"{key}={int(value)}" for key, value in kw.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("check", "sass", "bench", "profile"))
    ap.add_argument("layers", nargs="+", help="NxK[:MODE]: g128 (default), g-1, g128+z or g-1+z")
    ap.add_argument("--nb", default="2")
    ap.add_argument("--split", default="1")
    ap.add_argument("--warps", default="4")
    ap.add_argument("--stages", default="3")
    ap.add_argument("--ahead", default="0", help="0 to 3: load the words that many steps ahead")
    ap.add_argument("--half", default="0", help="0, 1, 2: products and pair sums in fp16 (2: four-term sums too;"
                                                " float16 only)")
    ap.add_argument("--bt", default="8", help="tile rows (16 k each) a step: 8 or fewer (a step in one group)")
    ap.add_argument("--chain", default="1", help="half 3: 1, 2, 4 tile rows' products summed in one fp16 chain")
    ap.add_argument("--stream", default="0", help="0 and/or 1: the loads alone (with half 0, chain 1)")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="bench: on the CPU in the interpreter, untimed")
    args = ap.parse_args()
    {"check": check, "sass": sass, "bench": bench, "profile": profile}[args.what](args)


if __name__ == "__main__":
    main()
