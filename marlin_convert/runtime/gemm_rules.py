"""The Triton GEMM's launch rules (issue #13): which launch shape (`KernelConfig`) a call of m rows of an N x K
layer gets, from the benchmarks of the GEMM rounds (BENCHMARKS.md). Pure: shapes and counts in, configs out (the
multiprocessor count is an argument); `triton_gemm.plan` turns a config into launches. `triton_gemm` re-exports
the public ones (`__all__`).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

__all__ = ["KernelConfig", "pick_config", "for_eager", "EAGER_ONE_LAUNCH_MAX", "split_for", "one_wave_split",
           "group_steps", "balance_pays", "gemv_config", "gemv_fits", "GEMV_ZMODES", "GEMV_DTYPES",
           "reduced_sums_allowed"]

_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class KernelConfig:
    """One launch shape: rows of x (BM), tile rows of B (BT, 16 k each), 64-column blocks (NB), warps,
    pipeline stages, and the split of K over programs (1: none)."""

    bm: int
    bt: int
    nb: int
    warps: int = 4
    stages: int = 3
    split_k: int = 1
    fast: bool = True
    """The packed-half kernel (`marlin_gemm_swap_kernel`, `out.T = W x.T`: the decoded weights are the first
    operand, so sm_90 `wgmma` takes them from registers; the words loaded as they lie) where the scales (and
    shift) have the activation dtype; False: always the float32 eight-dot kernel (`marlin_gemm_kernel`)."""
    xperm: bool = False
    """Fast kernel under act-order: gather x by `perm` once per call (`index_select`), else per tile in the kernel."""
    scale_acc: bool = True
    """Fast kernel, where a step lies in one group and there is no quanto shift: dequantize to the exact
    integers `code - zero` and scale each step's float32 sums (`SCALE_ACC`); False: scale every weight."""
    maxnreg: int = 0
    """Fast kernel: a cap on registers a thread (Triton's `maxnreg`; 0: none), to fit more programs a
    multiprocessor."""
    fold: bool = False
    """Fast kernel with `scale_acc`, Marlin zero points: decode the symmetric `code - 8` and add
    `(8 - zero) * scale * sum_k x` per group after the dot (`FOLD`), instead of decoding `code - zero`: the
    symmetric decode's registers, for the price of a sum of x a step (round 11: faster up to 16 rows,
    slower at 64 and more; with `zlate`, faster at 128-row tiles, round 13)."""
    tma: bool = False
    """Fast kernel: load the words through a TMA tensor descriptor (`[BT, 128 NB]` boxes of `B`)."""
    zpre: bool = False
    """Fast kernel with `fold`: load the next step's scales and zero-point words a step ahead."""
    xsum: bool = False
    """Fast kernel with `fold`, groups: the sums of x over each step's k computed once per call (one
    `torch.sum`) and loaded a step, instead of summed from the x tile in the kernel (`zlate` implies it; up to 16
    rows no rule takes it since GEMM round 19: under the 128-register cap the loads spilled, the in-kernel sum
    does not)."""
    zlate: bool = False
    """Fast kernel with `fold`, groups, x not gathered by `perm` in the kernel: the steps' loop is the
    symmetric one, and the zero-point terms of all steps are added after it, 16 steps to a float32 `dot`,
    from the sums of x per step of `xsum` (which it implies; `zpre` then has no effect)."""
    zred: bool = False
    """Fast kernel with `scale_acc`, Marlin zero points, groups, x not gathered by `perm` in the kernel: run
    the symmetric kernel (weights `code - 8`, `zmode` 0) into float32 partials, K split or not, and add the
    zero points' terms `e * sum_k x` per group in the reduce (`splitk_zero_reduce_kernel`: a float32 `dot`
    of the sums of x per group, from one `torch.sum` a call, by `e = (8 - zero) * scale`); `fold` and the
    other zero-point fields then have no effect. Measured slower than the rule's shapes at every batch and
    shape of round 14 (1.01-2.2x the time: the reduce's loop over all groups is latency-bound), so no rule
    picks it."""
    balance: int = 0
    """Fast kernel (not `zred`): a balanced grid of about this many programs a multiprocessor per row tile
    of x instead of the (column tile, row tile, split) grid; each sums an equal contiguous range of all
    column tiles' steps (so a range may end inside a tile and the next begin there), its partial sums go to
    the workspace, and `segment_reduce_kernel` adds each tile's in order. 0: the split grid; negative:
    exactly `-balance` programs per row tile (tests: ranges that cross column tiles)."""
    pdl: bool = False
    """sm_90+, where the call ends in `splitk_reduce_kernel` (a K split of the fast kernel's grid, or the GEMV): the
    reduce is launched by programmatic dependent launch (`launch_pdl`), so it starts while the kernel before it
    ends (that kernel's `TRIGGER`, the reduce's `WAIT_PRIOR`); elsewhere no effect (`pick_config` and
    `gemv_config` say where, GEMM round 25)."""
    gemv: bool = False
    """One row of float16 or bfloat16 x, symmetric or Marlin zero points, group 128 or one group: the CUDA-core GEMV
    (`marlin_gemv_kernel`, fp16 product chains: `gemv_config`) on a (column tile of 64 `nb`, split) grid,
    `split_k` splits of the steps (need not divide them), its float32 partials summed by the reduce kernel;
    `bm`, `bt`, `warps`, `stages` and the other fields are ignored (4 warps, 128 k a step)."""


