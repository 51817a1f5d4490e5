"""The one-row Marlin GEMV on the CUDA cores (issue #13, GEMM round 22): `y = x @ W.T` for one float16 or bfloat16
row of x and a layer of group 128 or one group, symmetric or with Marlin zero points, the weights read as they lie
in `B`.

At one row the tensor cores idle and the served kernel's 16-row tile wastes 15/16 of each `wgmma`; what sets
the time is how many weight bytes the GPU keeps in flight against the instructions a weight costs. This
kernel decodes each word with Marlin's `lop3` trick straight to the exact `(code - zero) / 64` (two k-adjacent
weights a half2 register) and multiplies by x's own fp16 pairs with packed half2 fused multiply-adds, 16
weights (8 a lane) to one fp16 chain (`_CHAIN_DOT`); the chain's two lanes are added in fp16, widened to
float32 once and scaled by the group's float32 scale. About 2.7 instructions a weight and 72 registers a
thread (7 programs a multiprocessor), against the tensor-core kernel's 4 programs. The loop counts a program's
steps from 0: written over the step numbers themselves, the same kernel compiled (sm_90 `ptxas`) to 64
registers and a schedule that took 1.12-1.24x the time on six layers (H200, GEMM round 22).

Tile map (`triton_gemm`'s): `B` row t holds k `16t .. 16t+15`; word `(nb, c, q, w)` of a 64-column block,
nibble `4a + 2h + b`, is the code of k = 16t + 8h + 2q + a, n = 64nb + 16w + 8b + c. A program takes
`128 NB` words of 8 tile rows a step (one group of 128: one scale a step), loaded a step ahead, as
`[t, nb, c, q, w]`; the 8 tile rows of a thread's chain are t = 2i + j, i = 0..3 (the four that Triton's
layout gives one thread). x is read as int32 words (its fp16 pairs a = 0, 1 of (t, q, h): word 8t + 4h + q);
bfloat16 x (`X_BF16`) as its bf16 pairs, each made the fp16 pair of `x / X_BF16_SCALE` (`_bf16_as_fp16`).

Precision (fp16 sums: `torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction`): the weights
`(code - zero) / 64` (zero 8 where symmetric; `WEIGHT_SCALE`) are exact; each lane's chain is one product and seven fused
multiply-adds (8 roundings to fp16), the lanes' sum one more, so each term of a chain errs by at most gamma_9 =
9u / (1 - 9u) of it (u = 2^-11), relative to the sum of the chain's |terms|; products under fp16's normal range
err by at most 2^-25 (absolute, in units of x / 64) each operation. Everything after is float32 (the scale, the
sum over chains, steps and splits) and the output is rounded once to x's dtype. A chain's sums (both lanes: 16
weights of |weight| <= 8 / 64, or 15 / 64 with zero points) stay below 2 max |x| or 3.75 max |x|, so fp16
overflows only where |x| passes 32752 or 17467.
bfloat16 x (`allow_bf16_reduced_precision_reduction`): the chains take `x / 16` rounded once to fp16, exact
wherever that is a normal fp16 (|x| from 2^-10 up; below, it errs by at most 2^-21 absolute), so the limits are
16 times as large (524032 and 279472), and the chains' fp16 rounding (u = 2^-11) lies far inside bfloat16's
(2^-8) of the output.
"""
from __future__ import annotations

import struct

import triton
import triton.language as tl

from ._triton_gemm_kernels import _grouped_places, _single_places, _zero_point_cols, launch_dependents

__all__ = ["marlin_gemv_kernel", "chain_dot_asm", "WEIGHT_SCALE", "X_BF16_SCALE"]

WEIGHT_SCALE = 64
"""The decode gives `(code - zero) / WEIGHT_SCALE`, exact in fp16 (a power of two at most 64: `1024 /
WEIGHT_SCALE` has an ulp of `1 / WEIGHT_SCALE`), so that a chain's sums stay far from fp16's largest value."""

X_BF16_SCALE = 16
"""bfloat16 x enters the fp16 chains as `x / X_BF16_SCALE` (a power of two: exact where the quotient is a normal
fp16), which moves the chains' overflow limits 16 times further out than float16 x's."""


def _fp16_pair(value: float) -> int:
    """The int32 of the fp16 pair (value, value)."""
    bits = struct.unpack("<H", struct.pack("<e", value))[0]
    return bits | bits << 16


def _signed(word: int) -> int:
    return word - (1 << 32) if word >= 1 << 31 else word


