"""The Triton kernels behind `runtime.triton_gemm` (imported only when a kernel is first needed).

See `triton_gemm` for the tile map they implement. (No `from __future__ import annotations` here:
Triton reads the `tl.constexpr` annotations of kernel parameters.)
"""
import triton
import triton.language as tl

__all__ = ["marlin_gemm_kernel", "marlin_gemm_swap_kernel",
           "splitk_reduce_kernel", "splitk_zero_reduce_kernel", "segment_reduce_kernel"]

ZMODE_SYM = 0
ZMODE_ZEROS = 1
ZMODE_SHIFT = 2


# ----------------------------------------------------------------------------- programmatic dependent launch
# sm_90+: a kernel launched with `launch_pdl=True` may start while the kernel before it on the stream still runs;
# `griddepcontrol.wait` holds it until that kernel has finished and its writes are visible (a no-op when it was
# launched without). The earlier kernel's `griddepcontrol.launch_dependents` lets the later one launch before it
# ends (without it: once each of its programs has exited).
@triton.jit
def wait_prior_grid():
    """Wait for the kernel before this one on the stream (`griddepcontrol.wait`; sm_90+)."""
    tl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def launch_dependents():
    """Let the next kernel on the stream launch, if it was launched with `launch_pdl=True` (sm_90+)."""
    tl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [], dtype=tl.int32, is_pure=False,
                              pack=1)


# ----------------------------------------------------------------------------- two weights per instruction
# Marlin's own trick (IST-DASLab marlin `dequant`, vLLM gptq_marlin/dequant.h): OR a 4-bit code into the
# mantissa of a float whose ulp is 1 (fp16 1024 = 0x6400, bf16 128 = 0x4300) to get `MAGIC + code` exactly,
# two 16-bit lanes per `lop3`, then subtract `MAGIC + zero` (exact) and multiply by the scale (one rounding,
# as `(code - zero) * scale` in float32 rounded once to the activation dtype; quanto: one fma
# `code * scale - shift`, one rounding) with packed half2 / bfloat162 instructions.
# One 32-bit word (nibble i = 4a + 2b + h) gives eight weights: output 4a + 2h + b. A `prmt` moves bytes
# 2a, 2a + 1 (b = 0, 1) to the two 16-bit lanes; the low nibbles are h = 0, the high ones h = 1 (fp16:
# masked in place, as 1024 + 16 code, and brought to 1024 + code by one exact fma; bf16: shifted down).
def _dequant_asm(fp16: bool, zmode: int, scaled: bool = True) -> str:
    """The PTX for one word: input $8 (word); outputs $0..$7 (4a + 2h + b). Each 32-bit result pairs a = 0, 1
    (nibbles j, j + 4: bits 4j and 16 + 4j), the k-adjacent pair that a tensor-core operand register holds.
    Scaled: $9 holds the scales of b = 0, 1 as the low and high halves of one 32-bit register and, for zero
    points or a shift, $10 likewise (fp16 1024 + z, bf16 -(128 + z), or -shift). Unscaled (the integer
    `code - zero`, exact; the caller scales the float32 sums): for zero points $9 (fp16 1024 + z, bf16
    -(128 + z)) and $10 (fp16 -(64 + z), for the high nibbles that the mask leaves 16x: one fma)."""
    lines = ["{", ".reg .b32 p, v, s0, s1, z0, z1, y0, y1, c0, c1, k1, k2;"]
    if scaled:
        lines += ["prmt.b32 s0, $9, 0, 0x1010;", "prmt.b32 s1, $9, 0, 0x3232;"]
    ez = "$10" if scaled else "$9"
    if zmode == 1:
        lines += [f"prmt.b32 z0, {ez}, 0, 0x1010;", f"prmt.b32 z1, {ez}, 0, 0x3232;"]
        if not scaled and fp16:
            lines += ["prmt.b32 y0, $10, 0, 0x1010;", "prmt.b32 y1, $10, 0, 0x3232;"]
    else:
        zc = {(True, 0): "0x64086408", (True, 2): "0x64006400", (False, 0): "0xC308C308", (False, 2): "0xC300C300"}[fp16, zmode]
        lines += [f"mov.b32 z0, {zc};", "mov.b32 z1, z0;", "mov.b32 y0, 0xD480D480;", "mov.b32 y1, y0;"]
    if zmode == 2:
        lines += ["prmt.b32 c0, $10, 0, 0x1010;", "prmt.b32 c1, $10, 0, 0x3232;"]
    else:
        lines += ["mov.b32 c0, 0x80008000;", "mov.b32 c1, c0;"]
    if fp16:
        lines += ["mov.b32 k1, 0x2C002C00;", "mov.b32 k2, 0x63806380;"]
    else:
        lines += ["mov.b32 k1, 0x3F803F80;"]
    for b in range(2):
        for h in range(2):
            j = 2 * b + h  # nibbles j (a = 0) and j + 4 (a = 1)
            if fp16:
                src = "$8" if b == 0 else "p"
                if h == 0:
                    if b == 1:
                        lines.append("shr.b32 p, $8, 8;")
                    lines += [f"lop3.b32 v, {src}, 0x000F000F, 0x64006400, 0xEA;", f"sub.f16x2 v, v, z{b};"]
                elif scaled:
                    lines += [f"lop3.b32 v, {src}, 0x00F000F0, 0x64006400, 0xEA;", "fma.rn.f16x2 v, v, k1, k2;",
                              f"sub.f16x2 v, v, z{b};"]
                else:  # (1024 + 16 code) / 16 - (64 + z), exact
                    lines += [f"lop3.b32 v, {src}, 0x00F000F0, 0x64006400, 0xEA;", f"fma.rn.f16x2 v, v, k1, y{b};"]
                if scaled:
                    lines.append(f"fma.rn.f16x2 v, v, s{b}, c{b};")
            else:
                lines += [f"shr.b32 p, $8, {4 * j};" if j else "mov.b32 p, $8;",
                          "lop3.b32 v, p, 0x000F000F, 0x43004300, 0xEA;", f"fma.rn.bf16x2 v, v, k1, z{b};"]
                if scaled:
                    lines.append(f"fma.rn.bf16x2 v, v, s{b}, c{b};")
            lines.append(f"mov.b32 {{${2 * h + b}, ${4 + 2 * h + b}}}, v;")
    lines.append("}")
    return "\n".join(lines)