REDUCE_BLOCK_MIN, REDUCE_BLOCK_MAX = 128, 1024


def _reduce_block(outputs: int, sms: int) -> int:
    """Outputs a program of the split-K or balanced grid's reduce sums (`splitk_reduce_kernel`'s and
    `segment_reduce_kernel`'s BLOCK): `REDUCE_BLOCK_MAX`, or fewer (a power of two, at least `REDUCE_BLOCK_MIN`)
    so that there is a program per multiprocessor. At one row, 1024 a program left 8 programs for N = 8192 (ncu,
    GEMM round 17)."""
    block = REDUCE_BLOCK_MAX
    while block > REDUCE_BLOCK_MIN and outputs // block < sms:
        block //= 2
    return block


@functools.lru_cache(maxsize=4096)
def pick_config(m: int, n: int, k: int, group_size: int, sms: int = 132, zmode: int = 0) -> KernelConfig:
    """(Memoized: a pure function of its arguments, and called eagerly a GEMM is host-bound, GEMM round 14.)
    The launch shape for an `[m, k] x [k, n]` product: the best of scripts/bench_gemm.py's sweeps on an
    H200 (2026-12-02, BENCHMARKS.md rounds 8 and 9: N x K = 28672x8192, 8192x28672, 4096x4096, 14336x4096,
    4096x14336, fp16 / bf16, symmetric, group 128), all the swapped kernel (`marlin_gemm_swap_kernel`: the
    decoded weights as wgmma's register operand). Up to 16 rows: 16 x 128 tiles (16 rows of x, 128 k a step)
    capped at 128 registers for symmetric layers (4 programs a multiprocessor instead of 3), K split until there
    are about 2 programs per multiprocessor (one wave of 4, keeping 4 steps a split); up to 64 rows: 64 x 128 tiles,
    or 64 x 64 for layers of at most 2**26 weights (faster on the three such shapes, slower on the two
    larger ones), K split up to about one program per multiprocessor (keeping 8 steps a split); above:
    128 x 128 tiles of 8 warps, K split up to about half a program per multiprocessor (where N = 4096 at
    256 rows: 64 programs, split 2); round 21 re-splits the smaller layers of both. x gathered
    once under act-order (`xperm`) above 16 rows, and up to 16 rows for layers of more than 2**26 weights
    (round 10: 52-56 us instead of 62-195 at 1-16 rows of 28672x8192 / 8192x28672; on 4096x4096 and 1024x4096
    the gather's two extra launches made it 0.58-0.70x as fast at one row, so smaller layers look perm up in
    the kernel).

    Groups of 32 and 64 take one group a step (`BT` = group_size / 16, `group_steps`), with more pipeline
    stages for the smaller steps: a step of 128 k then spans 2-4 groups, and Triton 3.6 compiled that loop
    (a scale per tile row) with the decoded weights staged through shared memory and the scale loads
    unpipelined, 4-9x slower than group 128 (round 10).

    `zmode`: 0 symmetric, 1 Marlin zero points, 2 quanto's shift. Zero points of groups of 128 or K, up to
    16 rows: folded in after the dot (`fold`), under the 128-register cap for layers of more than 2**26
    weights (round 11; sm_90 ptxas: 128 registers, 8 bytes spilled; 168 uncapped). The shift, zero points
    of groups of 32 / 64 and zero points at 17-64 rows are not folded (it measured slower there; above 64
    rows, see round 13) and not capped (decoding `code - zero` takes 156 registers, the shift 127).

    Round 12 (`tma`, `zpre`, `xsum`): symmetric group 128 reads its words through a TMA descriptor up to 16
    rows, and up to 64 rows above 2**26 weights (1.00-1.06x; at 64 rows of 4096x4096 and 14336x4096 it
    measured 0.80-0.96x). Folded zero points of group 128 above 2**25 weights also read through TMA, load
    the next step's scales and zero words a step ahead and take the sums of x per step from one `torch.sum`
    per call (1.03-1.14x on 28672x8192, 8192x28672 and 14336x4096; on 4096x4096 the extra launch made
    them 0.92-0.93x).

    Round 13 (`zlate`): zero points of group 128 above 64 rows and 2**25 weights are folded too, their terms
    added after the symmetric loop, 16 steps to a float32 `dot` (1.16-1.38x at 256 rows of 28672x8192,
    8192x28672 and 14336x4096; on 4096x4096 0.95x fp16, 1.06x bf16). Not at 64 rows (0.66-1.06x) nor up to
    16 rows (0.72-0.98x against the in-loop fold).

    Round 18 (`balance`): up to 16 rows, group 128 or one group, symmetric or zero points, a balanced grid of
    the programs the GPU holds at once where `balance_pays` (one row: 0.92-0.95x the time on 28672x8192,
    0.84-0.94x for the zero points of 8192x8192, 14336x4096 and 4096x14336, 0.58-0.74x on 3584x18944, whose
    148 steps split only 4 ways; within +-4 % at 16 rows on the shapes it takes); from 17 to 64 rows, big layers
    only, 2 programs a multiprocessor, where it promises at most `BALANCE_GAIN_WIDE` of the split grid's time
    (5120x27648, 3584x18944 and 18944x3584: 0.63-0.92x).

    Round 19: up to 16 rows, folded zero points of group 128 above 2**25 weights run under the 128-register cap
    (4 programs a multiprocessor, so `balance_pays` counts 4) and sum x per step from the x tile (`xsum` off): with
    the fold's two fused multiply-adds the kernel spills nothing at 128 registers, where before it spilled (above
    2**26 weights) or ran uncapped at 168 (3 a multiprocessor). 0.85-0.98x the time on the ten shapes
    timed, fp16 and bf16, 1-16 rows.

    Round 20: up to 16 rows, group 128 or one group, symmetric or zero points, a split grid that leaves the GPU
    mostly idle (`RESPLIT_BELOW`) is re-split to one wave of programs of at least 2 steps (`one_wave_split`):
    0.54-0.97x the time on 512x3584, 1024x4096, 1024x5120, 2048x3584, 3584x3584, 4096x1024, 4608x3584 and
    512x8192 (0.92-1.01x at 16 rows of 3584x3584), 0.14-0.23x on 256x11008, whose 86 steps the power-of-two split
    ran as 2; 1024x14336: zero points 0.93-0.97x, symmetric level (0.97-1.03x).

    Round 21: the same for layers of at most 2**26 weights above 16 rows, group 128 or one group, symmetric or
    zero points. From 17 to 64 rows a split grid that leaves the GPU mostly idle is re-split by `one_wave_split` on
    3 places a multiprocessor (166 registers), one more split costing a twelfth of a step per 16 rows of x:
    0.38-1.01x the time on 512x3584, 1024x4096, 2048x3584, 3584x3584, 4608x3584, 1024x8192, 1024x14336 and 2048x4096
    (0.19-0.27x on 256x11008), fp16 / bf16, 17, 32 and 64 rows. Above 64 rows K is split to the one wave of at most
    one program a multiprocessor over all tiles (`split_for` gave half a program a multiprocessor and 8 steps a
    split): 0.14-0.79x the time where it changed the split at 128-512 rows of 512x3584, 1024x4096, 1536x4096,
    2048x3584, 3584x3584 and 256x11008, level where it did not.

    Round 25 (`pdl`, sm_90+): where a call ends in the split-K reduce, up to 16 rows (and from 17 to 64 rows on
    layers of at most `PDL_WIDE_MAX_WEIGHTS` weights), the reduce is launched by programmatic dependent launch, so
    it starts while the GEMM ends: 0.86-1.00x the time at 1, 2 and 16 rows of 8192x28672, 4096x4096, 14336x4096,
    4096x14336, 1024x4096 and 512x3584, fp16 / bf16, symmetric and zero points (the GEMV too: 0.94-0.99x), but
    1.02x at 16 rows of 4096x14336 fp16. Not with a balanced grid (level at best; its GEMM triggering the reduce
    early made it up to 1.15x slower)."""
    bt, stages = group_steps(group_size)
    grouped = bt == 8 and group_size < k  # group 128
    big = n * k > 1 << 26
    if m <= 16:
        fold = zmode == 1 and bt == 8
        ahead = fold and grouped and n * k > 1 << 25
        cap = 128 if zmode == 0 or (fold and (big or ahead)) else 0
        cfg = KernelConfig(bm=16, bt=bt, nb=2, stages=stages, xperm=big, maxnreg=cap,
                           fold=fold, tma=(grouped and zmode == 0) or ahead, zpre=ahead)
        cfg = dataclasses.replace(cfg, split_k=split_for(cfg, m, n, k, 2 * sms, min_steps=4 * 8 // bt))
        resident = 4 if cap else 3  # programs a multiprocessor holds: 128 registers, or the fold's 168
        tiles_n, steps = _tiles_and_steps(cfg, n, k)
        if bt == 8 and zmode != 2 and _leaves_idle(tiles_n, steps, _even_split(cfg.split_k, steps), sms):
            cfg = dataclasses.replace(cfg, split_k=one_wave_split(tiles_n, steps, resident * sms))
        if bt == 8 and zmode != 2 and balance_pays(cfg, n, k, resident * sms):
            return dataclasses.replace(cfg, balance=resident, split_k=1)
        return dataclasses.replace(cfg, pdl=True)
    if m <= 64:
        cfg = KernelConfig(bm=64, bt=bt, nb=2 if big else 1, stages=stages, xperm=True,
                           tma=big and grouped and zmode == 0)
        cfg = dataclasses.replace(cfg, split_k=split_for(cfg, m, n, k, sms, min_steps=8 * 8 // bt))
        tiles_n, steps = _tiles_and_steps(cfg, n, k)
        split = _even_split(cfg.split_k, steps)
        if not big and bt == 8 and zmode != 2 and split > 1 and _leaves_idle(tiles_n, steps, split, sms):
            cost = ONE_WAVE_SPLIT_COST * -(-m // 16)  # the reduce sums m rows of each partial
            cfg = dataclasses.replace(cfg, split_k=one_wave_split(tiles_n, steps, 3 * sms, cost=cost))  # 166 regs
        if big and bt == 8 and zmode != 2 and balance_pays(cfg, n, k, 2 * sms, BALANCE_GAIN_WIDE):
            return dataclasses.replace(cfg, balance=2, split_k=1)  # 2 programs a multiprocessor (237-248 registers)
        return dataclasses.replace(cfg, pdl=n * k <= PDL_WIDE_MAX_WEIGHTS)
    late = zmode == 1 and grouped and n * k > 1 << 25
    cfg = KernelConfig(bm=128, bt=bt, nb=2, warps=8, stages=stages, xperm=True, fold=late, zlate=late)
    if not big and bt == 8 and zmode != 2:  # one program a multiprocessor at most (round 21)
        tiles_n, steps = _tiles_and_steps(cfg, n, k)
        return dataclasses.replace(cfg, split_k=one_wave_split(tiles_n * -(-m // cfg.bm), steps, sms))
    return dataclasses.replace(cfg, split_k=split_for(cfg, m, n, k, sms // 2, min_steps=8 * 8 // bt))


PDL_WIDE_MAX_WEIGHTS = 1 << 23
"""From 17 to 64 rows, `KernelConfig.pdl` for layers of at most this many weights (GEMM round 25: 0.89-0.95x the
time on 1024x4096 and 512x3584; 0.96-1.02x on 4096x4096 and 4096x14336, 1.02x on 8192x28672)."""

BALANCE_COST_STEPS = 2
"""What a program of a balanced grid pays beyond its share of the steps, counted in steps (a second column
tile's pipeline start, and the reduce of segments), fitted to GEMM round 18's timings."""
BALANCE_GAIN = 0.92
"""A balanced grid is taken where it is expected to take at most this share of the split grid's time (up to 16
rows)."""
BALANCE_GAIN_WIDE = 0.8
"""`BALANCE_GAIN` for 17-64 rows (64-row tiles, 2 programs a multiprocessor), where the model promised more than
the balanced grid gave: 28672 x 8192 and 27648 x 5120 (0.87-0.88 expected) measured 0.96-1.09x."""
RESPLIT_BELOW = 1.25
"""Programs a multiprocessor under which a split grid of up to 16 rows (and, round 21, of 17-64 rows of a layer of
at most 2**26 weights already split), if it leaves more than 4 steps a program
(a power-of-two split of steps that are not: 28, 86, 148) or has fewer than half a program a multiprocessor, is
re-split by `one_wave_split` (GEMM round 20). There a program's steps take longer (about 0.45 us each, a memory
round trip) than the memory takes to stream the whole layer at about 3 TB/s (8 KB a step: all steps / 166
programs' worth), so fewer steps a program pay. 4608x3584 (1.09 programs a multiprocessor, 7 steps) took
0.73-0.90x the time re-split; 4096x4096 (1.94) was level; 1024x8192 and 2048x4096 (0.97, 4 steps) 0.90-1.09x,
so they keep their split."""
ONE_WAVE_MIN_STEPS = 2
"""The fewest steps a split keeps where `one_wave_split` re-splits a small layer (one step a split was as fast or
slower than two on 1024x4096 and 3584x3584, and 0.89-1.00x on 512x3584, GEMM round 20)."""
ONE_WAVE_SPLIT_COST = 1 / 12
"""What one more split of K costs a small layer's call in `one_wave_split`, in a program's steps (the reduce sums
one more partial an output), fitted to GEMM round 20: 1024x14336 took 0.93-0.99x the time at split 28 (4 steps a
program) as at 56 (2 steps), and 3584x3584 0.87-0.95x at split 14 (2 steps) as at 7 (4 steps)."""
BALANCE_MIN_STEPS = 4
"""The fewest steps a program of a balanced grid takes on average (fewer: many segments a tile to add, and
slower on the 1024 x 8192, 3584 x 3584 and 4608 x 3584 layers of round 18)."""


def _even_split(split_k: int, steps: int) -> int:
    """The split of K a launch runs for `split_k` over `steps` steps: the largest at most `split_k` (and the
    steps) that divides them, so every split gets the same whole number of steps."""
    split = max(1, min(split_k, steps))
    while steps % split:
        split -= 1
    return split


def balance_pays(cfg: KernelConfig, n: int, k: int, places: int, gain: float = BALANCE_GAIN) -> bool:
    """Whether a balanced grid (`KernelConfig.balance`) beats `cfg`'s split grid, one row tile of x, with
    `places` programs resident on the GPU at once (GEMM round 18). Up to 16 rows a program's time is set by its
    steps, not by how many programs share its multiprocessor (one row of N x 8192: 44.4-44.7 us for N = 26624,
    28672 and 30720, 416-480 programs of 32 steps on 528 places), so the split grid takes `waves x steps a
    program` (the split as `plan` runs it: the largest that divides the steps) and the balanced one `all steps /
    places + BALANCE_COST_STEPS`, taken when that is at most `gain` of it and at least `BALANCE_MIN_STEPS` steps
    a program."""
    tiles_n, steps = _tiles_and_steps(cfg, n, k)
    split = _even_split(cfg.split_k, steps)
    share = tiles_n * steps / places
    split_time = -(-tiles_n * split // places) * (steps // split)
    return share >= BALANCE_MIN_STEPS and share + BALANCE_COST_STEPS <= gain * split_time


EAGER_ONE_LAUNCH_MAX = 1 << 24
"""Weights (N x K) up to which an eager call of at most 16 rows runs without a K split (`for_eager`)."""


def for_eager(cfg: KernelConfig, m: int, n: int, k: int) -> KernelConfig:
    """`pick_config`'s shape adapted to a call outside CUDA-graph capture, whose time is the larger of its host
    time and its GPU time (H200, 2026-12-03, bf16 group 128, symmetric and zero points, eager calls of a plan back
    to back, GEMM round 16): words through plain loads, not TMA (Triton's launcher rebuilds the TMA descriptor
    every launch: up to 27 us of host time where the call is host-bound, 0.7-2.7 us more GPU time where it is
    not), and up to 16 rows no K split for layers of at most `EAGER_ONE_LAUNCH_MAX` weights (one launch and no
    workspace: 18-30 us a call instead of 29-60 on 1024x4096 and 4096x4096, whose unsplit kernel takes 18-28 us
    on the GPU; on 4096x14336 it took 84-98, so larger layers keep their split)."""
    one = m <= 16 and n * k <= EAGER_ONE_LAUNCH_MAX
    return dataclasses.replace(cfg, tma=False, split_k=1 if one else cfg.split_k, balance=0 if one else cfg.balance)


GEMV_MIN_WEIGHTS = 1 << 24
"""Weights (N x K) from which a one-row float16 call of a symmetric layer runs the GEMV (`gemv_config`)."""
GEMV_MIN_WEIGHTS_BF16 = 1 << 25
"""The same for bfloat16 x (GEMM round 23: 1.05x the tensor-core time on 4096 x 4096, 0.83-0.93x from 2**25.8
weights up)."""
GEMV_PER_SM = 7
"""GEMV programs a multiprocessor holds at once (72 registers a thread, 4 warps; sm_90 `ptxas`)."""
GEMV_MIN_STEPS = 4
"""Steps (of 128 k) a GEMV program keeps at least."""


def gemv_config(n: int, k: int, group_size: int, sms: int = 132,
                dtype: torch.dtype = torch.float16) -> KernelConfig | None:
    """The one-row GEMV's launch (`KernelConfig.gemv`) for a symmetric N x K layer of group 128 or one group
    (`group_size` K), or None where it does not apply or is slower than the tensor-core kernel: where the
    layer has fewer than `GEMV_MIN_WEIGHTS` weights or K is not a multiple of 128. H200, 2026-12-04 (GEMM
    round 22, one float16 row, group 128, CUDA graphs): 33.8-33.9 us on 28672x8192 and 8192x28672 against the
    tensor-core kernel's 39.6-41.7 and Marlin's CUDA kernel's 50.1-51.7 (3.22x and 3.38x dense fp16's speed);
    0.78-0.88x the tensor-core time on 4096x4096, 14336x4096, 18944x3584 and 8192x8192; 0.89-0.96x on
    4096x14336 and 3584x18944 (a first build of the kernel, 1.12-1.24x slower); on the layers of fewer weights
    that build took 1.16-1.46x at this rule's split (0.95-1.00x at splits of 1-3 steps a program). The split:
    one wave of `GEMV_PER_SM` programs a multiprocessor over the column tiles (896 programs on 28672x8192 and
    8192x28672, the best of each sweep), at least `GEMV_MIN_STEPS` steps a program. bfloat16 x (`dtype`; GEMM
    round 23): 39.9 / 38.9 us against the tensor-core kernel's 44.4 / 42.4 on those two layers, 0.83-0.93x its
    time on 14336x4096, 8192x8192 and 4096x14336, 1.05x on 4096x4096: from `GEMV_MIN_WEIGHTS_BF16` weights."""
    least = GEMV_MIN_WEIGHTS_BF16 if dtype == torch.bfloat16 else GEMV_MIN_WEIGHTS
    if group_size not in (128, k) or k % 128 or n % 64 or n * k < least:
        return None
    nb = 2 if n % 128 == 0 else 1
    steps = k // 128
    split = max(1, min(GEMV_PER_SM * sms // (n // (64 * nb)), steps // GEMV_MIN_STEPS))
    return KernelConfig(1, 8, nb, split_k=split, gemv=True, pdl=True)


GEMV_ZMODES = (0,)
"""The layers `plan` gives the GEMV by default: symmetric. Marlin zero points (`zmode` 1) run on it only by an
explicit `KernelConfig(gemv=True)`: timed in GEMM round 23, 1.15-1.20x the tensor-core kernel's time at the
rule's split on the two large layers (level at their best split)."""

GEMV_DTYPES = (torch.float16, torch.bfloat16)
"""The activation dtypes `plan` gives the GEMV by default (bfloat16 x enters its fp16 chains as `x / 16`)."""


def _gemv_runs(m: int, dtype: torch.dtype, zmode: int, perm: torch.Tensor | None) -> bool:
    """Whether the GEMV kernel can run a call (its layer's shape aside): one row of float16 or bfloat16,
    symmetric or Marlin zero points, no act-order."""
    return m == 1 and dtype in _DTYPES and zmode in (0, 1) and perm is None


def reduced_sums_allowed(dtype: torch.dtype) -> bool:
    """PyTorch's switch for GEMMs of `dtype` that sum in reduced precision (`torch.backends.cuda.matmul.
    allow_fp16_reduced_precision_reduction` / `allow_bf16_reduced_precision_reduction`; both on by default),
    which the GEMV's fp16 sums obey."""
    matmul = torch.backends.cuda.matmul
    if dtype == torch.bfloat16:
        return bool(matmul.allow_bf16_reduced_precision_reduction)
    return bool(matmul.allow_fp16_reduced_precision_reduction)


def gemv_fits(m: int, dtype: torch.dtype, zmode: int, perm: torch.Tensor | None) -> bool:
    """Whether a call runs the GEMV where `gemv_config` gives a launch: one row of `GEMV_DTYPES`, a layer of
    `GEMV_ZMODES` without act-order, and reduced-precision sums allowed (`reduced_sums_allowed`)."""
    return (_gemv_runs(m, dtype, zmode, perm) and dtype in GEMV_DTYPES and zmode in GEMV_ZMODES
            and reduced_sums_allowed(dtype))


def group_steps(group_size: int) -> tuple[int, int]:
    """Tile rows a step (`BT`, 16 k each) and pipeline stages for a group size (the group spanning K given as
    K or -1): 8 rows (128 k) and 3 stages, or one group of 32 / 64 a step with 8 / 5 stages (about as many
    bytes of weights in flight as 3 stages of 128 k)."""
    if group_size in (32, 64):
        return group_size // 16, {32: 8, 64: 5}[group_size]
    return 8, 3


def _tiles_and_steps(cfg: KernelConfig, n: int, k: int) -> tuple[int, int]:
    """`cfg`'s column tiles over `n` outputs and its steps over `k`."""
    return -(-n // (64 * cfg.nb)), k // (16 * cfg.bt)


def _leaves_idle(tiles: int, steps: int, split: int, sms: int) -> bool:
    """Whether a split grid of `tiles` column tiles (one row tile) leaves a GPU of `sms` multiprocessors mostly
    idle (`RESPLIT_BELOW`): few programs, each of more than 4 steps, or fewer than half a program a
    multiprocessor (GEMM rounds 20 and 21)."""
    return tiles * split < RESPLIT_BELOW * sms and (steps // split > 4 or 2 * tiles * split < sms)


def one_wave_split(tiles: int, steps: int, places: int, min_steps: int = ONE_WAVE_MIN_STEPS,
                   cost: float = ONE_WAVE_SPLIT_COST) -> int:
    """The split of `steps` for a small layer's grid (GEMM rounds 20 and 21: where a program's steps, not the
    memory, set the time): among the splits that divide the steps, keep at least `min_steps` steps a split and
    give `tiles` column tiles at most `places` programs (one wave of the programs the GPU holds at once), the one
    of least `steps / split + split * cost` (`cost`: what one more split costs the reduce, in a program's steps);
    1 if none fits."""
    fits = [d for d in range(1, steps + 1) if steps % d == 0 and steps // d >= min_steps and tiles * d <= places]
    return min(fits, key=lambda d: steps / d + d * cost, default=1)


def split_for(cfg: KernelConfig, m: int, n: int, k: int, target: int, min_steps: int = 4) -> int:
    """The power-of-two split of K that brings `cfg`'s grid to at least `target` programs, keeping at
    least `min_steps` steps (of `cfg.bt` tile rows) a split."""
    tiles_n, steps = _tiles_and_steps(cfg, n, k)
    programs = tiles_n * -(-m // cfg.bm)
    split = 1
    while programs * split < target and steps // (2 * split) >= min_steps:
        split *= 2
    return split
