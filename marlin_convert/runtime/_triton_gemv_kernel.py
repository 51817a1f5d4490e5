"""The one-row Marlin GEMV on the CUDA cores (issue #13, GEMM round 22): `y = x @ W.T` for one float16 row of x
and a layer of group 128 or one group, symmetric or with Marlin zero points, the weights read as they lie in `B`.

At one row the tensor cores idle and the served kernel's 16-row tile wastes 15/16 of each `wgmma`; what sets
the time is how many weight bytes the GPU keeps in flight against the instructions a weight costs. This
kernel decodes each word with Marlin's `lop3` trick straight to the exact `(code - 8) / 8` (two k-adjacent
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
layout gives one thread). x is read as int32 words (its fp16 pairs a = 0, 1 of (t, q, h): word 8t + 4h + q).

Precision (fp16 sums: `torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction`): the weights
`(code - 8) / 8` are exact; each lane's chain is one product and seven fused multiply-adds (8 roundings to
fp16), the lanes' sum one more, so each term of a chain errs by at most gamma_9 = 9u / (1 - 9u) of it (u =
2^-11), relative to the sum of the chain's |terms|; products under fp16's normal range err by at most 2^-25
(absolute, in units of x / 8) each operation. Everything after is float32 (the scale, the sum over chains,
steps and splits; with zero points the folded term `(8 - zero) s sum x`, so that, as for the tensor-core kernel's
`fold`, the chains' errors are relative to `|x| @ (|code - 8| s)` and the whole to `|x| @ (|code - 8| s + |8 -
zero| s)`) and the output is rounded once to float16. A chain's partial sums stay below
8 max |x|: fp16 overflows only where |x| passes 8188.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._triton_gemm_kernels import _folded_zero, _grouped_places, _single_places

__all__ = ["marlin_gemv_kernel", "chain_dot_asm"]


def chain_dot_asm(words: int = 4) -> str:
    """PTX for `words` words of one column (tile rows apart) and their x: `$0`, `$1` the float32 sums, b = 0
    and 1, of their weights `(code - 8) / 8` times x, summed in one fp16 chain a lane (a = 0, 1), then the
    lanes in fp16, widened once. Inputs: `$2 ...` the words, then each word's x pairs of h = 0 and 1 (x's
    fp16 pairs as int32). Decode of nibble j (a = 0) and j + 4 (a = 1), j = 2b + h, bits 4j (j < 2) or
    4j - 8 after a shift by 8: OR into fp16 1024 (`0x6400`, ulp 1) gives 1024 + code (mask `0x000F000F`) or
    1024 + 16 code (mask `0x00F000F0`); one fma, `* 1/8 - 129` or `* 1/128 - 9`, gives `(code - 8) / 8`
    exactly."""
    lines = ["{", ".reg .b32 p, v, d0, d1, k0, k1, y0, y1, w00, w01, w10, w11;", ".reg .b16 lo, hi, e;",
             "mov.b32 k0, 0x30003000;", "mov.b32 y0, 0xD808D808;",  # 1/8, -129
             "mov.b32 k1, 0x20002000;", "mov.b32 y1, 0xC880C880;"]  # 1/128, -9
    for i in range(words):
        word, x0, x1 = f"${2 + i}", f"${2 + words + 2 * i}", f"${3 + words + 2 * i}"
        for b in range(2):
            src = word if b == 0 else "p"
            if b == 1:
                lines.append(f"shr.b32 p, {word}, 8;")
            for h in range(2):
                mask = "0x000F000F" if h == 0 else "0x00F000F0"
                lines += [f"lop3.b32 v, {src}, {mask}, 0x64006400, 0xEA;",
                          f"fma.rn.f16x2 w{h}{b}, v, k{h}, y{h};"]
        for b in range(2):
            first = f"mul.f16x2 d{b}, w0{b}, {x0};" if i == 0 else f"fma.rn.f16x2 d{b}, w0{b}, {x0}, d{b};"
            lines += [first, f"fma.rn.f16x2 d{b}, w1{b}, {x1}, d{b};"]
    for b in range(2):
        lines += [f"mov.b32 {{lo, hi}}, d{b};", "add.f16 e, lo, hi;", f"cvt.f32.f16 ${b}, e;"]
    return "\n".join(lines + ["}"])


_CHAIN_DOT = tl.constexpr(chain_dot_asm(4))


@triton.jit
def _rows_of_i(v, NB: tl.constexpr):
    """`v` `[8, NB, 8, 4, 4]` (tile rows t first) as four tensors `[2, NB, 8, 4, 4]`, the i-th holding t = 2i + j."""
    v = tl.permute(tl.reshape(v, (4, 2, NB, 8, 4, 4)), (1, 2, 3, 4, 5, 0))
    v0, v1 = tl.split(tl.reshape(v, (2, NB, 8, 4, 4, 2, 2)))  # i = 2 i1 + i0: i0
    a, c = tl.split(v0)
    b, d = tl.split(v1)
    return a, b, c, d


@triton.jit(do_not_specialize=["steps", "g_shift"])
def marlin_gemv_kernel(x_ptr, b_ptr, s_ptr, z_ptr, ws_ptr, N, steps, g_shift, SINGLE: tl.constexpr,
                       NB: tl.constexpr, SPLIT: tl.constexpr, ZEROS: tl.constexpr):
    """float32 partials `ws[split, n] = sum over split's k of x[k] W[n, k]` for one float16 row x (K = 128
    `steps`; x 4-byte aligned), a program a (column tile of 64 NB rows n, split of the steps: split j takes
    steps `j steps // SPLIT` to `(j + 1) steps // SPLIT`, at least one). Scales: one group a step (group 128,
    `g_shift` 7) or one spanning K (`SINGLE`). ZEROS: Marlin zero points `z` (`W = (code - zero) s`), folded
    in as the tensor-core kernel's `fold` does: the chains sum the symmetric `(code - 8) / 8`, and each output
    adds `(8 - zero) s` times the float32 sum of the step's x (one group: of all its x, at the end)."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    s_first = (pid_k * steps) // SPLIT
    s_last = ((pid_k + 1) * steps) // SPLIT - 1
    xw_ptr = x_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    cols = pid_n * NB * 128 + tl.arange(0, 128 * NB)
    off = tl.arange(0, 8)[:, None] * (2 * N) + cols[None, :]
    # x's pair (a = 0, 1) of (t, q, h) is its int32 word 8 t + 4 h + q
    xoff = 8 * tl.arange(0, 8)[:, None, None] + tl.arange(0, 4)[None, :, None] + 4 * tl.arange(0, 2)[None, None, :]
    # output rows n of (nb, c, w), b = 0 (b = 1: + 8)
    n0 = (64 * (pid_n * NB + tl.arange(0, NB)[:, None, None]) + 16 * tl.arange(0, 4)[None, None, :]
          + tl.arange(0, 8)[None, :, None])
    acc0 = tl.zeros((2, NB, 8, 4, 4), dtype=tl.float32)  # [j, nb, c, q, w], b = 0
    acc1 = tl.zeros((2, NB, 8, 4, 4), dtype=tl.float32)
    spn0, zwn0, zsh0 = _grouped_places(n0)
    spn1, zwn1, zsh1 = _grouped_places(n0 + 8)
    zacc0 = tl.zeros((NB, 8, 4), dtype=tl.float32)  # ZEROS: [nb, c, w], the folded terms
    zacc1 = tl.zeros((NB, 8, 4), dtype=tl.float32)
    xtotal = 0.0  # ZEROS, SINGLE: the sum of the split's x
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
        xh0, xh1 = tl.split(xw)
        xh0 = tl.broadcast_to(tl.reshape(xh0, (8, 1, 1, 4, 1)), words.shape)
        xh1 = tl.broadcast_to(tl.reshape(xh1, (8, 1, 1, 4, 1)), words.shape)
        w0, w1, w2, w3 = _rows_of_i(words, NB)
        a0, a1, a2, a3 = _rows_of_i(xh0, NB)
        c0, c1, c2, c3 = _rows_of_i(xh1, NB)
        p0, p1 = tl.inline_asm_elementwise(_CHAIN_DOT, "=f,=f" + ",r" * 12,
                                           [w0, w1, w2, w3, a0, c0, a1, c1, a2, c2, a3, c3],
                                           dtype=(tl.float32, tl.float32), is_pure=True, pack=1)
        if ZEROS:
            xsum = tl.sum(tl.load(x_ptr + 128 * step + tl.arange(0, 128)).to(tl.float32), axis=0)
        if SINGLE:
            acc0 += p0
            acc1 += p1
            if ZEROS:
                xtotal += xsum
        else:
            g = (128 * step) >> g_shift
            s0 = tl.load(s_ptr + g * N + spn0).to(tl.float32)
            s1 = tl.load(s_ptr + g * N + spn1).to(tl.float32)
            acc0 = tl.fma(p0, tl.reshape(s0, (1, NB, 8, 1, 4)), acc0)
            acc1 = tl.fma(p1, tl.reshape(s1, (1, NB, 8, 1, 4)), acc1)
            if ZEROS:
                zacc0 = tl.fma(_folded_zero(tl.load(z_ptr + g * (N // 8) + zwn0), zsh0, s0), xsum, zacc0)
                zacc1 = tl.fma(_folded_zero(tl.load(z_ptr + g * (N // 8) + zwn1), zsh1, s1), xsum, zacc1)
    r0 = tl.sum(tl.sum(acc0, axis=3), axis=0) * 8.0  # [nb, c, w]
    r1 = tl.sum(tl.sum(acc1, axis=3), axis=0) * 8.0
    if SINGLE:
        sc0 = tl.load(s_ptr + _single_places(n0)).to(tl.float32)
        sc1 = tl.load(s_ptr + _single_places(n0 + 8)).to(tl.float32)
        if ZEROS:
            r0 = tl.fma(_folded_zero(tl.load(z_ptr + zwn0), zsh0, sc0), xtotal, r0 * sc0)
            r1 = tl.fma(_folded_zero(tl.load(z_ptr + zwn1), zsh1, sc1), xtotal, r1 * sc1)
        else:
            r0 = r0 * sc0
            r1 = r1 * sc1
    elif ZEROS:
        r0 += zacc0
        r1 += zacc1
    tl.store(ws_ptr + pid_k * N + n0, r0)
    tl.store(ws_ptr + pid_k * N + n0 + 8, r1)