def chain_dot_asm(words: int = 4, zeros: bool = False) -> str:
    """PTX for `words` words of one column (tile rows apart) and their x: `$0`, `$1` the float32 sums, b = 0
    and 1, of their weights `(code - zero) / S` times x, summed in one fp16 chain a lane (a = 0, 1), then the
    lanes in fp16, widened once. Inputs: `$2 ...` the words, then each word's x pairs of h = 0 and 1 (x's
    fp16 pairs as int32), then (`zeros`) the offsets `y{h}{b}` of the columns' zero points, in the order
    y00, y10, y01, y11 (`_zero_offsets`; symmetric: zero 8, constants). Decode of nibble j (a = 0) and j + 4
    (a = 1), j = 2b + h, bits 4j (j < 2) or 4j - 8 after a shift by 8: OR into fp16 1024 (`0x6400`, ulp 1)
    gives 1024 + code (mask `0x000F000F`) or 1024 + 16 code (mask `0x00F000F0`); one fma, `* 1/S + y0` or
    `* 1/(16 S) + y1` (S = `WEIGHT_SCALE`) with `y0 = -(1024 + zero) / S`, `y1 = -(64 + zero) / S` (exact in
    fp16), gives `(code - zero) / S` exactly."""
    lines = ["{", ".reg .b32 p, v, d0, d1, k0, k1, w00, w01, w10, w11;", ".reg .b16 lo, hi, e;",
             f"mov.b32 k0, {_fp16_pair(1 / WEIGHT_SCALE):#x};",
             f"mov.b32 k1, {_fp16_pair(1 / (16 * WEIGHT_SCALE)):#x};"]
    if zeros:
        first = 2 + 3 * words
        y = {(h, b): f"${first + 2 * b + h}" for h in range(2) for b in range(2)}
    else:
        lines += [".reg .b32 y0, y1;", f"mov.b32 y0, {_fp16_pair(-(1024 + 8) / WEIGHT_SCALE):#x};",
                  f"mov.b32 y1, {_fp16_pair(-(64 + 8) / WEIGHT_SCALE):#x};"]
        y = {(h, b): f"y{h}" for h in range(2) for b in range(2)}
    for i in range(words):
        word, x0, x1 = f"${2 + i}", f"${2 + words + 2 * i}", f"${3 + words + 2 * i}"
        for b in range(2):
            src = word if b == 0 else "p"
            if b == 1:
                lines.append(f"shr.b32 p, {word}, 8;")
            for h in range(2):
                mask = "0x000F000F" if h == 0 else "0x00F000F0"
                lines += [f"lop3.b32 v, {src}, {mask}, 0x64006400, 0xEA;",
                          f"fma.rn.f16x2 w{h}{b}, v, k{h}, {y[h, b]};"]
        for b in range(2):
            first = f"mul.f16x2 d{b}, w0{b}, {x0};" if i == 0 else f"fma.rn.f16x2 d{b}, w0{b}, {x0}, d{b};"
            lines += [first, f"fma.rn.f16x2 d{b}, w1{b}, {x1}, d{b};"]
    for b in range(2):
        lines += [f"mov.b32 {{lo, hi}}, d{b};", "add.f16 e, lo, hi;", f"cvt.f32.f16 ${b}, e;"]
    return "\n".join(lines + ["}"])


_CHAIN_DOT = tl.constexpr(chain_dot_asm(4))
_CHAIN_DOT_ZEROS = tl.constexpr(chain_dot_asm(4, zeros=True))
_Y0 = tl.constexpr(_signed(_fp16_pair(-1024 / WEIGHT_SCALE)))  # zero's bits: the lowest of y0's mantissa
_Y1 = tl.constexpr(_signed(_fp16_pair(-64 / WEIGHT_SCALE)))  # and 16 zero: bits 4-7 of y1's
_SCALE_BACK = tl.constexpr(float(WEIGHT_SCALE))
_X_BF16_SCALE = tl.constexpr(float(X_BF16_SCALE))
_BF16_AS_FP16 = tl.constexpr("\n".join([
    "{", ".reg .b32 lo, hi, k;", f"mov.b32 k, {struct.unpack('<I', struct.pack('<f', 1 / X_BF16_SCALE))[0]:#x};",
    "prmt.b32 lo, $1, 0, 0x1044;",  # a = 0's bf16 bits as a float32 (bytes 0-1 moved to 2-3)
    "prmt.b32 hi, $1, 0, 0x3244;",  # a = 1's (bytes 2-3 kept)
    "mul.f32 lo, lo, k;", "mul.f32 hi, hi, k;",  # exact: a power of two
    "cvt.rn.f16x2.f32 $0, hi, lo;", "}"]))