ASM_F16_SYM = tl.constexpr(_dequant_asm(True, 0))
ASM_F16_ZEROS = tl.constexpr(_dequant_asm(True, 1))
ASM_F16_SHIFT = tl.constexpr(_dequant_asm(True, 2))
ASM_BF16_SYM = tl.constexpr(_dequant_asm(False, 0))
ASM_BF16_ZEROS = tl.constexpr(_dequant_asm(False, 1))
ASM_BF16_SHIFT = tl.constexpr(_dequant_asm(False, 2))
INT_F16_SYM = tl.constexpr(_dequant_asm(True, 0, False))
INT_F16_ZEROS = tl.constexpr(_dequant_asm(True, 1, False))
INT_BF16_SYM = tl.constexpr(_dequant_asm(False, 0, False))
INT_BF16_ZEROS = tl.constexpr(_dequant_asm(False, 1, False))
EIGHT_F16 = tl.constexpr((tl.float16,) * 8)
EIGHT_BF16 = tl.constexpr((tl.bfloat16,) * 8)
CONSTRAINTS_1 = tl.constexpr(",".join(["=h"] * 8 + ["r"]))
CONSTRAINTS_2 = tl.constexpr(",".join(["=h"] * 8 + ["r", "r"]))
CONSTRAINTS_3 = tl.constexpr(",".join(["=h"] * 8 + ["r", "r", "r"]))


@triton.jit
def _dequant8(words, sp, ep, ZMODE: tl.constexpr, IS_FP16: tl.constexpr):
    """The eight weights of each word as eight tensors like `words` (output 4a + 2h + b); sp: the scales of
    columns b = 0, 1 packed in one int32 (low, high half), ep: the zero-point terms (see `_dequant_asm`) or
    -shift packed likewise, both shaped like `words`."""
    if IS_FP16:
        return _asm8(words, sp, ep, ASM_F16_SYM, ASM_F16_ZEROS, ASM_F16_SHIFT, EIGHT_F16, ZMODE)
    else:
        return _asm8(words, sp, ep, ASM_BF16_SYM, ASM_BF16_ZEROS, ASM_BF16_SHIFT, EIGHT_BF16, ZMODE)


@triton.jit
def _asm8(words, sp, ep, SYM: tl.constexpr, ZEROS: tl.constexpr, SHIFT: tl.constexpr, EIGHT: tl.constexpr,
          ZMODE: tl.constexpr):
    """`_dequant8` for one activation dtype: its three PTX variants and its eight output dtypes."""
    if ZMODE == 0:
        return tl.inline_asm_elementwise(SYM, CONSTRAINTS_2, [words, sp], dtype=EIGHT, is_pure=True, pack=1)
    elif ZMODE == 1:
        return tl.inline_asm_elementwise(ZEROS, CONSTRAINTS_3, [words, sp, ep], dtype=EIGHT, is_pure=True, pack=1)
    else:
        return tl.inline_asm_elementwise(SHIFT, CONSTRAINTS_3, [words, sp, ep], dtype=EIGHT, is_pure=True, pack=1)


@triton.jit
def _int8(words, e0, e1, ZMODE: tl.constexpr, IS_FP16: tl.constexpr):
    """`_dequant8` without the scales: the eight `code - zero` of each word, exact (ZMODE 0 or 1); e0, e1:
    the packed zero-point terms of `_dequant_asm(scaled=False)` (ZMODE 1), shaped like `words`."""
    if ZMODE == 0:
        if IS_FP16:
            return tl.inline_asm_elementwise(INT_F16_SYM, CONSTRAINTS_1, [words], dtype=EIGHT_F16, is_pure=True,
                                             pack=1)
        else:
            return tl.inline_asm_elementwise(INT_BF16_SYM, CONSTRAINTS_1, [words], dtype=EIGHT_BF16, is_pure=True,
                                             pack=1)
    elif IS_FP16:
        return tl.inline_asm_elementwise(INT_F16_ZEROS, CONSTRAINTS_3, [words, e0, e1], dtype=EIGHT_F16,
                                         is_pure=True, pack=1)
    else:
        return tl.inline_asm_elementwise(INT_BF16_ZEROS, CONSTRAINTS_2, [words, e0], dtype=EIGHT_BF16,
                                         is_pure=True, pack=1)


@triton.jit
def _dequant(words, s, z, sh, PLANE: tl.constexpr, ZMODE: tl.constexpr, dtype: tl.constexpr):
    """Nibble plane `PLANE` of the words as weights in `dtype` (dequantized in float32, one rounding)."""
    q = ((words >> (4 * PLANE)) & 0xF).to(tl.float32)
    if ZMODE == 2:
        w = q * s - sh
    elif ZMODE == 1:
        w = (q - z) * s
    else:
        w = (q - 8.0) * s
    return w.to(dtype)


@triton.jit
def _x_rows(x_ptr, stride_xm, pid_m, M, BM: tl.constexpr):
    """This program's rows of x: indices, in-range mask and row pointers."""
    m = pid_m * BM + tl.arange(0, BM)
    m_ok = m < M
    return m, m_ok, x_ptr + m[:, None].to(tl.int64) * stride_xm


@triton.jit
def _zero_point_cols(nb, c, w):
    """Where the zero points of columns (nb, c, w) sit: the int32 word of a group's row, and the shifts of the
    b = 0 and b = 1 nibbles in it."""
    return nb * 8 + c, 4 * w, 4 * w + 16


