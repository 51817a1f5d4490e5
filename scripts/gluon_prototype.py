#!/usr/bin/env python3
"""Marlin GEMMs for up to 16 rows written in Gluon (Triton's explicit-layout language, `triton.experimental.gluon`),
prototypes beside the served kernels (issue #13: ≥ 3× dense fp16 at 2-16 rows; not part of the runtime). Measured
in GEMM round 24 (BENCHMARKS.md): correct in every float64 check; at 8 rows of 28672x8192 / 8192x28672 0.90 / 0.96x
the served kernel's time, at 16 rows 0.93-0.96x / 1.00-1.02x, 1-1.5x slower on smaller layers; not served. A warp-
specialized build of the wgmma kernel (`--ws`, a loader warp and mbarriers) was slower.

`gemm16_kernel`, Marlin's own orientation: x is `mma.sync.m16n8k16`'s A operand (16 rows, read from shared memory
by `ldmatrix`, shared by the program's W warps), the weights its B operand, decoded from each thread's own 16 bytes
of words with no data moving between threads. Word (t, nb, c, q, w) of a step (tile row t, 64-column block nb,
lane 4c + q, word w of its 16 bytes) holds the weights of columns n = 64 nb + 16 w + 8 b + c and k = 16 t + 8 h +
2 q + a (output 4a + 2h + b of `_dequant_asm`): the B fragment of lane 4c + q for the 8 n8 tiles (w, b) when warp nb
owns block nb. The kernel names its columns in the order of Triton's mma v2 operand layout, n' = c + 8 nb + 8 W b +
16 W w, and says so with `convert_layout(..., assert_trivial=True)`: the compile fails if any byte would move.
`gemm16_wg_kernel`, the operands swapped on `wgmma` (one warpgroup, 256 columns): the decoded weights are the
register A operand with rows R = c + 8 b + 16 nb + 64 w (warp nb, the four words of a thread's 16 bytes are the four
m64 repetitions), x's tile in shared memory the B operand. `--nb 2`: 128 columns a program, R = c + 8 b + 16 (w // 2)
+ 32 nb + 64 (w % 2) (8-byte word loads), 86-96 registers instead of 153-167: 5 programs a multiprocessor (20
warps) where the 256-column kernel holds 3, and no faster at 16 rows (round 25: 41.1 / 40.6 us).

Both: a balanced grid (`per_sm` programs a multiprocessor share the (column tile, step) units evenly, one pipeline
across tile boundaries; `segment_reduce_kernel` adds the tiles' segments), words and x through a ring of `S` slots
by `cp.async` (`--tma 1`: words by TMA with mbarriers, slower), exact `code - 8` and each step's float32 sums scaled
(`--sacc 0`: scaled in the fp16 decode, 3 instructions a pair, slower). Symmetric group 128, float16 x only.
`--pdl 1` (the `wgmma` kernel): the segment reduce by programmatic dependent launch (round 25: +-0.5 us). `bench`
also times the served plan with its reduce so (`served_pdl`, and `served_pdl_wait` without the early trigger).
`--loads 1` (the `wgmma` kernel): the ring's copies and waits only, no decode or `wgmma` (round 25: 30.7-31.4 us at
1 row, 33.8-35.6 at 16, against 36-41 for the whole kernel). `--const 1`: `gemm16_wgc_kernel`, the layer's sizes
and the grid compiled in (round 25: 72 registers instead of 96, 0.6-1.6 us less; 16 rows 40.4 / 39.9 us).

    PYTHONPATH= python3 scripts/gluon_prototype.py sass 28672x8192 --w 4 --s 3 --tk 2 --wg 1   # CPU, sm_90 SASS
    PYTHONPATH=. python3 scripts/gluon_prototype.py check 256x1024 1024x2048 --rows 1,7,16 --tk 1,2 --wg 0,1,2 --per-sm 0,2
    PYTHONPATH=. python3 scripts/gluon_prototype.py bench 28672x8192 8192x28672 --rows 1,8,16 --s 3 --per-sm 3 --wg 1 --tk 2
    ncu --profile-from-start off ... python3 scripts/gluon_prototype.py profile 28672x8192 --rows 16 --per-sm 3 --wg 1 --tk 2
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS.parent), str(SCRIPTS)]

import torch  # noqa: E402
from triton.experimental import gluon  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402
from triton.experimental.gluon.language.nvidia.ampere import async_copy, mma_v2  # noqa: E402
from triton.experimental.gluon.language.nvidia.hopper import (  # noqa: E402
    fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_wait)

from marlin_convert.runtime._triton_gemm_kernels import _dequant_asm  # noqa: E402
from mma_prototype import _ints, _layer, _shape  # noqa: E402  (the round-23 prototype's layer and option helpers)


def _sym_scaled_asm() -> str:
    """PTX for one word of a symmetric layer, scaled: outputs $0..$7 (4a + 2h + b) = (code - 8) * scale, one
    rounding (code - 8 is exact in fp16: 1024 + code - 1032, or (1024 + 16 code) / 16 - 72 by one fma); $9 holds
    the scales of b = 0, 1 as its low and high halves. Three instructions a pair of weights."""
    lines = ["{", ".reg .b32 p, v, s0, s1, z, k1, k2;",
             "prmt.b32 s0, $9, 0, 0x1010;", "prmt.b32 s1, $9, 0, 0x3232;", "shr.b32 p, $8, 8;",
             "mov.b32 z, 0x64086408;", "mov.b32 k1, 0x2C002C00;", "mov.b32 k2, 0xD480D480;"]
    for b in range(2):
        src = "$8" if b == 0 else "p"
        for h in range(2):
            if h == 0:
                lines += [f"lop3.b32 v, {src}, 0x000F000F, 0x64006400, 0xEA;", "sub.f16x2 v, v, z;"]
            else:
                lines += [f"lop3.b32 v, {src}, 0x00F000F0, 0x64006400, 0xEA;",
                          "fma.rn.f16x2 v, v, k1, k2;"]
            lines += [f"mul.rn.f16x2 v, v, s{b};", f"mov.b32 {{${2 * h + b}, ${4 + 2 * h + b}}}, v;"]
    lines.append("}")
    return "\n".join(lines)


DEQUANT_F16 = gl.constexpr(_sym_scaled_asm())
EIGHT_F16 = gl.constexpr((gl.float16,) * 8)
TWO_IN = gl.constexpr(",".join(["=h"] * 8 + ["r", "r"]))
INT_F16 = gl.constexpr(_dequant_asm(True, 0, False))
ONE_IN = gl.constexpr(",".join(["=h"] * 8 + ["r"]))


@gluon.jit
def _issue(wsm, xsm, bars, slot, b_ptr, b_desc, x_ptr, word_off, x_off, x_ok, N, tile, step, NB: gl.constexpr,
           TMA: gl.constexpr):
    """Copies of work unit (column tile, step) into ring slot `slot`: its words (8 tile rows of the tile's NB
    blocks; TMA: one tensor-memory copy signalling `bars[slot]`, else `cp.async`) and x tile (`cp.async`)."""
    if TMA:
        mbarrier.expect(bars.index(slot), 8 * 128 * NB * 4)
        tma.async_copy_global_to_shared(b_desc, [step * 8, tile * 32 * NB, 0], bars.index(slot), wsm.index(slot))
    else:
        async_copy.async_copy_global_to_shared(
            wsm.index(slot), b_ptr + (step * 8).to(gl.int64) * (2 * N) + tile * 128 * NB + word_off)
    async_copy.async_copy_global_to_shared(xsm.index(slot), x_ptr + step * 128 + x_off, mask=x_ok)


@gluon.constexpr_function
def _scale_layout(w):
    """The scales of a tile's group row in their stored order p = 64 nb + 8 c + 2 w + b, each thread holding the
    16 contiguous ones of its columns n' (two 16-byte loads): the threads of `SliceLayout(0, MMA)`'s elements."""
    w = int(getattr(w, "value", w))
    warps = [[64 << i] for i in range(w.bit_length() - 1)]
    return gl.DistributedLinearLayout(reg_bases=[[1], [2], [4], [8]], lane_bases=[[16], [32], [0], [0], [0]],
                                      warp_bases=warps, block_bases=[], shape=[64 * w])


@gluon.jit
def _acc_scales(s16_ptr, row_ptr_off, sp_, W: gl.constexpr, MMA: gl.constexpr):
    """A tile's float32 scales of one group row (`s16_ptr + row_ptr_off`), indexed by the columns n' of MMA."""
    sv = gl.load(s16_ptr + row_ptr_off + sp_)
    sv = gl.reshape(gl.permute(gl.reshape(sv, [W, 8, 4, 2]), [2, 3, 0, 1]), [64 * W])  # (nb c w b) -> (w b nb c)
    return gl.convert_layout(sv, gl.SliceLayout(0, MMA), assert_trivial=True).to(gl.float32)


@gluon.jit
def _next(tile, step, spt):
    """The work unit after (tile, step)."""
    last = step == spt - 1
    return gl.where(last, tile + 1, tile), gl.where(last, 0, step + 1)


@gluon.jit
def _prologue(wsm, xsm, bars, b_ptr, b_desc, x_ptr, word_off, x_off, x_ok, N, start, end, spt, S: gl.constexpr,
              NB: gl.constexpr, TMA: gl.constexpr):
    """Issue the first S - 1 units of the range `[start, end)` into ring slots 0.. (one copy group each, empty
    past the range's end); return the next unit to issue, (tile, step)."""
    itile = start // spt
    istep = start - itile * spt
    for ahead in gl.static_range(S - 1):
        if start + ahead < end:
            _issue(wsm, xsm, bars, ahead, b_ptr, b_desc, x_ptr, word_off, x_off, x_ok, N, itile, istep, NB, TMA)
        async_copy.commit_group()
        itile, istep = _next(itile, istep, spt)
    return itile, istep


@gluon.jit
def _copy_offsets(N, stride_xm, M, J: gl.constexpr, L3: gl.constexpr, LX: gl.constexpr):
    """A unit's word offsets in its tile's 8 rows of `B` (`[t, j, w]`, j < J, in layout L3: 16 bytes j of a
    row's 128-word blocks, 2N t + 4 j + w) and x tile's offsets and row mask (`[16, 128]` in layout LX)."""
    t = gl.arange(0, 8, layout=gl.SliceLayout(1, gl.SliceLayout(2, L3)))
    j = gl.arange(0, J, layout=gl.SliceLayout(0, gl.SliceLayout(2, L3)))
    w = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, L3)))
    word_off = (gl.expand_dims(gl.expand_dims(t, 1), 2) * (2 * N)
                + (4 * gl.expand_dims(gl.expand_dims(j, 0), 2) + gl.expand_dims(gl.expand_dims(w, 0), 1)))
    xm = gl.arange(0, 16, layout=gl.SliceLayout(1, LX))
    xk = gl.arange(0, 128, layout=gl.SliceLayout(0, LX))
    return word_off, gl.expand_dims(xm, 1) * stride_xm + gl.expand_dims(xk, 0), gl.expand_dims(xm < M, 1)