@triton.jit
def _bf16_as_fp16(pairs):
    """x's bf16 pairs (int32, a = 0 low) as the fp16 pairs of `x / X_BF16_SCALE`, each rounded once to nearest
    (two byte moves, two float32 multiplies and one packed conversion a pair)."""
    return tl.inline_asm_elementwise(_BF16_AS_FP16, "=r,r", [pairs], dtype=tl.int32, is_pure=True, pack=1)


@triton.jit
def _zero_offsets(zwords, zsh0, zsh1):
    """The decode's offsets (`chain_dot_asm`) of zero points: fp16 pairs `y0 = -(1024 + zero) / S` (the bits of
    `-1024 / S` with zero in the lowest of its mantissa, whose ulp is 1 / S) and `y1 = -(64 + zero) / S` (`-64 /
    S` with 16 zero) for b = 0 and 1, from the columns' zero-point words and nibble shifts (`_zero_point_cols`)."""
    z0 = (zwords >> zsh0) & 0xF
    z1 = (zwords >> zsh1) & 0xF
    return (z0 * 0x10001) | _Y0, (z0 * 0x100010) | _Y1, (z1 * 0x10001) | _Y0, (z1 * 0x100010) | _Y1


@triton.jit
def _rows_of_i(v, NB: tl.constexpr):
    """`v` `[8, NB, 8, 4, 4]` (tile rows t first) as four tensors `[2, NB, 8, 4, 4]`, the i-th holding t = 2i + j."""
    v = tl.permute(tl.reshape(v, (4, 2, NB, 8, 4, 4)), (1, 2, 3, 4, 5, 0))
    v0, v1 = tl.split(tl.reshape(v, (2, NB, 8, 4, 4, 2, 2)))  # i = 2 i1 + i0: i0
    a, c = tl.split(v0)
    b, d = tl.split(v1)
    return a, b, c, d


