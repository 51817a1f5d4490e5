#!/usr/bin/env python3
"""A Marlin GEMM for 1-16 rows on `mma.sync` from registers, a prototype beside the served kernels (issue #13: ≥ 3×
dense fp16 at 2-16 rows; not part of the runtime). Measured in GEMM round 23 (BENCHMARKS.md): correct, slower
than the served kernels at 1 and 16 rows (L1-bound on x's loads at 16), level at 8.

Marlin's layout was made for `mma.sync.m16n8k16`: lane L = 4c + q holding word (t, nb, c, q, w) decodes it
(4 half2 registers: b = 0, 1 x h = 0, 1) into exactly its A fragment of the 16 x 16 tile (n = 64nb + 16w + 8b + c,
k = 16t + 8h + 2q + a), and x's fp16 pairs of row c at (t, q, h) are its B fragment (8 rows of x). So each word
costs its decode (the served kernel's exact `code - 8`) and one `mma.sync` an 8-row tile of x, float32 sums. The
4 words of tile rows 2i + j a thread holds chain their `mma`s in one asm; D is scaled by its group (group 128 or one
group, symmetric); the splits' partials go through `splitk_reduce_kernel` (split 1: the kernel writes float16).

The asm is warp-collective: it relies on every lane running the same sequence of elements and on lane L = 4c + q.
Triton gives no layout API, so `mma_kernel` loads every tensor of its loop straight in the shape `[w, q, c, j, nb]`
with the coalescing pass's order `[0..4]` (see its docstring; `sass` shows no shared memory in the loop). Neither
can be checked in the interpreter (which runs elements, not lanes): `check` needs the GPU.

    PYTHONPATH= python3 scripts/mma_prototype.py sass 28672x8192 --rows 8,16 --split 4 --nb 1     # CPU, sm_90 SASS
    PYTHONPATH=. python3 scripts/mma_prototype.py check 256x1024 1088x2048 --rows 1,16 --split 1,2 --nb 1,2 --kw 1,2
    PYTHONPATH=. python3 scripts/mma_prototype.py bench 28672x8192 8192x28672 --rows 1,8,16 --split 2,4,8 --nb 1
    ncu --profile-from-start off ... python3 scripts/mma_prototype.py profile 28672x8192 --rows 16 --split 2 --nb 1
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS.parent), str(SCRIPTS)]

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from marlin_convert.runtime._triton_gemm_kernels import (  # noqa: E402
    _single_places, splitk_reduce_kernel)
from marlin_convert.runtime._triton_gemv_kernel import _program_place  # noqa: E402


def mma_chain_asm(words: int, tiles: int) -> str:
    """PTX: `words` words of one lane (tile rows apart), each decoded to the exact `code - 8` (4 half2 registers,
    Marlin's `lop3` and one fma a pair: the served `_dequant_asm` constants) and multiplied by `tiles` 8-row
    tiles of x with chained `mma.sync.m16n8k16` (float32 sums from zero). Outputs `$0 ..`: each tile's D
    fragment (4 float32: rows n c and c + 8 of the 16, x rows 2q and 2q + 1). Inputs after them: the words,
    then for each word and tile the B fragment (x's fp16 pairs of k 2q + a and 2q + a + 8)."""
    n_out = 4 * tiles
    lines = ["{", ".reg .b32 p, v, a0, a1, a2, a3, z0, y0, k1;", ".reg .f32 zero;",
             "mov.b32 z0, 0x64086408;", "mov.b32 y0, 0xD480D480;", "mov.b32 k1, 0x2C002C00;", "mov.f32 zero, 0f00000000;"]
    first_word = n_out
    first_x = n_out + words
    for i in range(words):
        word = f"${first_word + i}"
        # A fragment: a0 (b 0, h 0), a1 (b 1, h 0), a2 (b 0, h 1), a3 (b 1, h 1)
        lines += [f"lop3.b32 v, {word}, 0x000F000F, 0x64006400, 0xEA;", "sub.f16x2 a0, v, z0;",
                  f"lop3.b32 v, {word}, 0x00F000F0, 0x64006400, 0xEA;", "fma.rn.f16x2 a2, v, k1, y0;",
                  f"shr.b32 p, {word}, 8;",
                  "lop3.b32 v, p, 0x000F000F, 0x64006400, 0xEA;", "sub.f16x2 a1, v, z0;",
                  "lop3.b32 v, p, 0x00F000F0, 0x64006400, 0xEA;", "fma.rn.f16x2 a3, v, k1, y0;"]
        for r in range(tiles):
            d = ", ".join(f"${4 * r + e}" for e in range(4))
            c = "zero, zero, zero, zero" if i == 0 else d
            b0, b1 = f"${first_x + 2 * (tiles * i + r)}", f"${first_x + 2 * (tiles * i + r) + 1}"
            lines.append(f"mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {{{d}}}, {{a0, a1, a2, a3}}, "
                         f"{{{b0}, {b1}}}, {{{c}}};")
    return "\n".join(lines + ["}"])


MMA1 = tl.constexpr(mma_chain_asm(4, 1))
MMA2 = tl.constexpr(mma_chain_asm(4, 2))


@triton.jit
def _x_tile(xw_ptr, K2, M, one, step0, xj, r: tl.constexpr, NB: tl.constexpr):
    """x's fp16 pairs (int32) of x rows 8 r + c for the tile rows t = 2 i + j' of step `step0 + j // 2`, i = 0..3,
    pairs (q, h = 0) and (q, h = 1): eight `[1, 4, 8, J, NB]` tensors (i, h), zero for rows past M, to broadcast
    over w. q's stride is the runtime `one`: with no contiguity anywhere, the coalescing pass orders the
    dimensions as they come and gives these loads the words' layout (`mma_kernel`)."""
    q = tl.arange(0, 4)[None, :, None, None, None]
    c = tl.arange(0, 8)[None, None, :, None, None]
    nb = tl.arange(0, NB)[None, None, None, None, :]
    row = 8 * r + c
    off = row * K2 + 64 * step0 + xj + q * one + 0 * nb
    ok = (row < M) & (off >= 0)
    return (tl.load(xw_ptr + off, mask=ok, other=0), tl.load(xw_ptr + off + 4, mask=ok, other=0),
            tl.load(xw_ptr + off + 16, mask=ok, other=0), tl.load(xw_ptr + off + 20, mask=ok, other=0),
            tl.load(xw_ptr + off + 32, mask=ok, other=0), tl.load(xw_ptr + off + 36, mask=ok, other=0),
            tl.load(xw_ptr + off + 48, mask=ok, other=0), tl.load(xw_ptr + off + 52, mask=ok, other=0))


@triton.jit
def _words(b_ptr, t, N, woff):
    """The words of tile rows t + (8 (j // 2) + j % 2) + 2 i, i = 0..3, each `[4, 4, 8, J, NB]` (w, q, c, j, nb)."""
    base = b_ptr + t.to(tl.int64) * (2 * N)
    return (tl.load(base + woff), tl.load(base + 2 * (2 * N) + woff), tl.load(base + 4 * (2 * N) + woff),
            tl.load(base + 6 * (2 * N) + woff))


@triton.jit
def _scale_pairs(sw_ptr, step0, jk, g_shift, N, swoff):
    """The scales of outputs (b = 0, 1) as float32, shaped like the words, for steps `step0 + jk` (group 128 or one
    group): the Marlin-permuted scales of (nb, c, w) are the fp16 pair `32 nb + 4 c + w` of the group's row (b = 0
    low, b = 1 high)."""
    v = tl.load(sw_ptr + ((128 * (step0 + jk)) >> g_shift) * (N // 2) + swoff)
    lo = (v & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    hi = (v >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    return lo, hi


@triton.jit(do_not_specialize=["steps", "g_shift", "M", "one"])
def mma_kernel(x_ptr, b_ptr, s_ptr, out_ptr, M, N, K, steps, g_shift, one, SINGLE: tl.constexpr,
               NB: tl.constexpr, SPLIT: tl.constexpr, TILES: tl.constexpr, KW: tl.constexpr,
               XAHEAD: tl.constexpr):
    """`out[split, m, n]`, float32 partials (SPLIT 1: the float16 result itself), for M <= 8 TILES rows of
    float16 x (rows K apart, 4-byte aligned); a program a (column tile of 64 NB, split of the steps: `steps`
    a multiple of SPLIT KW), 2 NB KW warps, KW steps an iteration (warps over them, summed at the end); `one`
    must be 1. Every tensor of the loop is `[4, 4, 8, J, NB]` (w, q, c, j, nb; J = 2 KW, step j // 2, tile rows
    2 i + j % 2) in one layout: the words' loads (contiguous in w) and the others (no contiguity) take the
    order `[0, 1, 2, 3, 4]`, so 4 words a thread (w), lanes L = 4c + q (the `mma` fragments' lane order), warps
    over (j, nb). XAHEAD: x's pairs (1; and the scales, 2) loaded an iteration ahead, as the words are."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    J: tl.constexpr = 2 * KW
    s_first = pid_k * (steps // SPLIT)
    iters = steps // (SPLIT * KW)
    xw_ptr = x_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    sw_ptr = s_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    w = tl.arange(0, 4)[:, None, None, None, None]  # (indexing, not reshape: the axis analysis sees through it)
    q = tl.arange(0, 4)[None, :, None, None, None]
    c = tl.arange(0, 8)[None, None, :, None, None]
    j = tl.arange(0, J)[None, None, None, :, None]
    nb = (pid_n * NB + tl.arange(0, NB))[None, None, None, None, :]
    woff = (8 * (j // 2) + j % 2) * (2 * N) + 128 * nb + 16 * c + 4 * q + w
    swoff = 32 * nb + 4 * c + w + 0 * q
    xj = 64 * (j // 2) + 8 * (j % 2)
    jk = j // 2 + 0 * w + 0 * q + 0 * c
    shape: tl.constexpr = (4, 4, 8, J, NB)
    e00 = tl.zeros(shape, dtype=tl.float32)  # tile 0: (b 0, x row 2q), (b 0, 2q + 1), (b 1, 2q), (b 1, 2q + 1)
    e01 = tl.zeros(shape, dtype=tl.float32)
    e02 = tl.zeros(shape, dtype=tl.float32)
    e03 = tl.zeros(shape, dtype=tl.float32)
    e10 = tl.zeros(shape, dtype=tl.float32)  # tile 1 (TILES 2: x rows 8 + ...)
    e11 = tl.zeros(shape, dtype=tl.float32)
    e12 = tl.zeros(shape, dtype=tl.float32)
    e13 = tl.zeros(shape, dtype=tl.float32)
    K2 = K // 2
    k0, k1, k2, k3 = _words(b_ptr, 8 * s_first, N, woff)
    if XAHEAD == 2 and not SINGLE:
        u0, u1 = _scale_pairs(sw_ptr, s_first, jk, g_shift, N, swoff)
    n0, n1, n2, n3, n4, n5, n6, n7 = _x_tile(xw_ptr, K2, M, one, s_first, xj, 0, NB)
    if TILES == 2:
        m0, m1, m2, m3, m4, m5, m6, m7 = _x_tile(xw_ptr, K2, M, one, s_first, xj, 1, NB)
    for it in range(0, iters):
        step0 = s_first + KW * it
        nxt = s_first + KW * tl.minimum(it + 1, iters - 1)
        w0, w1, w2, w3 = k0, k1, k2, k3
        k0, k1, k2, k3 = _words(b_ptr, 8 * nxt, N, woff)
        if XAHEAD:
            a0, c0, a1, c1, a2, c2, a3, c3 = n0, n1, n2, n3, n4, n5, n6, n7
            n0, n1, n2, n3, n4, n5, n6, n7 = _x_tile(xw_ptr, K2, M, one, nxt, xj, 0, NB)
        else:
            a0, c0, a1, c1, a2, c2, a3, c3 = _x_tile(xw_ptr, K2, M, one, step0, xj, 0, NB)
        if TILES == 1:
            d0, d1, d2, d3 = tl.inline_asm_elementwise(
                MMA1, "=f,=f,=f,=f" + ",r" * 12,
                [w0, w1, w2, w3, a0, c0, a1, c1, a2, c2, a3, c3],  # (x's pairs broadcast over w)
                dtype=(tl.float32, tl.float32, tl.float32, tl.float32), is_pure=True, pack=1)
        else:
            if XAHEAD:
                f0, h0, f1, h1, f2, h2, f3, h3 = m0, m1, m2, m3, m4, m5, m6, m7
                m0, m1, m2, m3, m4, m5, m6, m7 = _x_tile(xw_ptr, K2, M, one, nxt, xj, 1, NB)
            else:
                f0, h0, f1, h1, f2, h2, f3, h3 = _x_tile(xw_ptr, K2, M, one, step0, xj, 1, NB)
            d0, d1, d2, d3, g0, g1, g2, g3 = tl.inline_asm_elementwise(
                MMA2, "=f,=f,=f,=f,=f,=f,=f,=f" + ",r" * 20,
                [w0, w1, w2, w3, a0, c0, f0, h0, a1, c1, f1, h1, a2, c2, f2, h2, a3, c3, f3, h3],
                dtype=(tl.float32,) * 8, is_pure=True, pack=1)
        if SINGLE:
            e00 += d0
            e01 += d1
            e02 += d2
            e03 += d3
            if TILES == 2:
                e10 += g0
                e11 += g1
                e12 += g2
                e13 += g3
        else:
            if XAHEAD == 2:
                s0, s1 = u0, u1
                u0, u1 = _scale_pairs(sw_ptr, nxt, jk, g_shift, N, swoff)
            else:
                s0, s1 = _scale_pairs(sw_ptr, step0, jk, g_shift, N, swoff)
            e00 = tl.fma(d0, s0, e00)
            e01 = tl.fma(d1, s0, e01)
            e02 = tl.fma(d2, s1, e02)
            e03 = tl.fma(d3, s1, e03)
            if TILES == 2:
                e10 = tl.fma(g0, s0, e10)
                e11 = tl.fma(g1, s0, e11)
                e12 = tl.fma(g2, s1, e12)
                e13 = tl.fma(g3, s1, e13)
    n = 64 * nb + 16 * w + c + 0 * q  # [4, 4, 8, 1, NB], b = 0 (b = 1: + 8)
    if SINGLE:
        sc0 = tl.load(s_ptr + _single_places(n)).to(tl.float32)
        sc1 = tl.load(s_ptr + _single_places(n + 8)).to(tl.float32)
        e00, e01, e02, e03 = e00 * sc0, e01 * sc0, e02 * sc1, e03 * sc1
        if TILES == 2:
            e10, e11, e12, e13 = e10 * sc0, e11 * sc0, e12 * sc1, e13 * sc1
    base = out_ptr + pid_k * M * N
    _store_d(base, M, N, n, q, 0, e00, e01, e02, e03)
    if TILES == 2:
        _store_d(base, M, N, n, q, 1, e10, e11, e12, e13)


@triton.jit
def _store_d(base, M, N, n, q, r: tl.constexpr, e0, e1, e2, e3):
    """Sum each D value over j and store it at its x row (8 r + 2q, + 1) and output (n, n + 8)."""
    row0 = 8 * r + 2 * q  # [1, 4, 1, 1, 1]
    v0 = tl.sum(e0, axis=3, keep_dims=True)  # [4, 4, 8, 1, NB]
    v1 = tl.sum(e1, axis=3, keep_dims=True)
    v2 = tl.sum(e2, axis=3, keep_dims=True)
    v3 = tl.sum(e3, axis=3, keep_dims=True)
    tl.store(base + row0 * N + n, v0, mask=row0 < M)
    tl.store(base + (row0 + 1) * N + n, v1, mask=row0 + 1 < M)
    tl.store(base + row0 * N + n + 8, v2, mask=row0 < M)
    tl.store(base + (row0 + 1) * N + n + 8, v3, mask=row0 + 1 < M)


class Mma:
    """One launch shape for one layer's `B` and `s` and `m` rows: `__call__(x)` -> `[m, N]` float16."""

    def __init__(self, B: torch.Tensor, s: torch.Tensor, group_size: int, m: int, *, nb: int = 2, split: int = 4,
                 kw: int = 1, xahead: int = 1) -> None:
        k, n = 16 * B.shape[0], B.shape[1] // 2
        steps = k // 128
        if m > 16 or n % (64 * nb) or k % 128 or group_size not in (128, -1, k) or steps % (split * kw):
            raise ValueError("1-16 rows, N a multiple of 64 NB, K of 128 SPLIT KW, group 128 or one group")
        self.B, self.s, self.n, self.k, self.m, self.split = B, s, n, k, m, split
        self.grid = (n // (64 * nb), split)
        self.args = (m, n, k, steps, 7, 1)
        self.consts = dict(SINGLE=group_size in (-1, k), NB=nb, SPLIT=split, TILES=1 if m <= 8 else 2, KW=kw,
                           XAHEAD=xahead, num_warps=2 * nb * kw, num_stages=3)
        self.out = torch.empty(m, n, dtype=torch.float16, device=B.device)
        self.ws = self.out if split == 1 else torch.empty(split, m, n, dtype=torch.float32, device=B.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mma_kernel[self.grid](x, self.B, self.s, self.ws, *self.args, **self.consts)
        if self.split > 1:
            block = 1024
            splitk_reduce_kernel[(-(-self.m * self.n // block),)](self.ws, self.s, self.out, self.m, self.n, self.n,
                                                                   0, SPLIT=self.split, BLOCK=block)
        return self.out


def _layer(n: int, k: int, group: int, gen: torch.Generator, device: str) -> tuple[Any, dict[str, torch.Tensor]]:
    from bench_gemm import Mode, mode_record

    from marlin_convert.formats import to_marlin

    rec = mode_record(n, k, Mode.parse(f"g{group}"), torch.float16, gen, device)
    return rec, {name: t.to(device) for name, t in to_marlin(rec).items()}


def _shape(text: str) -> tuple[int, int]:
    n, k = (int(v) for v in text.split("x"))
    return n, k


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _shapes(args: argparse.Namespace, n: int, k: int) -> list[dict[str, int]]:
    """Every (nb, split, kw, xahead) the options name that fits N and K."""
    keys = ("nb", "split", "kw", "xahead")
    out = [dict(zip(keys, v)) for v in itertools.product(*(_ints(getattr(args, key)) for key in keys))]
    return [s for s in out if (k // 128) % (s["split"] * s["kw"]) == 0 and n % (64 * s["nb"]) == 0]


def _name(shape: dict[str, int]) -> str:
    return "nb{nb}s{split}k{kw}x{xahead}".format(**shape)


def sass(args: argparse.Namespace) -> None:
    import sass_gemm
    from marlin_convert.runtime.triton_launch import Launch, Slot

    sass_gemm.Slot = Slot
    for text in args.layers:
        n, k = _shape(text)
        for m, shape in itertools.product(_ints(args.rows), _shapes(args, n, k)):
            B = torch.zeros(k // 16, 2 * n, dtype=torch.int32)
            s = torch.ones(k // 128, n, dtype=torch.float16)
            g = Mma(B, s, 128, m, **shape)
            launch = Launch(mma_kernel, g.grid, (Slot("x"), g.B, g.s, Slot("ws"), *g.args), g.consts, None)
            kernel = sass_gemm.compile_launch(launch, torch.float16)
            usage = sass_gemm.cuobjdump(kernel.asm["cubin"], "-res-usage")
            code = sass_gemm.cuobjdump(kernel.asm["cubin"], "-sass")
            loop = sass_gemm.main_loop(code, marker="HMMA")
            mix = collections.Counter(sass_gemm.opcode(t) for t in loop)
            words = 16  # a thread's words an iteration (8 KW tile rows x 128 NB words, 64 NB KW threads)
            regs, stack = re.search(r"REG:(\d+)", usage), re.search(r"STACK:(\d+)", usage)
            print(f"{text} rows={m} {_name(shape)}: {regs.group(1) if regs else '?'} registers, "
                  f"{stack.group(1) if stack else '?'} bytes of stack; loop {len(loop)} instructions a thread "
                  f"({len(loop) / words:.1f} a word): " + ", ".join(f"{o} {c}" for o, c in mix.most_common(12)))


def check(args: argparse.Namespace) -> None:
    gen = torch.Generator(device="cuda").manual_seed(23)
    failed = []
    for text in args.layers:
        n, k = _shape(text)
        for group in (128, -1):
            rec, t = _layer(n, k, group, gen, "cuda")
            g_idx = torch.arange(k, device="cuda") // (k if group == -1 else group)
            w = (rec.codes.full().double() - 8.0) * rec.scales.double()[g_idx].t()
            for m, shape in itertools.product(_ints(args.rows), _shapes(args, n, k)):
                x = torch.randn(m, k, device="cuda", generator=gen).half()
                ref = x.double() @ w.t()
                y = Mma(t["B"], t["s"], group, m, **shape)(x).double()
                mag = x.double().abs() @ w.abs().t()
                worst = float(((y - ref).abs() / (2.0**-11 * ref.abs() + k * 2.0**-22 * mag + 1e-30)).max())
                rel = float((y - ref).norm() / ref.norm())
                name = f"{text} g{group} rows={m} {_name(shape)}"
                print(f"{name}: normwise {rel:.2e}, element bound used {worst:.2f}x")
                if not (worst <= 1.0 and rel <= 2 * 2.0**-11):
                    failed.append(name)
    if failed:
        sys.exit("outside the bounds: " + ", ".join(failed))


def bench(args: argparse.Namespace) -> None:
    import torch.nn.functional as F
    from _cuda_timing import graph_time_us

    from marlin_convert.runtime import triton_gemm

    gen = torch.Generator(device="cuda").manual_seed(24)
    for text in args.layers:
        n, k = _shape(text)
        layers = [_layer(n, k, 128, gen, "cuda")[1] for _ in range(4)]
        dense = [torch.randn(n, k, device="cuda", generator=gen).half() for _ in range(4)]
        for m in _ints(args.rows):
            x = torch.randn(m, k, device="cuda", generator=gen).half()
            served = [triton_gemm.plan(m, torch.float16, x.device, t["B"], t["s"], group_size=128) for t in layers]
            ref = served[0](x).float()
            row: dict[str, Any] = {"shape": text, "m": m,
                                   "served": round(graph_time_us([lambda p=p: p(x) for p in served]), 1),
                                   "dense": round(graph_time_us([lambda w=w: F.linear(x, w) for w in dense]), 1)}
            times = {}
            for shape in _shapes(args, n, k):
                mmas = [Mma(t["B"], t["s"], 128, m, **shape) for t in layers]
                y = mmas[0](x).float()
                diff = float((y - ref).abs().max() / ref.abs().max())
                if diff > 2e-3:
                    row[_name(shape) + "_diff"] = diff
                times[_name(shape)] = round(graph_time_us([lambda g=g: g(x) for g in mmas]), 1)
            row["best"] = sorted(times.items(), key=lambda kv: kv[1])[:6]
            row["all"] = times
            print(json.dumps(row), flush=True)


def profile(args: argparse.Namespace) -> None:
    """Each launch shape (and the served plan) once inside a CUDA profiler range, for Nsight Compute (`ncu
    --profile-from-start off`): compiled and run once before the range opens."""
    from _cuda_timing import profile_once

    from marlin_convert.runtime import triton_gemm

    gen = torch.Generator(device="cuda").manual_seed(25)
    calls = []
    for text in args.layers:
        n, k = _shape(text)
        t = _layer(n, k, 128, gen, "cuda")[1]
        for m in _ints(args.rows):
            x = torch.randn(m, k, device="cuda", generator=gen).half()
            calls.append(lambda x=x, p=triton_gemm.plan(m, torch.float16, x.device, t["B"], t["s"],
                                                        group_size=128): p(x))
            calls += [lambda x=x, g=Mma(t["B"], t["s"], 128, m, **shape): g(x) for shape in _shapes(args, n, k)]
    profile_once(calls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("sass", "check", "bench", "profile"))
    ap.add_argument("layers", nargs="+", help="NxK (symmetric; group 128, and one group in check)")
    ap.add_argument("--rows", default="1,8,16")
    ap.add_argument("--split", default="4", help="K splits (programs over K; 1: no partials, no reduce)")
    ap.add_argument("--nb", default="2", help="64-column blocks a program")
    ap.add_argument("--kw", default="1", help="steps an iteration, a pair of warps each, summed at the end")
    ap.add_argument("--xahead", default="1", help="1: x's pairs loaded an iteration ahead; 2: the scales too")
    args = ap.parse_args()
    {"sass": sass, "check": check, "bench": bench, "profile": profile}[args.what](args)


if __name__ == "__main__":
    main()