@gluon.jit
def _wg_scales(s16_ptr, N, tile, step, sp_, NB: gl.constexpr, ACC: gl.constexpr):
    """The warpgroup kernels' float32 scales of a unit's rows R (one load in stored order, renamed)."""
    sv = gl.load(s16_ptr + step * N + tile * 64 * NB + sp_)
    if NB == 4:
        sv = gl.reshape(gl.permute(gl.reshape(sv, [4, 8, 4, 2]), [2, 0, 3, 1]), [256])  # (nb c w b) -> (w nb b c)
    else:  # (nb c w_hi w_lo b) -> (w_lo nb w_hi b c)
        sv = gl.reshape(gl.permute(gl.reshape(sv, [2, 8, 2, 2, 2]), [3, 0, 2, 4, 1]), [128])
    return gl.convert_layout(sv, gl.SliceLayout(1, ACC), assert_trivial=True).to(gl.float32)


@gluon.jit
def _wg_unit(wsm, xsm, slot, TK: gl.constexpr, ASYNC: gl.constexpr, NB: gl.constexpr, ACC: gl.constexpr):
    """The float32 sums `[64 NB, 16]` of one unit (ring slot `slot`) on `wgmma`: TK tile rows of words decoded at
    a time into the register A operand, x's tile the B operand; waits for all but ASYNC chunks' `wgmma` before
    decoding the next. Rows R (`_row_scale_layout`): NB 4, warp nb and the four m64 repetitions the four words of a
    thread's 16 bytes (`LDS.128`); NB 2, warp (nb, w // 2) and the two repetitions w % 2, 8 bytes (`LDS.64`)."""
    LC: gl.constexpr = gl.BlockedLayout([TK, 1, NB], [1, 32, 1], [1, NB, 4 // NB], [2, 0, 1])  # [tk, (nb c q), w]
    DA: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=ACC, k_width=2)
    p = gl.zeros([64 * NB, 16], gl.float32, ACC)
    for tc in gl.static_range(8 // TK):
        words = wsm.index(slot).slice(tc * TK, TK, dim=0).load(LC)
        v = gl.inline_asm_elementwise(INT_F16, ONE_IN, [words], dtype=EIGHT_F16, is_pure=True, pack=1)
        a0 = gl.join(gl.join(v[0], v[1]), gl.join(v[2], v[3]))
        a1 = gl.join(gl.join(v[4], v[5]), gl.join(v[6], v[7]))
        if NB == 4:
            j8 = gl.reshape(gl.join(a0, a1), [TK, 4, 8, 4, 4, 2, 2, 2])  # [tk, nb, c, q, w, b, h, a]
            wt = gl.reshape(gl.permute(j8, [4, 1, 5, 2, 0, 6, 3, 7]), [256, 16 * TK])  # R = (w nb b c), k = (t h q a)
        else:
            j9 = gl.reshape(gl.join(a0, a1), [TK, 2, 8, 4, 2, 2, 2, 2, 2])  # [tk, nb, c, q, w_hi, w_lo, b, h, a]
            wt = gl.reshape(gl.permute(j9, [5, 1, 4, 6, 2, 0, 7, 3, 8]), [128, 16 * TK])  # R = (w_lo nb w_hi b c)
        wt = gl.convert_layout(wt, DA, assert_trivial=True)
        xb = xsm.index(slot).slice(16 * TK * tc, 16 * TK, dim=1).permute((1, 0))
        p = warpgroup_mma(wt, xb, p, use_acc=tc > 0, is_async=True)
        p = warpgroup_mma_wait(num_outstanding=ASYNC, deps=(p,))  # chunk tc - ASYNC's registers are free
    return warpgroup_mma_wait(num_outstanding=0, deps=(p,))


@gluon.jit
def _wg_store(acc, out_ptr, M, N, tile, step, spt, programs, total, pid, PARTIAL: gl.constexpr, NB: gl.constexpr,
              ACC: gl.constexpr):
    """Store a warpgroup kernel's sums of `tile`: float16 to out, or (PARTIAL) float32 to the workspace row of
    this program's place among the tile's programs. The offsets are made here from a value the compiler cannot
    prove zero (`step >> 31`), so that they are not hoisted out of the loop and held in 32 registers across it."""
    z = step >> 31
    rr = gl.arange(0, 64 * NB, layout=gl.SliceLayout(1, ACC)) + z
    om = gl.arange(0, 16, layout=gl.SliceLayout(0, ACC)) + z
    if NB == 4:  # the column 64 nb + 16 w + 8 b + c of row R
        col0 = 64 * ((rr // 16) % 4) + 16 * (rr // 64) + 8 * ((rr // 8) % 2) + rr % 8
    else:
        col0 = 64 * ((rr // 32) % 2) + 16 * (2 * ((rr // 16) % 2) + rr // 64) + 8 * ((rr // 8) % 2) + rr % 8
    off0 = gl.expand_dims(om, 0) * N + gl.expand_dims(col0, 1)
    ok = gl.expand_dims(om < M, 0)
    if PARTIAL:
        first = ((tile * spt + 1) * programs - 1) // total
        gl.store(out_ptr + (pid - first) * M * N + tile * 64 * NB + off0, acc, mask=ok)
    else:
        gl.store(out_ptr + tile * 64 * NB + off0, acc.to(gl.float16), mask=ok)


@gluon.jit
def gemm16_kernel(x_ptr, b_ptr, b_desc, s32_ptr, out_ptr, M, N, stride_xm, spt, programs,
                  W: gl.constexpr, S: gl.constexpr, TK: gl.constexpr, PARTIAL: gl.constexpr, SACC: gl.constexpr,
                  SPRE: gl.constexpr, TMA: gl.constexpr):
    """x `[M <= 16, K]` times the Marlin layer (`B` int32 `[K/16, 2N]`, `s32` its group-128 scales viewed as int32
    pairs `[K/128, N/2]`) on a balanced grid: the work is column tiles of 64 W columns times `spt` steps of 128 k,
    in that order; program `pid` of `programs` takes the contiguous range `[pid total / programs, (pid + 1) total /
    programs)` of it in one pipeline, and stores the sums of each tile it touched: float16 to out when PARTIAL is
    off (one program a tile), else float32 to workspace row `pid - first program of that tile` (`[segments, M,
    N]`, summed by `segment_reduce_kernel`). SPRE: the next unit's scales are loaded a unit ahead."""
    pid = gl.program_id(0)
    total = (N // (64 * W)) * spt
    start = (pid * total) // programs
    end = ((pid + 1) * total) // programs
    L3: gl.constexpr = gl.BlockedLayout([8, 1, 4], [1, 32, 1], [1, W, 1], [2, 0, 1])  # words [t, (nb c q), w]
    LC: gl.constexpr = gl.BlockedLayout([TK, 1, 4], [1, 32, 1], [1, W, 1], [2, 0, 1])  # TK tile rows of them
    LX: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [W, 1], [1, 0])  # x [16, 128], 16 bytes a thread
    MMA: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[1, W], instr_shape=[16, 8])
    DA: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    DB: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=MMA, k_width=2)
    WSM: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[2, 1, 0])
    XSM: gl.constexpr = gl.SwizzledSharedLayout(8, 1, 8, order=[1, 0])

    word_off, x_off, x_ok = _copy_offsets(N, stride_xm, M, 32 * W, L3, LX)

    jc = gl.arange(0, 32 * W, layout=gl.SliceLayout(0, gl.SliceLayout(2, LC)))
    wc = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, LC)))
    # the scale pair (b = 0, 1) of word (nb, c, w): int32 32 nb + 4 c + w of the tile's group row
    s_off = 4 * (gl.expand_dims(gl.expand_dims(jc, 0), 2) // 4) + gl.expand_dims(gl.expand_dims(wc, 0), 1)

    if TMA:
        wsm = gl.allocate_shared_memory(gl.int32, [S, 8, 32 * W, 4], b_desc.layout)
    else:
        wsm = gl.allocate_shared_memory(gl.int32, [S, 8, 32 * W, 4], WSM)
    bars = gl.allocate_shared_memory(gl.int64, [S, 1], mbarrier.MBarrierLayout())
    if TMA:
        for b in gl.static_range(S):
            mbarrier.init(bars.index(b), count=1)
    xsm = gl.allocate_shared_memory(gl.float16, [S, 16, 128], XSM)
    itile, istep = _prologue(wsm, xsm, bars, b_ptr, b_desc, x_ptr, word_off, x_off, x_ok, N, start, end, spt, S, W,
                             TMA)  # the next unit to issue

    s16_ptr = s32_ptr.to(gl.pointer_type(gl.float16))
    sp_ = gl.arange(0, 64 * W, layout=_scale_layout(W))
    tile = start // spt
    step = start - tile * spt
    if SACC:
        sf = _acc_scales(s16_ptr, step * N + tile * 64 * W, sp_, W, MMA)
    else:
        sp = gl.load(s32_ptr + step * (N // 2) + tile * 32 * W + s_off)  # [1, 32 W, 4]
    acc = gl.zeros([16, 64 * W], gl.float32, MMA)
    slot = 0
    islot = S - 1
    phase = 0
    for u in range(start, end):
        async_copy.wait_group(S - 2)
        if TMA:
            mbarrier.wait(bars.index(slot), phase)
        gl.thread_barrier()  # every thread's copies of unit u are in; every thread has read unit u - 1's slot
        if u + S - 1 < end:
            _issue(wsm, xsm, bars, islot, b_ptr, b_desc, x_ptr, word_off, x_off, x_ok, N, itile, istep, W, TMA)
        async_copy.commit_group()
        itile, istep = _next(itile, istep, spt)
        islot = gl.where(islot == S - 1, 0, islot + 1)
        if SPRE:  # this unit's scales were loaded a unit ahead; load the next unit's
            tn, sn = _next(tile, step, spt)
            more = u + 1 < end
            tn = gl.where(more, tn, tile)
            sn = gl.where(more, sn, step)
            if SACC:
                sf_next = _acc_scales(s16_ptr, sn * N + tn * 64 * W, sp_, W, MMA)
            else:
                sp_next = gl.load(s32_ptr + sn * (N // 2) + tn * 32 * W + s_off)
        else:
            if SACC:
                sf = _acc_scales(s16_ptr, step * N + tile * 64 * W, sp_, W, MMA)
            else:
                sp = gl.load(s32_ptr + step * (N // 2) + tile * 32 * W + s_off)
        if SACC:
            p = gl.zeros([16, 64 * W], gl.float32, MMA)
        else:
            p = acc
        for tc in gl.static_range(8 // TK):
            words = wsm.index(slot).slice(tc * TK, TK, dim=0).load(LC)
            if SACC:  # the exact integers code - 8; the step's float32 sums are scaled below
                v = gl.inline_asm_elementwise(INT_F16, ONE_IN, [words], dtype=EIGHT_F16, is_pure=True, pack=1)
            else:
                words, spb = gl.broadcast(words, sp)
                v = gl.inline_asm_elementwise(DEQUANT_F16, TWO_IN, [words, spb], dtype=EIGHT_F16, is_pure=True,
                                              pack=1)  # output 4a + 2h + b
            a0 = gl.join(gl.join(v[0], v[1]), gl.join(v[2], v[3]))  # [.., b, h] of a = 0
            a1 = gl.join(gl.join(v[4], v[5]), gl.join(v[6], v[7]))
            j_all = gl.join(a0, a1)  # [tk, (nb c q), w, b, h, a]
            j8 = gl.reshape(j_all, [TK, W, 8, 4, 4, 2, 2, 2])  # [tk, nb, c, q, w, b, h, a]
            wt = gl.reshape(gl.permute(j8, [0, 6, 3, 7, 4, 5, 1, 2]), [16 * TK, 64 * W])  # k = (t h q a), n' = (w b nb c)
            wt = gl.convert_layout(wt, DB, assert_trivial=True)
            xa = xsm.index(slot).slice(16 * TK * tc, 16 * TK, dim=1).load(DA)
            p = mma_v2(xa, wt, p)
        if SACC:
            acc += p * gl.expand_dims(sf, 0)
        else:
            acc = p
        if SPRE:
            if SACC:
                sf = sf_next
            else:
                sp = sp_next
        if (step == spt - 1) | (u == end - 1):  # the tile's last unit, or the range's
            z = step >> 31  # zero, unknown to the compiler: the offsets are made here, not held across the loop
            om = gl.arange(0, 16, layout=gl.SliceLayout(1, MMA)) + z
            on = gl.arange(0, 64 * W, layout=gl.SliceLayout(0, MMA)) + z
            col0 = 64 * ((on // 8) % W) + 16 * (on // (16 * W)) + 8 * ((on // (8 * W)) % 2) + on % 8  # column n'
            off0 = gl.expand_dims(om, 1) * N + gl.expand_dims(col0, 0)
            ok = gl.expand_dims(om < M, 1)
            if PARTIAL:
                first = ((tile * spt + 1) * programs - 1) // total  # the tile's first program
                gl.store(out_ptr + (pid - first) * M * N + tile * 64 * W + off0, acc, mask=ok)
            else:
                gl.store(out_ptr + tile * 64 * W + off0, acc.to(gl.float16), mask=ok)
            acc = gl.zeros([16, 64 * W], gl.float32, MMA)
        tile, step = _next(tile, step, spt)
        phase = gl.where(slot == S - 1, phase ^ 1, phase)
        slot = gl.where(slot == S - 1, 0, slot + 1)


@gluon.constexpr_function
def _row_scale_layout(nb):
    """`_scale_layout` for the warpgroup kernel: the scales of rows R in their stored order p = 64 nb + 8 c + 2 w + b,
    each thread holding the contiguous ones of its rows (NB 4: R = c + 8 b + 16 nb + 64 w, 8 a thread, one 16-byte
    load; NB 2: R = c + 8 b + 16 (w // 2) + 32 nb + 64 (w % 2), 4 a thread, one 8-byte load)."""
    nb = int(getattr(nb, "value", nb))
    if nb == 4:
        return gl.DistributedLinearLayout(reg_bases=[[1], [2], [4]], lane_bases=[[0], [0], [8], [16], [32]],
                                          warp_bases=[[64], [128]], block_bases=[], shape=[256])
    return gl.DistributedLinearLayout(reg_bases=[[1], [2]], lane_bases=[[0], [0], [8], [16], [32]],
                                      warp_bases=[[4], [64]], block_bases=[], shape=[128])


@gluon.jit
def _wg_body(x_ptr, b_ptr, s32_ptr, out_ptr, M, N, stride_xm, spt, programs, S: gl.constexpr, TK: gl.constexpr,
             PARTIAL: gl.constexpr, ASYNC: gl.constexpr, NB: gl.constexpr, TRIGGER: gl.constexpr,
             LOADS_ONLY: gl.constexpr):
    """`gemm16_wg_kernel`'s body (N, stride_xm, spt and programs runtime values or, from `gemm16_wgc_kernel`,
    constants)."""
    if TRIGGER:
        gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [], dtype=gl.int32,
                                  is_pure=False, pack=1)
    W: gl.constexpr = 4
    pid = gl.program_id(0)
    total = (N // (64 * NB)) * spt
    start = (pid * total) // programs
    end = ((pid + 1) * total) // programs
    # the copies: words [t, (nb c q), w] (NB 2: two warps a block, four tile rows each), x 16 bytes a thread
    L3: gl.constexpr = gl.BlockedLayout([2 * NB, 1, 4], [1, 32, 1], [4 // NB, NB, 1], [2, 0, 1])
    LX: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [W, 1], [1, 0])
    ACC: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 16, 16])
    WSM: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[2, 1, 0])
    XSM: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=min(32 * TK, 128), element_bitwidth=16, rank=2)
    word_off, x_off, x_ok = _copy_offsets(N, stride_xm, M, 32 * NB, L3, LX)

    wsm = gl.allocate_shared_memory(gl.int32, [S, 8, 32 * NB, 4], WSM)
    xsm = gl.allocate_shared_memory(gl.float16, [S, 16, 128], XSM)
    bars = gl.allocate_shared_memory(gl.int64, [S, 1], mbarrier.MBarrierLayout())
    itile, istep = _prologue(wsm, xsm, bars, b_ptr, b_ptr, x_ptr, word_off, x_off, x_ok, N, start, end, spt, S, NB,
                             False)

    s16_ptr = s32_ptr.to(gl.pointer_type(gl.float16))
    sp_ = gl.arange(0, 64 * NB, layout=_row_scale_layout(NB))
    tile = start // spt
    step = start - tile * spt
    acc = gl.zeros([64 * NB, 16], gl.float32, ACC)
    slot = 0
    islot = S - 1
    for u in range(start, end):
        async_copy.wait_group(S - 2)
        gl.thread_barrier()
        if u + S - 1 < end:
            _issue(wsm, xsm, bars, islot, b_ptr, b_ptr, x_ptr, word_off, x_off, x_ok, N, itile, istep, NB, False)
        async_copy.commit_group()
        itile, istep = _next(itile, istep, spt)
        islot = gl.where(islot == S - 1, 0, islot + 1)
        if not LOADS_ONLY:
            sf = _wg_scales(s16_ptr, N, tile, step, sp_, NB, ACC)
            acc += _wg_unit(wsm, xsm, slot, TK, ASYNC, NB, ACC) * gl.expand_dims(sf, 1)
        if (step == spt - 1) | (u == end - 1):
            _wg_store(acc, out_ptr, M, N, tile, step, spt, programs, total, pid, PARTIAL, NB, ACC)
            acc = gl.zeros([64 * NB, 16], gl.float32, ACC)
        tile, step = _next(tile, step, spt)
        slot = gl.where(slot == S - 1, 0, slot + 1)



@gluon.jit
def gemm16_wg_kernel(x_ptr, b_ptr, s32_ptr, out_ptr, M, N, stride_xm, spt, programs,
                     S: gl.constexpr, TK: gl.constexpr, PARTIAL: gl.constexpr, ASYNC: gl.constexpr = 1,
                     NB: gl.constexpr = 4, TRIGGER: gl.constexpr = False, LOADS_ONLY: gl.constexpr = False):
    """`gemm16_kernel` (balanced grid, exact `code - 8`, float32 sums scaled a step) on `wgmma` with the operands
    swapped: one warpgroup a program, 64 NB columns (NB 4 or 2 blocks of 64), `out.T = W x.T`. The decoded
    weights are the register A operand `[64 NB, 16 TK]`; its rows R name column n = 64 nb + 16 w + 8 b + c so that
    each thread decodes exactly the words it read (NB 4: R = c + 8 b + 16 nb + 64 w, warp nb, the four words of
    a thread's 16 bytes the four m64 repetitions, `LDS.128`; NB 2: R = c + 8 b + 16 (w // 2) + 32 nb + 64 (w % 2),
    `LDS.64`); x's tile in shared memory is the B operand. TRIGGER: `griddepcontrol.launch_dependents` first (the
    reduce, launched with `launch_pdl`, waits for this kernel). LOADS_ONLY: the ring's copies and waits without the
    decode, the `wgmma` and the scales (zeros stored): the memory pipeline's own time."""
    _wg_body(x_ptr, b_ptr, s32_ptr, out_ptr, M, N, stride_xm, spt, programs, S, TK, PARTIAL, ASYNC, NB, TRIGGER,
             LOADS_ONLY)


@gluon.jit
def gemm16_wgc_kernel(x_ptr, b_ptr, s32_ptr, out_ptr, M, N: gl.constexpr, stride_xm: gl.constexpr,
                      spt: gl.constexpr, programs: gl.constexpr, S: gl.constexpr, TK: gl.constexpr,
                      PARTIAL: gl.constexpr, ASYNC: gl.constexpr = 1, NB: gl.constexpr = 4,
                      TRIGGER: gl.constexpr = False, LOADS_ONLY: gl.constexpr = False):
    """`gemm16_wg_kernel` compiled for one layer and grid (`--const 1`): N, x's row stride, the steps a tile and the
    programs constants, so that the copies' addresses and the grid's divisions fold."""
    _wg_body(x_ptr, b_ptr, s32_ptr, out_ptr, M, N, stride_xm, spt, programs, S, TK, PARTIAL, ASYNC, NB, TRIGGER,
             LOADS_ONLY)

@gluon.jit
def _ws_loader(b_ptr, x_ptr, M, N, stride_xm, spt, start, end, wsm, xsm, ready, empty, S: gl.constexpr):
    """The warp-specialized kernel's loader (one warp): for each unit of the range, wait until its ring slot is
    empty, then `cp.async` its words and x tile there; each lane's copies arrive on the slot's `ready` barrier
    when they land (count 32)."""
    LW: gl.constexpr = gl.BlockedLayout([1, 1, 4], [1, 32, 1], [1, 1, 1], [2, 1, 0])  # words [t, j, w], 16 B a chunk
    LX: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [1, 1], [1, 0])
    word_off, x_off, x_ok = _copy_offsets(N, stride_xm, M, 128, LW, LX)
    for u in range(start, end):
        i = u - start
        slot = i % S
        mbarrier.wait(empty.index(slot), ((i // S) & 1) ^ 1)  # a fresh barrier counts as phase 1 complete
        tile = u // spt
        step = u - tile * spt
        async_copy.async_copy_global_to_shared(
            wsm.index(slot), b_ptr + (step * 8).to(gl.int64) * (2 * N) + tile * 512 + word_off)
        async_copy.async_copy_global_to_shared(xsm.index(slot), x_ptr + step * 128 + x_off, mask=x_ok)
        async_copy.mbarrier_arrive(ready.index(slot), increment_count=False)


@gluon.jit
def _ws_consumer(s32_ptr, out_ptr, M, N, spt, programs, start, end, total, pid, wsm, xsm, ready, empty,
                 S: gl.constexpr, TK: gl.constexpr, PARTIAL: gl.constexpr, ASYNC: gl.constexpr):
    """The warp-specialized kernel's warpgroup: `gemm16_wg_kernel`'s loop without copies or block barriers; it
    waits for each slot's `ready` barrier and releases the slot (`empty`) once its wgmma have read it."""
    ACC: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 16, 16])
    s16_ptr = s32_ptr.to(gl.pointer_type(gl.float16))
    sp_ = gl.arange(0, 256, layout=_row_scale_layout(4))
    tile = start // spt
    step = start - tile * spt
    acc = gl.zeros([256, 16], gl.float32, ACC)
    slot = 0
    phase = 0
    for u in range(start, end):
        sf = _wg_scales(s16_ptr, N, tile, step, sp_, 4, ACC)
        mbarrier.wait(ready.index(slot), phase)
        fence_async_shared()  # x landed by cp.async (generic proxy) is read by wgmma (async proxy)
        p = _wg_unit(wsm, xsm, slot, TK, ASYNC, 4, ACC)
        mbarrier.arrive(empty.index(slot), count=1)
        acc += p * gl.expand_dims(sf, 1)
        if (step == spt - 1) | (u == end - 1):
            _wg_store(acc, out_ptr, M, N, tile, step, spt, programs, total, pid, PARTIAL, 4, ACC)
            acc = gl.zeros([256, 16], gl.float32, ACC)
        tile, step = _next(tile, step, spt)
        phase = gl.where(slot == S - 1, phase ^ 1, phase)
        slot = gl.where(slot == S - 1, 0, slot + 1)


@gluon.jit
def gemm16_ws_kernel(x_ptr, b_ptr, s32_ptr, out_ptr, M, N, stride_xm, spt, programs,
                     S: gl.constexpr, TK: gl.constexpr, PARTIAL: gl.constexpr, ASYNC: gl.constexpr,
                     LOADER_REGS: gl.constexpr):
    """`gemm16_wg_kernel` warp-specialized: a one-warp loader partition fills the ring by `cp.async` and mbarriers
    (`ready` / `empty` a slot), the warpgroup only decodes and multiplies, with no block barrier."""
    pid = gl.program_id(0)
    total = (N // 256) * spt
    start = (pid * total) // programs
    end = ((pid + 1) * total) // programs
    WSM: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[2, 1, 0])
    XSM: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=min(32 * TK, 128), element_bitwidth=16, rank=2)
    wsm = gl.allocate_shared_memory(gl.int32, [S, 8, 128, 4], WSM)
    xsm = gl.allocate_shared_memory(gl.float16, [S, 16, 128], XSM)
    ready = gl.allocate_shared_memory(gl.int64, [S, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [S, 1], mbarrier.MBarrierLayout())
    for b in gl.static_range(S):
        mbarrier.init(ready.index(b), count=32)
        mbarrier.init(empty.index(b), count=1)
    gl.warp_specialize([
        (_ws_consumer, (s32_ptr, out_ptr, M, N, spt, programs, start, end, total, pid, wsm, xsm, ready, empty,
                        S, TK, PARTIAL, ASYNC)),
        (_ws_loader, (b_ptr, x_ptr, M, N, stride_xm, spt, start, end, wsm, xsm, ready, empty, S)),
    ], [1], [LOADER_REGS])


class Gemm16:
    """One launch shape for one layer's `B` and `s` and `m` <= 16 rows: `__call__(x)` -> `[m, N]` float16.
    `per_sm`: programs a multiprocessor (the balanced grid: `per_sm` x the multiprocessors; 0: one a tile,
    `split` > 1: `split` a tile, evenly). A tile is 64 `w` columns (`gemm16_kernel`: a block a warp) or, for the
    warpgroup kernels (`wg`), 64 `nb` columns."""

    def __init__(self, B: torch.Tensor, s: torch.Tensor, m: int, *, w: int = 4, s_: int = 4, tk: int = 2,
                 split: int = 1, sacc: int = 1, regs: int = 0, per_sm: int = 2, spre: int = 0, tma: int = 0,
                 wg: int = 0, ws: int = 0, nb: int = 4, pdl: int = 0, lo: int = 0, const: int = 0) -> None:
        from marlin_convert.runtime._triton_gemm_kernels import segment_reduce_kernel

        k, n = 16 * B.shape[0], B.shape[1] // 2
        steps = k // 128
        blocks = nb if wg else w  # 64-column blocks a tile
        if m > 16 or n % (64 * blocks) or k % 128 or s.shape[0] != steps:
            raise ValueError("1-16 rows, N a multiple of a tile, K of 128, group 128")
        if wg and (w != 4 or nb not in (2, 4) or (ws and nb != 4)):
            raise ValueError("the warpgroup kernels: 4 warps, 2 or 4 blocks a tile (the warp-specialized one: 4)")
        tiles = n // (64 * blocks)
        sms = torch.cuda.get_device_properties(B.device).multi_processor_count if B.is_cuda else 132
        # a balanced grid keeps at least 2 units a program (more programs than units would leave workspace rows
        # that no program writes)
        self.programs = min(per_sm * sms, max(1, tiles * steps // 2)) if per_sm else tiles * split
        self.B, self.s32, self.n, self.k, self.m, self.steps = B, s.view(torch.int32), n, k, m, steps
        self.tile_n = 64 * blocks
        total = tiles * steps
        partial = self.programs != tiles
        self.partial = partial
        self.consts = dict(W=w, S=s_, TK=tk, PARTIAL=partial, SACC=bool(sacc), SPRE=bool(spre), TMA=bool(tma),
                           num_warps=w, **({"maxnreg": regs} if regs else {}))
        self.wg = bool(wg)
        self.wg_consts = dict(S=s_, TK=tk, PARTIAL=partial, ASYNC=wg - 1, num_warps=4,
                              **({"maxnreg": regs} if regs else {}))
        if ws:  # `ws`: the loader's registers
            self.wg_consts["LOADER_REGS"] = ws
        elif wg:
            self.wg_consts["NB"] = nb
            self.wg_consts["TRIGGER"] = bool(pdl)
            self.wg_consts["LOADS_ONLY"] = bool(lo)
        self.const = bool(const and wg and not ws)
        self.pdl = bool(pdl)
        self.b_desc = B
        if tma:
            from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

            b3 = B.view(B.shape[0], B.shape[1] // 4, 4)
            layout = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=3)
            self.b_desc = TensorDescriptor(b3, list(b3.shape), list(b3.stride()), [8, 32 * w, 4], layout)
        self.out = torch.empty(m, n, dtype=torch.float16, device=B.device)
        self.segments = max(((t + 1) * steps * self.programs - 1) // total - (t * steps * self.programs
                                                                                + self.programs - 1) // total + 1
                            for t in range(tiles)) if partial else 1
        self.ws = torch.empty(self.segments, m, n, dtype=torch.float32, device=B.device) if partial else self.out
        self.reduce = segment_reduce_kernel

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        args = (self.m, self.n, x.stride(0), self.steps, self.programs)
        if self.wg:
            if self.const:
                assert x.stride(0) == self.k
                gemm16_wgc_kernel[(self.programs,)](x, self.B, self.s32, self.ws, *args, **self.wg_consts)
            else:
                kernel = gemm16_ws_kernel if "LOADER_REGS" in self.wg_consts else gemm16_wg_kernel
                kernel[(self.programs,)](x, self.B, self.s32, self.ws, *args, **self.wg_consts)
        else:
            gemm16_kernel[(self.programs,)](x, self.B, self.b_desc, self.s32, self.ws, *args, **self.consts)
        if self.partial:
            block = 512
            self.reduce[(-(-self.m * self.n // block),)](
                self.ws, self.ws, self.out, self.m, self.n, self.n, 0, self.steps, self.programs,
                TILE_N=self.tile_n, SEGMENTS=self.segments, BLOCK=block,
                **({"WAIT_PRIOR": True, "launch_pdl": True} if self.pdl else {}))
        return self.out


def _variants(args: argparse.Namespace, n: int, k: int) -> list[dict[str, int]]:
    keys = ("w", "s_", "tk", "split", "sacc", "regs", "per_sm", "spre", "tma", "wg", "ws", "nb", "pdl", "lo",
            "const")
    opts = (args.w, args.s, args.tk, args.split, args.sacc, args.regs, args.per_sm, args.spre, args.tma, args.wg,
            args.ws, args.nb, args.pdl, args.loads, args.const)
    out = [dict(zip(keys, v)) for v in itertools.product(*(_ints(o) for o in opts))]
    steps = k // 128
    return [v for v in out if n % (64 * (v["nb"] if v["wg"] else v["w"])) == 0
            and (v["per_sm"] or steps % v["split"] == 0 or v["const"]) and (v["per_sm"] == 0 or v["split"] == 1)
            and (not v["wg"] or (v["w"] == 4 and (v["nb"] == 4 or not v["ws"])))
            and (v["wg"] or (not v["ws"] and v["nb"] == 4 and not v["pdl"] and not v["lo"]))
            and not (v["ws"] and (v["pdl"] or v["lo"])) and not (v["const"] and (v["ws"] or not v["wg"]))]


def _name(v: dict[str, int]) -> str:
    return "w{w}s{s_}t{tk}k{split}a{sacc}r{regs}p{per_sm}e{spre}m{tma}g{wg}l{ws}b{nb}d{pdl}o{lo}c{const}".format(**v)


def sass(args: argparse.Namespace) -> None:
    import triton
    from triton.experimental.gluon._runtime import GluonASTSource

    import sass_gemm

    for text in args.layers:
        n, k = _shape(text)
        for m, v in itertools.product(_ints(args.rows), _variants(args, n, k)):
            if v["wg"]:
                fn = gemm16_ws_kernel if v["ws"] else gemm16_wg_kernel
                sig = {"x_ptr": "*fp16", "b_ptr": "*i32", "s32_ptr": "*i32", "out_ptr": "*fp32", "M": "i32",
                       "N": "i32", "stride_xm": "i32", "spt": "i32", "programs": "i32", "S": "constexpr",
                       "TK": "constexpr", "PARTIAL": "constexpr", "ASYNC": "constexpr"}
                consts = {"S": v["s_"], "TK": v["tk"], "PARTIAL": True, "ASYNC": v["wg"] - 1}
                if v["ws"]:
                    sig["LOADER_REGS"] = "constexpr"
                    consts["LOADER_REGS"] = v["ws"]
                else:
                    sig["NB"] = sig["TRIGGER"] = sig["LOADS_ONLY"] = "constexpr"
                    consts["NB"], consts["TRIGGER"], consts["LOADS_ONLY"] = v["nb"], bool(v["pdl"]), bool(v["lo"])
                attrs = {(i,): [["tt.divisibility", 16]] for i in (0, 1, 2, 3, 5, 6)}
                if v["const"]:
                    fn = gemm16_wgc_kernel
                    tiles, steps = n // (64 * v["nb"]), k // 128
                    programs = min(v["per_sm"] * 132, max(1, tiles * steps // 2)) if v["per_sm"] else tiles * v["split"]
                    for name, value in (("N", n), ("stride_xm", k), ("spt", steps), ("programs", programs)):
                        sig[name], consts[name] = "constexpr", value
                    attrs = {(i,): [["tt.divisibility", 16]] for i in (0, 1, 2, 3)}
            else:
                fn = gemm16_kernel
                desc = "*i32"
                if v["tma"]:
                    layout = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=3)
                    desc = f"tensordesc<i32[8,{32 * v['w']},4],{layout!r}>"
                sig = {"x_ptr": "*fp16", "b_ptr": "*i32", "b_desc": desc, "s32_ptr": "*i32", "out_ptr": "*fp32",
                       "M": "i32", "N": "i32", "stride_xm": "i32", "spt": "i32", "programs": "i32",
                       "W": "constexpr", "S": "constexpr", "TK": "constexpr", "PARTIAL": "constexpr",
                       "SACC": "constexpr", "SPRE": "constexpr", "TMA": "constexpr"}
                consts = {"W": v["w"], "S": v["s_"], "TK": v["tk"], "PARTIAL": True, "SACC": bool(v["sacc"]),
                          "SPRE": bool(v["spre"]), "TMA": bool(v["tma"])}
                attrs = {(i,): [["tt.divisibility", 16]] for i in (0, 1, 3, 4, 6, 7) if not (v["tma"] and i == 2)}
            src = GluonASTSource(fn, sig, constexprs=consts, attrs=attrs)
            options = {"num_warps": v["w"], **({"maxnreg": v["regs"]} if v["regs"] else {})}
            kernel = triton.compile(src, target=sass_gemm.TARGET, options=options)
            usage = sass_gemm.cuobjdump(kernel.asm["cubin"], "-res-usage")
            code = sass_gemm.cuobjdump(kernel.asm["cubin"], "-sass")
            if args.dump:
                args.dump.mkdir(parents=True, exist_ok=True)
                (args.dump / f"{text}_{m}_{_name(v)}.sass").write_text(code)
                (args.dump / f"{text}_{m}_{_name(v)}.ttgir").write_text(kernel.asm["ttgir"])
            loop = sass_gemm.main_loop(code, marker="HGMMA" if v["wg"] else "HMMA")
            words = 8 * v["nb"] if v["wg"] else 32  # a thread's words a step
            mix = collections.Counter(sass_gemm.opcode(t) for t in loop)
            regs, stack = re.search(r"REG:(\d+)", usage), re.search(r"STACK:(\d+)", usage)
            shared = re.search(r"SHARED:(\d+)", usage)
            print(f"{text} rows={m} {_name(v)}: {regs.group(1) if regs else '?'} registers, "
                  f"{stack.group(1) if stack else '?'} bytes of stack, {shared.group(1) if shared else '?'} shared; "
                  f"loop {len(loop)} instructions a thread, its tile-end stores included ({len(loop) / words:.1f} a word): "
                  + ", ".join(f"{o} {c}" for o, c in mix.most_common(14)))


def check(args: argparse.Namespace) -> None:
    gen = torch.Generator(device="cuda").manual_seed(23)
    failed = []
    for text in args.layers:
        n, k = _shape(text)
        rec, t = _layer(n, k, 128, gen, "cuda")
        g_idx = torch.arange(k, device="cuda") // 128
        w = (rec.codes.full().double() - 8.0) * rec.scales.double()[g_idx].t()
        for m, v in itertools.product(_ints(args.rows), _variants(args, n, k)):
            x = torch.randn(m, k, device="cuda", generator=gen).half()
            ref = x.double() @ w.t()
            y = Gemm16(t["B"], t["s"], m, **v)(x).double()
            # each weight rounded once to fp16 (2**-11 relative), float32 sums, one fp16 rounding of the output
            mag = x.double().abs() @ w.abs().t()
            worst = float(((y - ref).abs() / (2.0**-11 * ref.abs() + (2.0**-11 + k * 2.0**-23) * mag + 1e-30)).max())
            rel = float((y - ref).norm() / ref.norm())
            name = f"{text} rows={m} {_name(v)}"
            print(f"{name}: normwise {rel:.2e}, element bound used {worst:.2f}x", flush=True)
            if not worst <= 1.0:
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
            pdl = [_with_pdl(p, True) for p in served]
            wait = [_with_pdl(p, False) for p in served]
            row: dict[str, Any] = {"shape": text, "m": m,
                                   "served": round(graph_time_us([lambda p=p: p(x) for p in served]), 1),
                                   "served_pdl": round(graph_time_us([lambda p=p: p(x) for p in pdl]), 1),
                                   "served_pdl_wait": round(graph_time_us([lambda p=p: p(x) for p in wait]), 1),
                                   "dense": round(graph_time_us([lambda w=w: F.linear(x, w) for w in dense]), 1)}
            row["pdl_equal"] = all(torch.equal(p(x).float(), ref) for p in (pdl[0], wait[0]))
            times = {}
            for v in _variants(args, n, k):
                try:
                    gs = [Gemm16(t["B"], t["s"], m, **v) for t in layers]
                    y = gs[0](x).float()
                except Exception as exc:  # a variant that does not compile or fit: say so, go on
                    times[_name(v)] = f"{type(exc).__name__}: {str(exc)[:120]}"
                    continue
                diff = float((y - ref).abs().max() / ref.abs().max())
                if diff > 2e-3:
                    row[_name(v) + "_diff"] = diff
                times[_name(v)] = round(graph_time_us([lambda g=g: g(x) for g in gs]), 1)
            num = {key: val for key, val in times.items() if isinstance(val, float)}
            row["best"] = sorted(num.items(), key=lambda kv: kv[1])[:6]
            row["all"] = times
            print(json.dumps(row), flush=True)


def _with_pdl(plan: Any, trigger: bool) -> Any:
    """`plan` with its reduce launched by programmatic dependent launch (`launch_pdl`, `WAIT_PRIOR`) and, with
    `trigger`, its first kernel letting it launch at once (`TRIGGER`); diff-checked against the plan."""

    from marlin_convert.runtime.triton_launch import Launch

    first, *rest = plan.launches
    if not rest:
        return plan
    takes = any(p.name == "TRIGGER" for p in first.fn.params)
    consts = {**first.consts, **({"TRIGGER": trigger} if takes else {})}
    launches = [Launch(first.fn, first.grid, first.args, consts, first.device_index)]
    launches += [Launch(r.fn, r.grid, r.args, {**r.consts, "WAIT_PRIOR": True, "launch_pdl": True}, r.device_index)
                 for r in rest]
    return dataclasses.replace(plan, launches=tuple(launches))


def profile(args: argparse.Namespace) -> None:
    """The served plan and each variant once inside a CUDA profiler range, for Nsight Compute (`ncu
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
            calls += [lambda x=x, g=Gemm16(t["B"], t["s"], m, **v): g(x) for v in _variants(args, n, k)]
    profile_once(calls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("sass", "check", "bench", "profile"))
    ap.add_argument("layers", nargs="+", help="NxK (symmetric, group 128)")
    ap.add_argument("--rows", default="16")
    ap.add_argument("--w", default="4", help="warps a program (64 columns each)")
    ap.add_argument("--s", default="4", help="ring slots (steps of 128 k in flight + 1)")
    ap.add_argument("--tk", default="2", help="tile rows (16 k) decoded at a time")
    ap.add_argument("--split", default="1", help="K splits of each tile (with --per-sm 0; uneven with --const 1: the "
                                                 "balanced grid of tiles x split programs, each within one tile)")
    ap.add_argument("--per-sm", default="2", help="balanced grid: programs a multiprocessor (0: a tile's splits)")
    ap.add_argument("--spre", default="0", help="1: scales loaded a unit ahead")
    ap.add_argument("--tma", default="0", help="1: the words through TMA (mbarrier ring)")
    ap.add_argument("--wg", default="0", help="1, 2: the warpgroup (wgmma) kernel, operands swapped, waiting for "
                                                "all but wg - 1 chunks' wgmma before decoding the next")
    ap.add_argument("--nb", default="4", help="with --wg: 64-column blocks a tile (4, or 2: 8-byte word loads)")
    ap.add_argument("--ws", default="0", help="with --wg: warp-specialized, this many registers for the loader warp")
    ap.add_argument("--sacc", default="1", help="1: exact code - 8, the step's float32 sums scaled; 0: scaled in fp16")
    ap.add_argument("--regs", default="0", help="a cap on registers a thread (0: none)")
    ap.add_argument("--pdl", default="0", help="with --wg (not --ws): 1, the reduce by programmatic dependent launch")
    ap.add_argument("--loads", default="0", help="with --wg (not --ws): 1, the copies and waits only (bench: a floor)")
    ap.add_argument("--const", default="0", help="with --wg and --per-sm (not --ws): 1, N, x's stride, the steps a "
                                                 "tile and the programs compiled in (`gemm16_wgc_kernel`)")
    ap.add_argument("--dump", type=Path)
    args = ap.parse_args()
    {"sass": sass, "check": check, "bench": bench, "profile": profile}[args.what](args)


if __name__ == "__main__":
    main()