@triton.jit
def _store_acc(acc, m2, n2, mask, out_ptr, ws_ptr, bias_ptr, stride_om, M, N, pid_k, split_k, has_bias):
    """A float32 accumulator tile whose element is `out[m2, n2]` (index tensors that broadcast to its shape,
    in either orientation): into `out` (+ bias, rounded once to out's dtype), or, when K is split, into this
    split's rows of the float32 workspace."""
    if split_k == 1:
        if has_bias:
            acc += tl.load(bias_ptr + n2, mask=n2 < N, other=0).to(tl.float32)
        tl.store(out_ptr + m2.to(tl.int64) * stride_om + n2, acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(ws_ptr + (pid_k * M + m2).to(tl.int64) * N + n2, acc, mask=mask)


@triton.jit
def _store_tiles(acc0, acc1, m, m_ok, n0, n1, col_ok, out_ptr, ws_ptr, bias_ptr, stride_om, M, N, pid_k, split_k,
                 has_bias):
    """A program's two float32 accumulator tiles `[BM, C]` (columns `n0`, `n1`) through `_store_acc`."""
    mask = m_ok[:, None] & col_ok[None, :]
    _store_acc(acc0, m[:, None], n0[None, :], mask, out_ptr, ws_ptr, bias_ptr, stride_om, M, N, pid_k, split_k,
               has_bias)
    _store_acc(acc1, m[:, None], n1[None, :], mask, out_ptr, ws_ptr, bias_ptr, stride_om, M, N, pid_k, split_k,
               has_bias)


@triton.jit(do_not_specialize=["M", "group_size", "tiles_per_split", "single", "has_perm", "has_bias", "split_k"])
def marlin_gemm_kernel(
    x_ptr, b_ptr, s_ptr, z_ptr, sh_ptr, perm_ptr, bias_ptr, out_ptr, ws_ptr,
    M, N, stride_xm, stride_om, group_size, tiles_per_split,
    single, has_perm, has_bias, split_k,
    ZMODE: tl.constexpr, UNIFORM_G: tl.constexpr,
    BM: tl.constexpr, BT: tl.constexpr, NB: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    R: tl.constexpr = 4 * BT  # rows of one nibble plane: (tile row, q)
    C: tl.constexpr = 32 * NB  # columns of one nibble plane: (64-block, c, w)
    dtype = x_ptr.dtype.element_ty

    col = tl.arange(0, C)
    nb = pid_n * NB + col // 32
    c = (col // 4) % 8
    w = col % 4
    col_ok = nb < N // 64
    wcol = pid_n * NB * 128 + (col // 4) * 16 + w  # word offset inside a tile row
    # output columns and scale / zero positions of the two column planes b = 0, 1 (DESIGN §4)
    n0 = nb * 64 + w * 16 + c
    n1 = n0 + 8
    sp_grouped = nb * 64 + c * 8 + w * 2
    sp_single = nb * 64 + (w // 2) * 32 + (c // 2) * 8 + (w % 2) * 4 + c % 2
    sp0 = tl.where(single != 0, sp_single, sp_grouped)
    sp1 = tl.where(single != 0, sp_single + 2, sp_grouped + 1)
    zw, zsh0, zsh1 = _zero_point_cols(nb, c, w)

    r = tl.arange(0, R)
    tr = r // 4
    kq = 2 * (r % 4)
    m, m_ok, x_rows = _x_rows(x_ptr, stride_xm, pid_m, M, BM)
    acc0 = tl.zeros((BM, C), dtype=tl.float32)
    acc1 = tl.zeros((BM, C), dtype=tl.float32)
    t_begin = pid_k * tiles_per_split
    for step in range(0, tiles_per_split // BT):
        t0 = t_begin + step * BT
        t = t0 + tr
        words = tl.load(b_ptr + (t.to(tl.int64) * (2 * N) + 2 * kq)[:, None] + wcol[None, :], mask=col_ok[None, :], other=0)
        if UNIFORM_G:
            g = (16 * t0) // group_size
            s0 = tl.load(s_ptr + g * N + sp0, mask=col_ok, other=0).to(tl.float32)[None, :]
            s1 = tl.load(s_ptr + g * N + sp1, mask=col_ok, other=0).to(tl.float32)[None, :]
            if ZMODE == 1:
                zwd = tl.load(z_ptr + g * (N // 8) + zw, mask=col_ok, other=0)
                z0 = ((zwd >> zsh0) & 0xF).to(tl.float32)[None, :]
                z1 = ((zwd >> zsh1) & 0xF).to(tl.float32)[None, :]
            else:
                z0 = 0.0
                z1 = 0.0
            if ZMODE == 2:
                h0 = tl.load(sh_ptr + g * N + sp0, mask=col_ok, other=0).to(tl.float32)[None, :]
                h1 = tl.load(sh_ptr + g * N + sp1, mask=col_ok, other=0).to(tl.float32)[None, :]
            else:
                h0 = 0.0
                h1 = 0.0
        else:
            g = ((16 * t) // group_size)[:, None]
            m2 = col_ok[None, :]
            s0 = tl.load(s_ptr + g * N + sp0[None, :], mask=m2, other=0).to(tl.float32)
            s1 = tl.load(s_ptr + g * N + sp1[None, :], mask=m2, other=0).to(tl.float32)
            if ZMODE == 1:
                zwd = tl.load(z_ptr + g * (N // 8) + zw[None, :], mask=m2, other=0)
                z0 = ((zwd >> zsh0[None, :]) & 0xF).to(tl.float32)
                z1 = ((zwd >> zsh1[None, :]) & 0xF).to(tl.float32)
            else:
                z0 = 0.0
                z1 = 0.0
            if ZMODE == 2:
                h0 = tl.load(sh_ptr + g * N + sp0[None, :], mask=m2, other=0).to(tl.float32)
                h1 = tl.load(sh_ptr + g * N + sp1[None, :], mask=m2, other=0).to(tl.float32)
            else:
                h0 = 0.0
                h1 = 0.0
        # nibble i = 4a + 2b + h of word (t, c, q, w) is W[k = 16t + 2q + a + 8h, n = 64nb + 16w + 8b + c]
        for a in tl.static_range(2):
            for h in tl.static_range(2):
                k = 16 * t + kq + a + 8 * h
                if has_perm:
                    k = tl.load(perm_ptr + k)
                xa = tl.load(x_rows + k[None, :], mask=m_ok[:, None], other=0)
                acc0 += tl.dot(xa, _dequant(words, s0, z0, h0, 4 * a + h, ZMODE, dtype))
                acc1 += tl.dot(xa, _dequant(words, s1, z1, h1, 4 * a + 2 + h, ZMODE, dtype))

    _store_tiles(acc0, acc1, m, m_ok, n0, n1, col_ok, out_ptr, ws_ptr, bias_ptr, stride_om, M, N, pid_k, split_k,
                 has_bias)


@triton.jit(do_not_specialize=["M", "has_bias"])
def splitk_reduce_kernel(ws_ptr, bias_ptr, out_ptr, M, N, stride_om, has_bias, SPLIT: tl.constexpr,
                         BLOCK: tl.constexpr, WAIT_PRIOR: tl.constexpr = False):
    """out[m, n] = sum over splits of ws[s, m, n] (+ bias[n]), in float32, rounded once. WAIT_PRIOR: first
    `wait_prior_grid` (launched with `launch_pdl=True` after the kernel that writes ws)."""
    if WAIT_PRIOR:
        wait_prior_grid()
    pid = tl.program_id(0)
    i = pid * BLOCK + tl.arange(0, BLOCK)
    ok = i < M * N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLIT):
        acc += tl.load(ws_ptr + s * M * N + i, mask=ok, other=0)
    _store_acc(acc, i // N, i % N, ok, out_ptr, ws_ptr, bias_ptr, stride_om, M, N, 0, 1, has_bias)


@triton.jit
def _single_places(n):
    """Where output row n's scale sits in the Marlin-permuted scales of one group spanning K (n = 64 nb + 16 w +
    8 b + c: `64 nb + 32 (w // 2) + 8 (c // 2) + 4 (w % 2) + 2 b + c % 2`)."""
    return ((n // 64) * 64 + ((n // 32) % 2) * 32 + ((n % 8) // 2) * 8 + ((n // 16) % 2) * 4 + ((n // 8) % 2) * 2
            + n % 2)


@triton.jit
def _grouped_places(n):
    """Where output row n's grouped scale, zero-point word and zero-point nibble shift sit in a group's row of
    the Marlin-permuted `s` and `z` (n = 64 nb + 16 w + 8 b + c: scale `64 nb + 8 c + 2 w + b`, zero point
    nibble `w + 4 b` of word `8 nb + c`)."""
    spn = (n // 64) * 64 + (n % 8) * 8 + ((n // 16) % 4) * 2 + (n // 8) % 2
    zwn = (n // 64) * 8 + n % 8
    zshn = 4 * ((n // 16) % 4) + 16 * ((n // 8) % 2)
    return spn, zwn, zshn


@triton.jit(do_not_specialize=["M", "groups", "has_bias"])
def splitk_zero_reduce_kernel(ws_ptr, xs_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, M, N, stride_om, groups, has_bias,
                              SPLIT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, GC: tl.constexpr):
    """`out[m, n] = sum over splits of ws[s, m, n] + sum over groups g of xs[m, g] e[g, n] (+ bias[n])`, in
    float32, rounded once: the symmetric kernel's partials (weights `code - 8`) with each group's zero-point
    term `e = (8 - zero) scale` (`_folded_zero`) times the sum of x over the group (`xs`, float32 `[M,
    groups]`), `GC` groups to a float32 FMA `dot` (KernelConfig.zred). A `[BM, BN]` tile of out a program."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    n = pid_n * BN + tl.arange(0, BN)
    m = pid_m * BM + tl.arange(0, BM)
    n_ok = n < N
    m_ok = m < M
    ok = m_ok[:, None] & n_ok[None, :]
    off = m[:, None].to(tl.int64) * N + n[None, :]
    plane = M.to(tl.int64) * N
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for s in tl.static_range(SPLIT):
        acc += tl.load(ws_ptr + s * plane + off, mask=ok, other=0)
    spn, zwn, zshn = _grouped_places(n)
    jg = tl.arange(0, GC)
    for g0 in range(0, groups, GC):
        g = g0 + jg
        gk = (g < groups)[:, None] & n_ok[None, :]
        sf = tl.load(s_ptr + g[:, None] * N + spn[None, :], mask=gk, other=0).to(tl.float32)
        zwords = tl.load(z_ptr + g[:, None] * (N // 8) + zwn[None, :], mask=gk, other=0)
        e = _folded_zero(zwords, zshn[None, :], sf)
        xs = tl.load(xs_ptr + m[:, None] * groups + g[None, :], mask=m_ok[:, None] & (g < groups)[None, :], other=0)
        acc = tl.dot(xs, e, acc, input_precision="ieee")
    _store_acc(acc, m[:, None], n[None, :], ok, out_ptr, ws_ptr, bias_ptr, stride_om, M, N, 0, 1, has_bias)


@triton.jit
def _pair(lo, hi):
    """Two 16-bit floats as the low and high halves of one int32 (the operand form of `_dequant8`)."""
    return (lo.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF) | (hi.to(tl.int16, bitcast=True).to(tl.int32) << 16)


@triton.jit
def _fast_params(s_ptr, z_ptr, sh_ptr, N, g, sp0, zw, zsh0, zsh1, cm,
                 ZMODE: tl.constexpr, SINGLE: tl.constexpr, IS_FP16: tl.constexpr):
    """Scales and zero-point / shift terms of group row(s) `g` (a scalar or `[R, 1]`) as `_dequant8`'s
    packed pairs; the scales of columns b = 0, 1 sit at `sp0`, `sp0 + d` (d = 2 for one group, else 1).
    (2-byte loads: as 4-byte pairs Triton's pipeliner stages them in shared memory and reloads them for
    every word of the broadcast, about 100 more shared loads a step in the SASS.)"""
    d = 2 if SINGLE else 1
    gs = g * N
    sp = _pair(tl.load(s_ptr + gs + sp0[None, :], mask=cm, other=0),
               tl.load(s_ptr + gs + sp0[None, :] + d, mask=cm, other=0))
    if ZMODE == 1:
        zwd = tl.load(z_ptr + g * (N // 8) + zw[None, :], mask=cm, other=0)
        zz = ((zwd >> zsh0[None, :]) & 0xF) | (((zwd >> zsh1[None, :]) & 0xF) << 16)
        ep = zz | (0x64006400 if IS_FP16 else -0x3CFF3D00)  # fp16 1024 + z; bf16 -(128 + z) (0xC300C300)
    elif ZMODE == 2:
        ep = _pair(tl.load(sh_ptr + gs + sp0[None, :], mask=cm, other=0),
                   tl.load(sh_ptr + gs + sp0[None, :] + d, mask=cm, other=0))
        ep = ep ^ -0x7FFF8000  # -shift: flip both sign bits (0x80008000)
    else:
        ep = sp
    return sp, ep


@triton.jit
def _fast_x_tile(x_rows, perm_ptr, t0, kk, m_ok, HAS_PERM: tl.constexpr, BT: tl.constexpr):
    """x columns `16 t0 .. 16 t0 + 16 BT` (through `perm`)."""
    k = 16 * t0 + kk
    if HAS_PERM:
        k = tl.load(perm_ptr + k)
    else:
        k = tl.max_contiguous(tl.multiple_of(k, 16), 16 * BT)
    return tl.load(x_rows + k[None, :], mask=m_ok[:, None], other=0)


@triton.jit
def _zero_terms(z_ptr, N, g, zw, zsh0, zsh1, cm, IS_FP16: tl.constexpr):
    """`_int8`'s packed zero-point terms of group row `g` (fp16: 1024 + z and -(64 + z); bf16: -(128 + z))."""
    zwd = tl.load(z_ptr + g * (N // 8) + zw[None, :], mask=cm, other=0)
    z0 = (zwd >> zsh0[None, :]) & 0xF
    z1 = (zwd >> zsh1[None, :]) & 0xF
    if IS_FP16:
        return z0 | (z1 << 16) | 0x64006400, (z0 << 4) | (z1 << 20) | -0x2BFF2C00  # 0xD400D400
    else:
        return z0 | (z1 << 16) | -0x3CFF3D00, z0  # 0xC300C300


SETTLE_ASM = tl.constexpr("mov.b32 $0, $1;")


@triton.jit
def _settled(acc):
    """`acc` through an opaque copy (ptxas drops the `mov`s). Its use in the step makes Triton wait for the
    step's `wgmma`s (`wgmma.wait_group 0`) before the next step decodes its weights into the same registers.
    Without it Triton 3.6 leaves up to 7 of a step's 8 `wgmma`s in flight across the loop's back edge while
    the next step's decode overwrites their register operand (Triton issue 9433; sm_90 SASS: 79-176 such
    writes in the swapped loops that accumulate in the dot, none with it; BENCHMARKS.md GEMM round 9).
    `acc += dot * scale` (SCALE_ACC) waits already."""
    return tl.inline_asm_elementwise(SETTLE_ASM, "=r,r", [acc], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _zero_words(z_ptr, N, g, zwn, mask):
    """The int32 words of group row `g` that hold rows n's zero points (word `zwn` of the row)."""
    return tl.load(z_ptr + g * (N // 8) + zwn, mask=mask, other=0)


@triton.jit
def _folded_zero(zwords, zshn, sf):
    """The float32 per-row term `e = (8 - zero) s` that folds a zero point into sums of the symmetric weights
    `code - 8`: `sum_k x (code - zero) s = s sum_k x (code - 8) + e sum_k x` (rows n's zero points at bit `zshn`
    of `zwords`, from `_zero_words`; `sf`: their scales; all three broadcast, `[64 NB, 1]` for one step,
    `[64 NB, 16]` for 16 steps in `_late_zero_terms`)."""
    return (8 - ((zwords >> zshn) & 0xF)).to(tl.float32) * sf


@triton.jit
def _late_zero_terms(s_ptr, z_ptr, sh_ptr, N, g_shift, t_begin, steps, all_steps, spn, n_ok, zwn, zshn, m, m_ok,
                     BM: tl.constexpr, BT: tl.constexpr, NB: tl.constexpr):
    """`sum over steps of e * sum_k x` `[64 NB, BM]` for `steps` steps from tile row `t_begin` (ZLATE): the
    per-row terms `e` (`_folded_zero`) of 16 steps at a time `[64 NB, 16]` times the caller's float32 sums of x
    per step `[16, BM]` (`sh_ptr`, `[M, all steps]`), a float32 FMA `dot`; all of a chunk's loads are issued
    together, not one dependent round trip a step."""
    ZC: tl.constexpr = 16
    jz = tl.arange(0, ZC)
    zacc = tl.zeros((64 * NB, BM), dtype=tl.float32)
    for c0 in range(0, steps, ZC):
        st_ok = c0 + jz < steps
        t0 = t_begin + (c0 + jz) * BT
        g = (16 * t0) >> g_shift
        ok = n_ok[:, None] & st_ok[None, :]
        sf = tl.load(s_ptr + g[None, :] * N + spn[:, None], mask=ok, other=0).to(tl.float32)
        zwords = tl.load(z_ptr + g[None, :] * (N // 8) + zwn[:, None], mask=ok, other=0)
        e = _folded_zero(zwords, zshn[:, None], sf)
        xs = tl.load(sh_ptr + m[None, :] * all_steps + (t0 // BT)[:, None], mask=m_ok[None, :] & st_ok[:, None], other=0)
        zacc = tl.dot(e, xs, zacc, input_precision="ieee")
    return zacc


@triton.jit
def _swap_tile(x_ptr, b_ptr, s_ptr, z_ptr, sh_ptr, perm_ptr, M, N, stride_xm, g_shift, pid_n, pid_m, t_begin, steps,
               all_steps,
               ZMODE: tl.constexpr, UNIFORM_G: tl.constexpr, SINGLE: tl.constexpr, HAS_PERM: tl.constexpr,
               IS_FP16: tl.constexpr, BM: tl.constexpr, BT: tl.constexpr, NB: tl.constexpr,
               SCALE_ACC: tl.constexpr, FOLD: tl.constexpr, TMA: tl.constexpr = False, ZPRE: tl.constexpr = False,
               XSUM: tl.constexpr = False, ZLATE: tl.constexpr = False):
    """The float32 sums `[64 NB, BM]` of one tile of `out.T` (rows n `64 NB pid_n ..` in order, columns the
    rows m of x) over `steps` steps of `BT` tile rows from tile row `t_begin`, with its n and m indices."""
    C: tl.constexpr = 32 * NB  # word columns (nb, c, w), the per-column terms of `_dequant8` / `_int8`
    col = tl.arange(0, C)
    nb = pid_n * NB + col // 32
    c = (col // 4) % 8
    w = col % 4
    cm = (nb < N // 64)[None, :]
    if SINGLE:
        sp0 = nb * 64 + (w // 2) * 32 + (c // 2) * 8 + (w % 2) * 4 + c % 2
    else:
        sp0 = nb * 64 + c * 8 + w * 2
    zw, zsh0, zsh1 = _zero_point_cols(nb, c, w)
    # the rows n of the tile and where their scales sit (n = 64 nb + 16 w + 8 b + c)
    n = pid_n * NB * 64 + tl.arange(0, 64 * NB)
    n_ok = n < N
    if SINGLE:
        spn = _single_places(n)
    else:
        spn, _, _ = _grouped_places(n)
    if SINGLE:
        if SCALE_ACC:
            if ZMODE == 1 and not FOLD:
                e0, e1 = _zero_terms(z_ptr, N, 0, zw, zsh0, zsh1, cm, IS_FP16)
                e0 = tl.reshape(e0, (1, NB, 8, 1, 4))
                e1 = tl.reshape(e1, (1, NB, 8, 1, 4))
        else:
            sp, ep = _fast_params(s_ptr, z_ptr, sh_ptr, N, 0, sp0, zw, zsh0, zsh1, cm, ZMODE, SINGLE, IS_FP16)
            sp = tl.reshape(sp, (1, NB, 8, 1, 4))
            ep = tl.reshape(ep, (1, NB, 8, 1, 4))
    # zero point of row n (FOLD): nibble 4w + 16b of word 8nb + c of its group row
    _, zwn, zshn = _grouped_places(n)
    jj = tl.arange(0, 128 * NB)
    off5 = tl.arange(0, BT)[:, None] * (2 * N) + (pid_n * NB * 128 + jj)[None, :]  # B has < 2**31 words
    cm5 = (pid_n * NB + jj // 128 < N // 64)[None, :]
    kk = tl.arange(0, 16 * BT)
    m, m_ok, x_rows = _x_rows(x_ptr, stride_xm, pid_m, M, BM)
    acc = tl.zeros((64 * NB, BM), dtype=tl.float32)
    xs = tl.zeros((1, BM), dtype=tl.float32)  # FOLD, one group: the sums of x over K
    if ZPRE and FOLD and not SINGLE and not ZLATE:
        g0 = (16 * t_begin) >> g_shift
        s_next = tl.load(s_ptr + g0 * N + spn, mask=n_ok, other=0)
        z_next = _zero_words(z_ptr, N, g0, zwn, n_ok)
    for step in range(0, steps):
        t0 = t_begin + step * BT
        if ZPRE and FOLD and not SINGLE and not ZLATE:
            s_cur = s_next
            z_cur = z_next
            gn = (16 * (t0 + BT)) >> g_shift
            more = step + 1 < steps
            s_next = tl.load(s_ptr + gn * N + spn, mask=n_ok & more, other=0)
            z_next = _zero_words(z_ptr, N, gn, zwn, n_ok & more)
        # the words as they lie: [t, nb, c, q, w]
        if TMA:
            words = tl.reshape(b_ptr.load([t0, pid_n * NB * 128]), (BT, NB, 8, 4, 4))
        else:
            words = tl.reshape(tl.load(b_ptr + t0.to(tl.int64) * (2 * N) + off5, mask=cm5, other=0),
                               (BT, NB, 8, 4, 4))
        if SCALE_ACC:
            if not SINGLE:
                g = (16 * t0) >> g_shift
                if ZMODE == 1 and not FOLD:
                    e0, e1 = _zero_terms(z_ptr, N, g, zw, zsh0, zsh1, cm, IS_FP16)
                    e0 = tl.reshape(e0, (1, NB, 8, 1, 4))
                    e1 = tl.reshape(e1, (1, NB, 8, 1, 4))
                if ZPRE and FOLD and not ZLATE:
                    sf = s_cur.to(tl.float32)[:, None]
                    e = _folded_zero(z_cur[:, None], zshn[:, None], sf)
                else:
                    sf = tl.load(s_ptr + g * N + spn, mask=n_ok, other=0).to(tl.float32)[:, None]
                    if FOLD and not ZLATE:
                        e = _folded_zero(_zero_words(z_ptr, N, g, zwn, n_ok)[:, None], zshn[:, None], sf)
            if ZMODE == 1 and not FOLD:  # the exact integers code - zero
                wts = _int8(words, tl.broadcast_to(e0, words.shape), tl.broadcast_to(e1, words.shape), ZMODE, IS_FP16)
            else:  # the exact integers code - 8 (FOLD: the zero point is added after the dot)
                wts = _int8(words, words, words, 0, IS_FP16)
        else:
            if not SINGLE:
                if UNIFORM_G:
                    sp, ep = _fast_params(s_ptr, z_ptr, sh_ptr, N, (16 * t0) >> g_shift, sp0, zw, zsh0, zsh1, cm,
                                          ZMODE, SINGLE, IS_FP16)
                    sp = tl.reshape(sp, (1, NB, 8, 1, 4))
                    ep = tl.reshape(ep, (1, NB, 8, 1, 4))
                else:  # a group per tile row
                    g = ((16 * (t0 + tl.arange(0, BT))) >> g_shift)[:, None]
                    sp, ep = _fast_params(s_ptr, z_ptr, sh_ptr, N, g, sp0, zw, zsh0, zsh1, cm, ZMODE, SINGLE, IS_FP16)
                    sp = tl.reshape(sp, (BT, NB, 8, 1, 4))
                    ep = tl.reshape(ep, (BT, NB, 8, 1, 4))
            wts = _dequant8(words, tl.broadcast_to(sp, words.shape), tl.broadcast_to(ep, words.shape), ZMODE, IS_FP16)
        # outputs 4a + 2h + b joined a, then h, then b: [t, nb, c, q, w, a, h, b], then rows (nb, w, b, c) = n
        # and columns (t, h, q, a) = k, both in order
        w0 = tl.join(tl.join(wts[0], wts[4]), tl.join(wts[2], wts[6]))
        w1 = tl.join(tl.join(wts[1], wts[5]), tl.join(wts[3], wts[7]))
        wt = tl.reshape(tl.permute(tl.join(w0, w1), (1, 4, 7, 2, 0, 6, 3, 5)), (64 * NB, 16 * BT))
        xtile = _fast_x_tile(x_rows, perm_ptr, t0, kk, m_ok, HAS_PERM, BT)
        xt = tl.trans(xtile)
        if FOLD and not (ZLATE and not SINGLE):
            if XSUM and not SINGLE:  # the caller's float32 sums of x per step, [M, all steps]
                xsum = tl.load(sh_ptr + m * all_steps + t0 // BT, mask=m_ok, other=0)[None, :]
            else:
                xsum = tl.sum(xtile.to(tl.float32), axis=1)[None, :]
        if SCALE_ACC and not SINGLE:
            if FOLD and not ZLATE:  # two fused multiply-adds an output (GEMM round 19; `acc += dot * sf + e * xsum`
                # compiled to a multiply, an fma and an add: one rounding and 16 instructions a step more)
                acc = tl.fma(e, xsum, tl.fma(tl.dot(wt, xt), sf, acc))
            else:
                acc += tl.dot(wt, xt) * sf
        else:
            acc = _settled(tl.dot(wt, xt, acc))
            if FOLD:
                xs += xsum
    if ZLATE and FOLD and SCALE_ACC and not SINGLE:
        acc += _late_zero_terms(s_ptr, z_ptr, sh_ptr, N, g_shift, t_begin, steps, all_steps, spn, n_ok, zwn, zshn, m,
                                m_ok, BM, BT, NB)
    if SCALE_ACC and SINGLE:
        sf = tl.load(s_ptr + spn, mask=n_ok, other=0).to(tl.float32)[:, None]
        if FOLD:
            acc = acc * sf + _folded_zero(_zero_words(z_ptr, N, 0, zwn, n_ok)[:, None], zshn[:, None], sf) * xs
        else:
            acc = acc * sf
    return acc, n, n_ok, m, m_ok


@triton.jit
def _first_program(step, total, programs):
    """The program of a balanced grid (`programs` equal ranges of `total` steps) whose range holds `step`."""
    return ((step + 1) * programs - 1) // total


@triton.jit
def _tile_range(start, end, pid_n, steps_per_tile):
    """Where column tile `pid_n`'s steps begin in the run of all tiles' steps, and the part `[s0, s1)` of them that
    the range `[start, end)` of a balanced program holds."""
    base = pid_n * steps_per_tile
    return base, tl.maximum(start, base) - base, tl.minimum(end, base + steps_per_tile) - base


@triton.jit(do_not_specialize=["M", "g_shift", "steps_per_tile", "has_bias", "split_k"])
def marlin_gemm_swap_kernel(
    x_ptr, b_ptr, s_ptr, z_ptr, sh_ptr, perm_ptr, bias_ptr, out_ptr, ws_ptr,
    M, N, stride_xm, stride_om, g_shift, steps_per_tile,
    has_bias, split_k,
    ZMODE: tl.constexpr, UNIFORM_G: tl.constexpr, SINGLE: tl.constexpr, HAS_PERM: tl.constexpr,
    IS_FP16: tl.constexpr, BM: tl.constexpr, BT: tl.constexpr, NB: tl.constexpr, SCALE_ACC: tl.constexpr,
    FOLD: tl.constexpr, TMA: tl.constexpr = False, ZPRE: tl.constexpr = False, XSUM: tl.constexpr = False,
    ZLATE: tl.constexpr = False, PARTIAL: tl.constexpr = False, BALANCED: tl.constexpr = False,
    TRIGGER: tl.constexpr = False,
):
    """The packed-half kernel (Marlin's dequantization, `_dequant8` / `_int8`) with the operands swapped,
    `out.T = W x.T`: the weights are the first operand, a `[64 NB, 16 BT]` tile with rows n and columns k in
    order, made in registers from the words as they lie (`[t, nb, c, q, w]`) by the decoders and a join /
    permute that moves no data between threads (word (t, c, q, w), output 4a + 2h + b: row 64 nb + 16 w + 8 b
    + c, column 16 t + 8 h + 2 q + a), and x (transposed) the second, so on sm_90 `wgmma` takes the weights from
    registers (no shared-memory round trip; at 64 rows of x the weights are decoded once for all of them).
    Grid: (column tiles of 64 NB, row tiles of BM, `split_k` splits of the steps; the reduce kernel sums the
    splits), the tile stored transposed.
    FOLD (with SCALE_ACC and zero points): the weights are the symmetric integers `code - 8`, and each step
    adds `sums * scale + e * sum_k x` per output row (`_folded_zero`: `e = (8 - zero) * scale`); one group:
    once, after the loop. TMA: `b_ptr` is a TMA tensor descriptor of `B` with `[BT, 128 NB]` boxes (the same
    words, copied by the TMA engine). ZPRE (FOLD, groups): the next step's scales and zero words are loaded
    a step ahead. XSUM (FOLD, groups): `sh_ptr` holds the float32 sums of x over each step's k, `[M, steps]`
    (from the caller), instead of a sum of the x tile in the step. ZLATE (FOLD, groups, XSUM): the steps' loop is the
    symmetric one (`sums * scale`); the zero-point terms `e * sum_k x` of all its steps are added after it
    (`_late_zero_terms`), out of the pipelined loop. PARTIAL: the float32 sums go to the workspace even when
    K is not split (for `splitk_zero_reduce_kernel`). BALANCED: axis 0 is `split_k` programs that share all
    column tiles' steps evenly (contiguous ranges, tile by tile), each writing its partial sums of every
    column tile it touches to the workspace row of its place among that tile's programs
    (`segment_reduce_kernel` adds them). TRIGGER: `launch_dependents` first (the reduce after it waits)."""
    if TRIGGER:
        launch_dependents()
    pid_m = tl.program_id(1)
    if BALANCED:
        pid = tl.program_id(0)
        tiles_n = tl.cdiv(N, 64 * NB)
        total = tiles_n * steps_per_tile
        start = (pid * total) // split_k  # the host keeps total * split_k < 2**31
        end = ((pid + 1) * total) // split_k
        for pid_n in range(start // steps_per_tile, (end - 1) // steps_per_tile + 1):
            base, s0, s1 = _tile_range(start, end, pid_n, steps_per_tile)
            acc, n, n_ok, m, m_ok = _swap_tile(
                x_ptr, b_ptr, s_ptr, z_ptr, sh_ptr, perm_ptr, M, N, stride_xm, g_shift, pid_n, pid_m, s0 * BT,
                s1 - s0, steps_per_tile, ZMODE, UNIFORM_G, SINGLE, HAS_PERM, IS_FP16, BM, BT, NB, SCALE_ACC,
                FOLD, TMA, ZPRE, XSUM, ZLATE)
            seg = pid - _first_program(base, total, split_k)  # its place among the tile's programs
            _store_acc(acc, m[None, :], n[:, None], n_ok[:, None] & m_ok[None, :], out_ptr, ws_ptr, bias_ptr,
                       stride_om, M, N, seg, 2, has_bias)  # 2: any split but 1, so workspace row `seg`
    else:
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(2)
        s0 = (pid_k * steps_per_tile) // split_k
        s1 = ((pid_k + 1) * steps_per_tile) // split_k
        acc, n, n_ok, m, m_ok = _swap_tile(
            x_ptr, b_ptr, s_ptr, z_ptr, sh_ptr, perm_ptr, M, N, stride_xm, g_shift, pid_n, pid_m, s0 * BT, s1 - s0,
            steps_per_tile, ZMODE, UNIFORM_G, SINGLE, HAS_PERM, IS_FP16, BM, BT, NB, SCALE_ACC,
            FOLD, TMA, ZPRE, XSUM, ZLATE)
        _store_acc(acc, m[None, :], n[:, None], n_ok[:, None] & m_ok[None, :], out_ptr, ws_ptr, bias_ptr, stride_om,
                   M, N, pid_k, 0 if PARTIAL else split_k, has_bias)


@triton.jit(do_not_specialize=["M", "has_bias", "steps_per_tile", "programs"])
def segment_reduce_kernel(ws_ptr, bias_ptr, out_ptr, M, N, stride_om, has_bias, steps_per_tile, programs,
                          TILE_N: tl.constexpr, SEGMENTS: tl.constexpr, BLOCK: tl.constexpr,
                          WAIT_PRIOR: tl.constexpr = False):
    """`splitk_reduce_kernel` for a balanced grid: out[m, n] = the sum, in segment order, of the partial sums
    `ws[j, m, n]` of the programs that covered n's column tile (`TILE_N` columns; `SEGMENTS`: the most that
    share a tile) (+ bias[n]), in float32, rounded once. WAIT_PRIOR: as `splitk_reduce_kernel`'s (no rule takes
    it after a balanced grid, GEMM round 25; `scripts/gluon_prototype.py --pdl` times it)."""
    if WAIT_PRIOR:
        wait_prior_grid()
    pid = tl.program_id(0)
    i = pid * BLOCK + tl.arange(0, BLOCK)
    ok = i < M * N
    n = i % N
    base = (n // TILE_N) * steps_per_tile
    total = tl.cdiv(N, TILE_N) * steps_per_tile
    count = _first_program(base + steps_per_tile - 1, total, programs) - _first_program(base, total, programs) + 1
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for j in tl.static_range(SEGMENTS):
        acc += tl.load(ws_ptr + j * M * N + i, mask=ok & (j < count), other=0)
    _store_acc(acc, i // N, n, ok, out_ptr, ws_ptr, bias_ptr, stride_om, M, N, 0, 1, has_bias)