@triton.jit
def _program_place(N, steps, NB: tl.constexpr, SPLIT: tl.constexpr):
    """A (column tile, split) program's place: its first and last step (split j takes steps `j steps // SPLIT`
    to `(j + 1) steps // SPLIT`), the offsets of its `[8, 128 NB]` words in a step's tile rows, and its output
    rows n `[NB, 8, 4]` of (nb, c, w), b = 0 (b = 1: + 8)."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    s_first = (pid_k * steps) // SPLIT
    s_last = ((pid_k + 1) * steps) // SPLIT - 1
    cols = pid_n * NB * 128 + tl.arange(0, 128 * NB)
    off = tl.arange(0, 8)[:, None] * (2 * N) + cols[None, :]
    n0 = (64 * (pid_n * NB + tl.arange(0, NB)[:, None, None]) + 16 * tl.arange(0, 4)[None, None, :]
          + tl.arange(0, 8)[None, :, None])
    return s_first, s_last, off, n0


@triton.jit(do_not_specialize=["steps", "g_shift"])
def marlin_gemv_kernel(x_ptr, b_ptr, s_ptr, z_ptr, ws_ptr, N, steps, g_shift, SINGLE: tl.constexpr,
                       NB: tl.constexpr, SPLIT: tl.constexpr, ZEROS: tl.constexpr, X_BF16: tl.constexpr = False,
                       TRIGGER: tl.constexpr = False):
    """float32 partials `ws[split, n] = sum over split's k of x[k] W[n, k]` for one float16 or bfloat16 row x
    (K = 128 `steps`; x 4-byte aligned), a program a (column tile of 64 NB rows n, split of the steps: split j takes
    steps `j steps // SPLIT` to `(j + 1) steps // SPLIT`, at least one). Scales: one group a step (group 128,
    `g_shift` 7) or one spanning K (`SINGLE`). ZEROS: Marlin zero points `z` (`W = (code - zero) s`), decoded
    into the exact `(code - zero) / 64` by the same one fma a pair, its offsets from the step's zero points
    (`_zero_offsets`). X_BF16: x is bfloat16 (`_bf16_as_fp16`; the sums scaled back by `X_BF16_SCALE`). TRIGGER:
    `launch_dependents` first (the reduce after it, launched with `launch_pdl`, waits for this kernel's end)."""
    if TRIGGER:
        launch_dependents()
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    s_first, s_last, off, n0 = _program_place(N, steps, NB, SPLIT)
    xw_ptr = x_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    # x's pair (a = 0, 1) of (t, q, h) is its int32 word 8 t + 4 h + q
    xoff = 8 * tl.arange(0, 8)[:, None, None] + tl.arange(0, 4)[None, :, None] + 4 * tl.arange(0, 2)[None, None, :]
    acc0 = tl.zeros((2, NB, 8, 4, 4), dtype=tl.float32)  # [j, nb, c, q, w], b = 0
    acc1 = tl.zeros((2, NB, 8, 4, 4), dtype=tl.float32)
    spn0, _, _ = _grouped_places(n0)
    spn1, _, _ = _grouped_places(n0 + 8)
    # ZEROS: where the zero points of columns (nb, c, w) sit, shaped to broadcast as `[1, NB, 8, 1, 4]`
    zwn, zsh0, zsh1 = _zero_point_cols(tl.reshape(pid_n * NB + tl.arange(0, NB), (1, NB, 1, 1, 1)),
                                       tl.reshape(tl.arange(0, 8), (1, 1, 8, 1, 1)),
                                       tl.reshape(tl.arange(0, 4), (1, 1, 1, 1, 4)))
    if ZEROS and SINGLE:
        y00, y10, y01, y11 = _zero_offsets(tl.load(z_ptr + zwn), zsh0, zsh1)
    count = s_last + 1 - s_first
    t_first = 8 * s_first
    ahead = tl.load(b_ptr + t_first.to(tl.int64) * (2 * N) + off)
    for i in range(0, count):
        step = s_first + i
        here = ahead
        t_next = t_first + 8 * tl.minimum(i + 1, count - 1)  # the last step: its own words again
        ahead = tl.load(b_ptr + t_next.to(tl.int64) * (2 * N) + off)
        words = tl.reshape(here, (8, NB, 8, 4, 4))
        xw = tl.load(xw_ptr + 64 * step + xoff)  # [t, q, h]
        if X_BF16:
            xw = _bf16_as_fp16(xw)
        xh0, xh1 = tl.split(xw)
        xh0 = tl.broadcast_to(tl.reshape(xh0, (8, 1, 1, 4, 1)), words.shape)
        xh1 = tl.broadcast_to(tl.reshape(xh1, (8, 1, 1, 4, 1)), words.shape)
        w0, w1, w2, w3 = _rows_of_i(words, NB)
        a0, a1, a2, a3 = _rows_of_i(xh0, NB)
        c0, c1, c2, c3 = _rows_of_i(xh1, NB)
        g = (128 * step) >> g_shift
        if ZEROS:
            if not SINGLE:
                y00, y10, y01, y11 = _zero_offsets(tl.load(z_ptr + g * (N // 8) + zwn), zsh0, zsh1)
            shape: tl.constexpr = (2, NB, 8, 4, 4)
            p0, p1 = tl.inline_asm_elementwise(
                _CHAIN_DOT_ZEROS, "=f,=f" + ",r" * 16,
                [w0, w1, w2, w3, a0, c0, a1, c1, a2, c2, a3, c3, tl.broadcast_to(y00, shape),
                 tl.broadcast_to(y10, shape), tl.broadcast_to(y01, shape), tl.broadcast_to(y11, shape)],
                dtype=(tl.float32, tl.float32), is_pure=True, pack=1)
        else:
            p0, p1 = tl.inline_asm_elementwise(_CHAIN_DOT, "=f,=f" + ",r" * 12,
                                               [w0, w1, w2, w3, a0, c0, a1, c1, a2, c2, a3, c3],
                                               dtype=(tl.float32, tl.float32), is_pure=True, pack=1)
        if SINGLE:
            acc0 += p0
            acc1 += p1
        else:
            s0 = tl.load(s_ptr + g * N + spn0).to(tl.float32)
            s1 = tl.load(s_ptr + g * N + spn1).to(tl.float32)
            acc0 = tl.fma(p0, tl.reshape(s0, (1, NB, 8, 1, 4)), acc0)
            acc1 = tl.fma(p1, tl.reshape(s1, (1, NB, 8, 1, 4)), acc1)
    r0 = tl.sum(tl.sum(acc0, axis=3), axis=0) * _SCALE_BACK  # [nb, c, w]
    r1 = tl.sum(tl.sum(acc1, axis=3), axis=0) * _SCALE_BACK
    if X_BF16:  # (powers of two: exact)
        r0 = r0 * _X_BF16_SCALE
        r1 = r1 * _X_BF16_SCALE
    if SINGLE:
        r0 = r0 * tl.load(s_ptr + _single_places(n0)).to(tl.float32)
        r1 = r1 * tl.load(s_ptr + _single_places(n0 + 8)).to(tl.float32)
    tl.store(ws_ptr + pid_k * N + n0, r0)
    tl.store(ws_ptr + pid_k * N + n0 + 8, r1)
