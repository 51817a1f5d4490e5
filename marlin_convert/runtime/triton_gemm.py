"""A Marlin int4 GEMM in Triton: `y = x @ W.T (+ bias)` straight from the Marlin tensors as on disk.

No compiler but Triton's JIT, fp16 and bf16 activations, group sizes -1/32/64/128, symmetric, asymmetric
(Marlin zero points `z`) and optimum-quanto's float shift, act-order (`perm`). The weight is read as it
lies in `B`: no repack, and no dequantized copy is kept.

Tile map (DESIGN §4, restated per word as in `layout.pack_triton`). `B` row t holds k `16t .. 16t+15`;
each 64-column block nb of it is 128 words, word `16c + 4q + w` (c < 8, q < 4, w < 4), and its nibble
`i = 4a + 2b + h` (a, b, h in {0, 1}) is the code of

    k = 16t + 2q + a + 8h,        n = 64nb + 16w + 8b + c.

A program loads `BT` tile rows of `NB` blocks as they lie (a `[4 BT, 32 NB]` tile of words, rows (t, q),
columns (nb, c, w)); the output columns n above are scattered on store. The column order (nb, c, w, b) is
Marlin's scale order: the grouped scale of column n sits at `64nb + 8c + 2w + b` (one group spanning K:
`64nb + 32(w//2) + 8(c//2) + 4(w%2) + 2b + c%2`), its zero point at nibble `w + 4b` of word `8nb + c`.
Three kernels use that map:
- the fast kernel (`marlin_gemm_fast_kernel`, where the scales and shift have the activation dtype and
  `swap` is off): Marlin's own dequantization, one `lop3` per two weights into half2 / bfloat162
  registers that hold two k-adjacent weights (nibbles j and j + 4: a = 0, 1), scaled with packed
  instructions; per b the four planes (a, h) form a `[16 BT, 32 NB]` operand whose rows are k in order
  (`16 t + 8h + 2q + a`), so x is read as contiguous column tiles, and up to 16 rows of x the decoded
  registers feed the tensor cores without a shared-memory round trip;
- the swapped kernel (`marlin_gemm_swap_kernel`, `KernelConfig(swap=True)`, the default there): the same decoders,
  `out.T = W x.T`: the eight outputs of each word joined and permuted into a `[64 NB, 16 BT]` weight tile with
  rows n and columns k in order (no data moves between threads), x transposed as the second operand, so
  sm_90 `wgmma` takes the weights from registers (and, above 16 rows, decodes them once for 64 or 128 rows);
- the float32 eight-dot kernel (`marlin_gemm_kernel`, `KernelConfig(fast=False)`, and whenever the scales
  have another dtype than x): each nibble plane i is a `[4 BT, 32 NB]` weight tile, 8 small `tl.dot`s.
Precision (the swapped kernel as the fast one: the same decoders and per-group scaling): both form each
weight `(code - zero) * scale` exactly and round it once to the activation dtype (the fast kernel: `code - zero` is exact in half / bfloat16, then one multiply by the scale, which has the
activation dtype; the float32 kernel computes in float32 and rounds once); quanto's `code * scale - shift`
is one fused multiply-add (fast kernel) or float32 rounded once. Where a step of the fast kernel lies in
one group and there is no shift (`KernelConfig.scale_acc`, the default), its weights are the exact
integers `code - zero` (no rounding) and each step's float32 sums are multiplied by the float32 scale and
added: two more float32 roundings per group, well inside the float32-sum bound of the tests. The swapped
kernel with `fold` (`pick_config`'s choice for zero points of group 128 or one group, up to 16 rows) goes
further: its weights are the symmetric integers `code - 8`, and the zero point is folded in after the dot,
per group and output row, as `e * sum_k x` with `e = (8 - zero) * scale` (float32): the decode and its
registers are the symmetric ones. Its float32 sums then err relative to `|x| @ (|code - 8| s + |8 - zero| s)`
instead of `|x| @ |W|` (the tests' bound says so). All kernels accumulate in float32 and round the output
once (after the split-K sum when K is split).

Act-order: `perm` is the stored sort permutation (Marlin row j holds source row `perm[j]`); Marlin row j is
taken to be in group `j // group_size`, which holds when every group has exactly `group_size` rows (GPTQ's
act-order). `unsupported_reason` says when a layer's `g_idx` does not (unequal groups).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from dataclasses import dataclass
from typing import Any

import torch

from .triton_launch import Launch, Slot

__all__ = ["marlin_gemm", "plan", "GemmPlan", "unsupported_reason", "available", "KernelConfig", "pick_config",
           "for_eager", "EAGER_ONE_LAUNCH_MAX", "split_for", "one_wave_split", "group_steps", "balance_pays",
           "gemv_config", "gemv_fits", "GEMV_ZMODES", "GEMV_DTYPES", "reduced_sums_allowed"]

_GROUP_SIZES = (-1, 32, 64, 128)
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
    """The packed-half kernel (`marlin_gemm_fast_kernel`) where the scales (and shift) have the activation
    dtype; False: always the float32 eight-dot kernel (`marlin_gemm_kernel`)."""
    xperm: bool = False
    """Fast kernel under act-order: gather x by `perm` once per call (`index_select`), else per tile in the kernel."""
    words3d: int = 0
    """Fast kernel: how the words are loaded (the kernel's WORDS3D): 0 as `[rows, (nb, c, w)]`; 1 as
    `[rows, (nb, c), w]` (16 bytes a thread), reordered in registers; 2 and 3 as they lie, `[t, nb, c, q, w]`
    (a warp reads 512 contiguous bytes), reordered to the column order of 1 and 0."""
    scale_acc: bool = True
    """Fast kernel, where a step lies in one group and there is no quanto shift: dequantize to the exact
    integers `code - zero` and scale each step's float32 sums (`SCALE_ACC`); False: scale every weight."""
    xload: int = 0
    """Fast kernel: how x is read (the kernel's XLOAD): 0: one `[BM, 16 BT]` tile a step, loaded a step ahead into
    registers and split by h there; 1: the two halves h (`[BM, 8 BT]`, runs of 8 contiguous columns) loaded in
    the step that uses them, which Triton's pipeliner turns into `cp.async` into shared memory (sm_90 `ptxas`:
    128 registers instead of 149 for the M <= 16 shape, so 4 programs a multiprocessor instead of 3)."""
    maxnreg: int = 0
    """Fast kernel: a cap on registers a thread (Triton's `maxnreg`; 0: none), to fit more programs a
    multiprocessor."""
    swap: bool = False
    """Fast kernel with the operands swapped (`marlin_gemm_swap_kernel`, `out.T = W x.T`): the decoded weights
    are the first operand, so sm_90 `wgmma` takes them from registers; the words are loaded as they lie
    (`words3d`, `xload` ignored); the K split is summed by the reduce kernel."""
    fold: bool = False
    """Swapped kernel with `scale_acc`, Marlin zero points: decode the symmetric `code - 8` and add
    `(8 - zero) * scale * sum_k x` per group after the dot (`FOLD`), instead of decoding `code - zero`: the
    symmetric decode's registers, for the price of a sum of x a step (round 11: faster up to 16 rows,
    slower at 64 and more; with `zlate`, faster at 128-row tiles, round 13)."""
    tma: bool = False
    """Swapped kernel: load the words through a TMA tensor descriptor (`[BT, 128 NB]` boxes of `B`)."""
    zpre: bool = False
    """Swapped kernel with `fold`: load the next step's scales and zero-point words a step ahead."""
    xsum: bool = False
    """Swapped kernel with `fold`, groups: the sums of x over each step's k computed once per call (one
    `torch.sum`) and loaded a step, instead of summed from the x tile in the kernel (`zlate` implies it; up to 16
    rows no rule takes it since GEMM round 19: under the 128-register cap the loads spilled, the in-kernel sum
    does not)."""
    zlate: bool = False
    """Swapped kernel with `fold`, groups, x not gathered by `perm` in the kernel: the steps' loop is the
    symmetric one, and the zero-point terms of all steps are added after it, 16 steps to a float32 `dot`,
    from the sums of x per step of `xsum` (which it implies; `zpre` then has no effect)."""
    zred: bool = False
    """Swapped kernel with `scale_acc`, Marlin zero points, groups, x not gathered by `perm` in the kernel: run
    the symmetric kernel (weights `code - 8`, `zmode` 0) into float32 partials, K split or not, and add the
    zero points' terms `e * sum_k x` per group in the reduce (`splitk_zero_reduce_kernel`: a float32 `dot`
    of the sums of x per group, from one `torch.sum` a call, by `e = (8 - zero) * scale`); `fold` and the
    other zero-point fields then have no effect. Measured slower than the rule's shapes at every batch and
    shape of round 14 (1.01-2.2x the time: the reduce's loop over all groups is latency-bound), so no rule
    picks it."""
    balance: int = 0
    """Swapped kernel (not `zred`): a balanced grid of about this many programs a multiprocessor per row tile
    of x instead of the (column tile, row tile, split) grid; each sums an equal contiguous range of all
    column tiles' steps (so a range may end inside a tile and the next begin there), its partial sums go to
    the workspace, and `segment_reduce_kernel` adds each tile's in order. 0: the split grid; negative:
    exactly `-balance` programs per row tile (tests: ranges that cross column tiles)."""
    gemv: bool = False
    """One row of float16 x, symmetric or Marlin zero points, group 128 or one group: the CUDA-core GEMV
    (`marlin_gemv_kernel`, fp16 product chains: `gemv_config`) on a (column tile of 64 `nb`, split) grid,
    `split_k` splits of the steps (need not divide them), its float32 partials summed by the reduce kernel;
    `bm`, `bt`, `warps`, `stages` and the other fields are ignored (4 warps, 128 k a step)."""


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """True when Triton imports and a CUDA device of compute capability 8.0+ is present."""
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - depends on the machine
        return False
    if _interpreting():
        return True
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


def _interpreting() -> bool:
    """Triton's CPU interpreter (`TRITON_INTERPRET=1`, for development): CPU tensors are then accepted."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.lru_cache(maxsize=None)
def _kernels() -> Any:
    from . import _triton_gemm_kernels as tk

    return tk


@functools.lru_cache(maxsize=None)
def _gemv_kernel() -> Any:
    from ._triton_gemv_kernel import marlin_gemv_kernel

    return marlin_gemv_kernel


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


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


def _tma_ok(B: torch.Tensor) -> bool:
    """Whether `B` can be read through a TMA tensor descriptor: a CUDA device of compute capability 9.0+ (sm_90
    has the copy engine; elsewhere Triton would lower the descriptor to plain loads) and a 16-byte aligned base."""
    return B.is_cuda and not _interpreting() and _capability(B.device.index or 0) >= (9, 0) and B.data_ptr() % 16 == 0


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


@functools.lru_cache(maxsize=4096)
def pick_config(m: int, n: int, k: int, group_size: int, sms: int = 132, zmode: int = 0) -> KernelConfig:
    """(Memoized: a pure function of its arguments, and called eagerly a GEMM is host-bound, GEMM round 14.)
    The launch shape for an `[m, k] x [k, n]` product: the best of scripts/bench_gemm.py's sweeps on an
    H200 (2026-12-02, BENCHMARKS.md rounds 8 and 9: N x K = 28672x8192, 8192x28672, 4096x4096, 14336x4096,
    4096x14336, fp16 / bf16, symmetric, group 128), all the swapped kernel (`swap`: the decoded weights as
    wgmma's register operand). Up to 16 rows: 16 x 128 tiles (16 rows of x, 128 k a step) capped at 128
    registers for symmetric layers (4 programs a multiprocessor instead of 3), K split until there are about
    2 programs per multiprocessor (one wave of 4, keeping 4 steps a split); up to 64 rows: 64 x 128 tiles,
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
    2048x3584, 3584x3584 and 256x11008, level where it did not."""
    bt, stages = group_steps(group_size)
    grouped = bt == 8 and group_size < k  # group 128
    big = n * k > 1 << 26
    if m <= 16:
        fold = zmode == 1 and bt == 8
        ahead = fold and grouped and n * k > 1 << 25
        cap = 128 if zmode == 0 or (fold and (big or ahead)) else 0
        cfg = KernelConfig(bm=16, bt=bt, nb=2, stages=stages, xperm=big, swap=True, maxnreg=cap,
                           fold=fold, tma=(grouped and zmode == 0) or ahead, zpre=ahead)
        cfg = dataclasses.replace(cfg, split_k=split_for(cfg, m, n, k, 2 * sms, min_steps=4 * 8 // bt))
        resident = 4 if cap else 3  # programs a multiprocessor holds: 128 registers, or the fold's 168
        tiles_n, steps = _tiles_and_steps(cfg, n, k)
        if bt == 8 and zmode != 2 and _leaves_idle(tiles_n, steps, _even_split(cfg.split_k, steps), sms):
            cfg = dataclasses.replace(cfg, split_k=one_wave_split(tiles_n, steps, resident * sms))
        if bt == 8 and zmode != 2 and balance_pays(cfg, n, k, resident * sms):
            cfg = dataclasses.replace(cfg, balance=resident, split_k=1)
        return cfg
    if m <= 64:
        cfg = KernelConfig(bm=64, bt=bt, nb=2 if big else 1, stages=stages, xperm=True, swap=True,
                           tma=big and grouped and zmode == 0)
        cfg = dataclasses.replace(cfg, split_k=split_for(cfg, m, n, k, sms, min_steps=8 * 8 // bt))
        tiles_n, steps = _tiles_and_steps(cfg, n, k)
        split = _even_split(cfg.split_k, steps)
        if not big and bt == 8 and zmode != 2 and split > 1 and _leaves_idle(tiles_n, steps, split, sms):
            cost = ONE_WAVE_SPLIT_COST * -(-m // 16)  # the reduce sums m rows of each partial
            cfg = dataclasses.replace(cfg, split_k=one_wave_split(tiles_n, steps, 3 * sms, cost=cost))  # 166 regs
        if big and bt == 8 and zmode != 2 and balance_pays(cfg, n, k, 2 * sms, BALANCE_GAIN_WIDE):
            cfg = dataclasses.replace(cfg, balance=2, split_k=1)  # 2 programs a multiprocessor (237-248 registers)
        return cfg
    late = zmode == 1 and grouped and n * k > 1 << 25
    cfg = KernelConfig(bm=128, bt=bt, nb=2, warps=8, stages=stages, xperm=True, swap=True, fold=late, zlate=late)
    if not big and bt == 8 and zmode != 2:  # one program a multiprocessor at most (round 21)
        tiles_n, steps = _tiles_and_steps(cfg, n, k)
        return dataclasses.replace(cfg, split_k=one_wave_split(tiles_n * -(-m // cfg.bm), steps, sms))
    return dataclasses.replace(cfg, split_k=split_for(cfg, m, n, k, sms // 2, min_steps=8 * 8 // bt))


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
    return KernelConfig(1, 8, nb, split_k=split, gemv=True)


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


def unsupported_reason(B: torch.Tensor, s: torch.Tensor, *, group_size: int, dtype: torch.dtype | None = None,
                       z: torch.Tensor | None = None, shift: torch.Tensor | None = None,
                       perm: torch.Tensor | None = None, g_idx: torch.Tensor | None = None) -> str | None:
    """Why `marlin_gemm` cannot serve this layer (one line), or None when it can.

    Args: the layer's Marlin tensors (DESIGN §5) and `dtype`, the activation dtype (None: not checked).
    `g_idx`, when given with `perm`, is checked for equal-size groups (one host sync; call once per layer,
    at load time, not per forward).
    """
    if not available():
        return "the Triton Marlin GEMM needs Triton and a CUDA GPU of compute capability 8.0+"
    if dtype is not None and dtype not in _DTYPES:
        return f"activations must be float16 or bfloat16, not {dtype}"
    if B.dtype != torch.int32 or B.dim() != 2 or B.shape[1] % 128:
        return f"B must be int32 [K/16, 2N] with N a multiple of 64, got {B.dtype} {tuple(B.shape)}"
    k, n = 16 * int(B.shape[0]), int(B.shape[1]) // 2
    if k % 128:
        return f"K={k} is not a multiple of 128"
    if group_size not in _GROUP_SIZES or (group_size != -1 and k % group_size):
        return f"group size {group_size} is not one of {_GROUP_SIZES} dividing K={k}"
    groups = 1 if group_size == -1 else k // group_size
    if s.dim() != 2 or tuple(s.shape) != (groups, n) or s.dtype not in _DTYPES + (torch.float32,):
        return f"scales must be float [{groups}, {n}], got {s.dtype} {tuple(s.shape)}"
    if z is not None and shift is not None:
        return "a layer has zero points or a shift, not both"
    if z is not None and (z.dtype != torch.int32 or tuple(z.shape) != (groups, n // 8)):
        return f"zero points must be int32 [{groups}, {n // 8}], got {z.dtype} {tuple(z.shape)}"
    if shift is not None and tuple(shift.shape) != (groups, n):
        return f"shift must be [{groups}, {n}], got {tuple(shift.shape)}"
    if perm is not None and (perm.dim() != 1 or perm.numel() != k or perm.dtype not in (torch.int32, torch.int64)):
        return f"perm must be int32 [{k}], got {perm.dtype} {tuple(perm.shape)}"
    if perm is not None and g_idx is not None and group_size != -1 and group_size < k:
        sorted_groups = g_idx.to(torch.int64)[perm.to(g_idx.device, torch.int64)]
        if not torch.equal(sorted_groups, torch.arange(k, device=g_idx.device) // group_size):
            return "act-order groups of unequal size: the kernel takes Marlin row j to be in group j // group_size"
    for t in (B, s, z, shift, perm):
        if t is not None and not t.is_cuda and not _interpreting():
            return f"tensors must be on a CUDA device, got {t.device}"
    return None


def marlin_gemm(x: torch.Tensor, B: torch.Tensor, s: torch.Tensor, *, group_size: int,
                z: torch.Tensor | None = None, shift: torch.Tensor | None = None,
                perm: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                config: KernelConfig | None = None) -> torch.Tensor:
    """`y = x @ W.T (+ bias)` for the int4 weight W held in Marlin tensors, on the GPU.

    Args:
        x (`float16`/`bfloat16`, shape `(..., K)`, CUDA): activations.
        B (`int32`, `(K / 16, 2N)`): Marlin-packed codes. s (`(G, N)`): Marlin-permuted scales (any float
            dtype); G = 1 for `group_size` -1, else K / group_size.
        group_size: -1, 32, 64 or 128.
        z (`int32`, `(G, N / 8)`): Marlin zero points (asymmetric); absent: symmetric, zero 8.
        shift (`(G, N)`): optimum-quanto's float shift, permuted like the scales: `W = code * s - shift`.
        perm (`int32`/`int64`, `(K,)`): act-order sort permutation (Marlin row j = source input row perm[j]).
        bias (`(N,)`): added to the output.
        config: launch shape override (benchmarks); default `pick_config`, or for one float16 or bfloat16 row
            of a symmetric layer `gemv_config`'s GEMV (float16 sums, while PyTorch allows reduced-precision
            sums for x's dtype: `gemv_fits`).
    Returns: `(..., N)` tensor in x's dtype on x's device.
    Raises: ValueError when `unsupported_reason` names a reason (no GPU sync here: g_idx is not checked).
    """
    reason = unsupported_reason(B, s, group_size=group_size, dtype=x.dtype, z=z, shift=shift, perm=perm)
    if reason is not None:
        raise ValueError(reason)
    k, n = 16 * int(B.shape[0]), int(B.shape[1]) // 2
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} input features, the layer {k}")
    if bias is not None and tuple(bias.shape) != (n,):
        raise ValueError(f"bias must be [{n}], got {tuple(bias.shape)}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)
    if x2.shape[0] == 0:
        return torch.empty((*lead, n), dtype=x.dtype, device=x.device)
    gemm = plan(x2.shape[0], x.dtype, x.device, B, s, group_size=group_size, z=z, shift=shift, perm=perm, bias=bias,
                config=config)
    return gemm(x2).reshape(*lead, n)


@dataclass(frozen=True)
class GemmPlan:
    """Everything about a `marlin_gemm` call but x, for one row count, activation dtype and device (`plan`):
    the launches with their grids and fixed arguments, and what a call allocates and computes before them.
    Called with x as `[m, K]` (unit stride along K) it returns `[m, N]`. Kept per layer by the runtime, it
    spares an eager call the checks, the launch rule and Triton's argument binding (`triton_launch.Launch`)."""

    m: int
    n: int
    k: int
    dtype: torch.dtype
    device: torch.device
    launches: tuple[Launch, ...]
    ws_splits: int = 0
    """Rows of the float32 split-K workspace `[ws_splits, m, N]` a call allocates (0: none)."""
    gather: torch.Tensor | None = None
    """int64 `perm`: x gathered by it once a call (`KernelConfig.xperm`)."""
    sum_width: int = 0
    """Sums of x over consecutive runs of this many columns, in float32, passed to the kernels (0: none)."""
    x_align: int = 0
    """Bytes x's start must be a multiple of (the GEMV reads x as int32 pairs); x is copied where it is not."""

    def __call__(self, x2: torch.Tensor) -> torch.Tensor:
        if x2.shape != (self.m, self.k):
            raise ValueError(f"this plan takes x of shape [{self.m}, {self.k}], got {tuple(x2.shape)}")
        if x2.stride(-1) != 1 or (self.m > 1 and x2.stride(0) != self.k):  # the kernels take rows k apart
            x2 = x2.contiguous()
        if self.x_align and x2.data_ptr() % self.x_align:
            x2 = x2.clone()
        out = torch.empty((self.m, self.n), dtype=self.dtype, device=self.device)
        ws = out if not self.ws_splits else torch.empty(
            (self.ws_splits, self.m, self.n), dtype=torch.float32, device=self.device)
        xk = x2 if self.gather is None else x2.index_select(1, self.gather)
        values: dict[str, torch.Tensor] = {"x": x2, "xk": xk, "out": out, "ws": ws}
        if self.sum_width:
            values["sums"] = torch.sum(xk.reshape(self.m, -1, self.sum_width), dim=-1, dtype=torch.float32)
        here = self.device.type != "cuda" or torch.cuda.current_device() == (self.device.index or 0)
        with contextlib.nullcontext() if here else torch.cuda.device(self.device):
            for launch in self.launches:
                launch(values)
        return out


def _grid_programs(per_sm: int, sms: int, tiles_m: int, total: int, most: int) -> int:
    """Programs a row tile of a balanced grid of `total` steps a row tile: exactly `-per_sm` when it
    is negative (tests), else `per_sm` a multiprocessor shared by the `tiles_m` row tiles, at least 1 and at most
    `most`; never more than the steps, and 0 (no such grid) where a program's step indices would pass int32."""
    programs = -per_sm if per_sm < 0 else max(1, min(per_sm * sms // tiles_m, most))
    programs = min(programs, total)
    return 0 if total * programs >= 2**31 else programs


def _gemv_plan(cfg: KernelConfig, dtype: torch.dtype, device: torch.device, B: torch.Tensor, s: torch.Tensor,
               z: torch.Tensor | None, single: bool, bias: torch.Tensor | None, takes: bool) -> GemmPlan:
    """The `GemmPlan` of the one-row GEMV (`KernelConfig.gemv`): the GEMV's partials, then the reduce. `takes`:
    the call is one the kernel runs (one float16 or bfloat16 row, symmetric or Marlin zero points, no act-order,
    group 128 or one group, K a multiple of 128)."""
    k, n = 16 * int(B.shape[0]), int(B.shape[1]) // 2
    if not takes or n % (64 * cfg.nb):
        raise ValueError("the GEMV takes one row of float16 or bfloat16 x, a layer of group 128 or one group, "
                         "symmetric or with Marlin zero points, no act-order, K a multiple of 128 and N of "
                         f"{64 * cfg.nb}")
    steps = k // 128
    split = max(1, min(cfg.split_k, steps))
    index = device.index or 0 if device.type == "cuda" else None
    s = s.contiguous()
    OUT, WS = Slot("out"), Slot("ws")
    B = B.contiguous()
    gemv = Launch(_gemv_kernel(), (n // (64 * cfg.nb), split), (
        Slot("x"), B, s, z.contiguous() if z is not None else B, WS, n, steps, 7),
        dict(SINGLE=single, NB=cfg.nb, SPLIT=split, ZEROS=z is not None, X_BF16=dtype == torch.bfloat16,
             num_warps=4, num_stages=3), index)
    block = _reduce_block(n, _sm_count(index) if index is not None else 132)
    reduce = Launch(_kernels().splitk_reduce_kernel, (-(-n // block),), (
        WS, bias if bias is not None else s, OUT, 1, n, n, int(bias is not None)), dict(SPLIT=split, BLOCK=block),
        index)
    return GemmPlan(m=1, n=n, k=k, dtype=dtype, device=device, launches=(gemv, reduce), ws_splits=split,
                    x_align=4)


def plan(m: int, dtype: torch.dtype, device: torch.device, B: torch.Tensor, s: torch.Tensor, *, group_size: int,
         z: torch.Tensor | None = None, shift: torch.Tensor | None = None, perm: torch.Tensor | None = None,
         bias: torch.Tensor | None = None, config: KernelConfig | None = None, eager: bool = False) -> GemmPlan:
    """The `GemmPlan` of `marlin_gemm` for `m` rows of `dtype` activations on `device` (m > 0; the arguments as
    `marlin_gemm` takes them, already checked by `unsupported_reason`). The plan holds these tensors (or
    contiguous / int32 copies of them where they are not): it runs the weights it was made from. `eager`: for
    calls outside CUDA-graph capture (`for_eager`'s launch shape, unless `config` is given)."""
    k, n = 16 * int(B.shape[0]), int(B.shape[1]) // 2
    single = group_size == -1 or group_size >= k
    gs = k if single else group_size
    zmode = 2 if shift is not None else (1 if z is not None else 0)
    sms = _sm_count(device.index or 0) if device.type == "cuda" else 132
    cfg = config or (gemv_fits(m, dtype, zmode, perm) and gemv_config(n, k, gs, sms, dtype)) or pick_config(
        m, n, k, gs, sms, zmode)
    if cfg.gemv:
        takes = _gemv_runs(m, dtype, zmode, perm) and gs in (128, k) and k % 128 == 0
        return _gemv_plan(cfg, dtype, device, B, s, z, gs == k, bias, takes)
    if eager and config is None:
        cfg = for_eager(cfg, m, n, k)
    tiles = k // 16
    bt = cfg.bt
    steps = tiles // bt
    fast = cfg.fast and s.dtype == dtype and (shift is None or shift.dtype == dtype)
    split = _even_split(cfg.split_k, steps)
    per_split = tiles // split
    uniform = single or gs % (16 * bt) == 0
    B = B.contiguous()
    s = s.contiguous()
    if s.data_ptr() % 4:  # the fast kernel reads the scales of a column pair as one int32
        s = s.clone()
    tk = _kernels()
    tiles_n, tiles_m = -(-n // (64 * cfg.nb)), -(-m // cfg.bm)
    total = tiles_n * steps
    zred = (fast and cfg.swap and cfg.zred and zmode == 1 and not single and cfg.scale_acc and uniform
            and (perm is None or cfg.xperm))
    balanced = 0
    if fast and cfg.swap and cfg.balance and not zred:
        balanced = _grid_programs(cfg.balance, sms, tiles_m, total, total)
    if balanced:
        ws_splits = -(-balanced // tiles_n) + 1  # the most programs that share one column tile
    else:
        ws_splits = split if split > 1 or zred else 0
    grid = (tiles_n, tiles_m, split)
    dummy = B
    index = device.index or 0 if device.type == "cuda" else None
    X, XK, OUT, WS, SUMS = Slot("x"), Slot("xk"), Slot("out"), Slot("ws"), Slot("sums")
    zt = z.contiguous() if z is not None else dummy
    perm32 = perm.to(torch.int32).contiguous() if perm is not None else dummy
    bias_arg = bias if bias is not None else s
    common = (X, B, s, zt, shift.contiguous() if shift is not None else s, perm32, bias_arg, OUT, WS,
              m, n, k, n, gs, per_split)
    launches: list[Launch] = []
    gather, sum_width = None, 0
    if fast:
        has_perm = perm is not None
        if has_perm and cfg.xperm:  # one gather per call instead of a perm lookup per tile
            gather, has_perm = perm.to(device=device, dtype=torch.int64), False
        consts = dict(ZMODE=zmode, UNIFORM_G=uniform, SINGLE=single, HAS_PERM=has_perm,
                      IS_FP16=dtype == torch.float16, BM=cfg.bm, BT=bt, NB=cfg.nb,
                      SCALE_ACC=cfg.scale_acc and uniform and zmode != 2,
                      num_warps=cfg.warps, num_stages=cfg.stages,
                      **({"maxnreg": cfg.maxnreg} if cfg.maxnreg else {}))
        g_shift = 0 if single else gs.bit_length() - 1
        loads = dict(WORDS3D=int(cfg.words3d), XLOAD=int(cfg.xload))
        if cfg.swap:
            fold = cfg.fold and consts["SCALE_ACC"] and zmode == 1
            b_arg: Any = B
            sh_arg = common[4]
            tma = cfg.tma and _tma_ok(B)
            if tma:
                from triton.tools.tensor_descriptor import TensorDescriptor

                b_arg = TensorDescriptor.from_tensor(B, [bt, 128 * cfg.nb])
            zlate = cfg.zlate and fold and not single and not has_perm
            if zred:
                fold = zlate = False
                consts["ZMODE"] = 0
            xsum = (cfg.xsum or zlate) and fold and not single and not has_perm
            if xsum:
                sh_arg, sum_width = SUMS, 16 * bt
            launches.append(Launch(tk.marlin_gemm_swap_kernel, (balanced, tiles_m, 1) if balanced else grid, (
                XK, b_arg, s, zt, sh_arg, *common[5:9], m, n, k, n, g_shift, steps, int(bias is not None),
                balanced or split),
                dict(FOLD=fold, TMA=tma, ZPRE=cfg.zpre and not zlate, XSUM=xsum, ZLATE=zlate, PARTIAL=zred,
                     BALANCED=bool(balanced), **consts), index))
            if balanced:
                block = _reduce_block(m * n, sms)
                launches.append(Launch(tk.segment_reduce_kernel, (-(-m * n // block),), (
                    WS, bias_arg, OUT, m, n, n, int(bias is not None), steps, balanced),
                    dict(TILE_N=64 * cfg.nb, SEGMENTS=ws_splits, BLOCK=block), index))
            if zred:
                sum_width = gs
                launches.append(Launch(tk.splitk_zero_reduce_kernel, (-(-n // 64), -(-m // 16)), (
                    WS, SUMS, s, zt, bias_arg, OUT, m, n, n, k // gs, int(bias is not None)),
                    dict(SPLIT=split, BM=16, BN=64, GC=16), index))
        else:
            launches.append(Launch(tk.marlin_gemm_fast_kernel, grid, (
                XK, *common[1:9], m, n, k, n, g_shift, steps, int(bias is not None), split),
                dict(**consts, **loads), index))
    else:
        launches.append(Launch(tk.marlin_gemm_kernel, grid, (
            *common, int(single), int(perm is not None), int(bias is not None), split),
            dict(ZMODE=zmode, UNIFORM_G=uniform, BM=cfg.bm, BT=bt, NB=cfg.nb, num_warps=cfg.warps,
                 num_stages=cfg.stages), index))
    if split > 1 and not balanced and not zred:
        block = _reduce_block(m * n, sms)
        launches.append(Launch(tk.splitk_reduce_kernel, (-(-m * n // block),), (
            WS, bias_arg, OUT, m, n, n, int(bias is not None)), dict(SPLIT=split, BLOCK=block), index))
    return GemmPlan(m=m, n=n, k=k, dtype=dtype, device=device, launches=tuple(launches), ws_splits=ws_splits,
                    gather=gather, sum_width=sum_width)
