"""The Triton kernels behind `runtime.triton_gemm` (imported only when a kernel is first needed).

See `triton_gemm` for the tile map they implement. (No `from __future__ import annotations` here:
Triton reads the `tl.constexpr` annotations of kernel parameters.)
"""
import triton
import triton.language as tl

__all__ = ["marlin_gemm_kernel", "marlin_gemm_wide_kernel", "splitk_reduce_kernel"]

ZMODE_SYM = 0
ZMODE_ZEROS = 1
ZMODE_SHIFT = 2


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
    zw = nb * 8 + c
    zsh0 = 4 * w
    zsh1 = 4 * w + 16

    r = tl.arange(0, R)
    tr = r // 4
    kq = 2 * (r % 4)
    m = pid_m * BM + tl.arange(0, BM)
    m_ok = m < M
    x_rows = x_ptr + m[:, None].to(tl.int64) * stride_xm

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

    mask = m_ok[:, None] & col_ok[None, :]
    if split_k == 1:
        if has_bias:
            acc0 += tl.load(bias_ptr + n0, mask=col_ok, other=0).to(tl.float32)[None, :]
            acc1 += tl.load(bias_ptr + n1, mask=col_ok, other=0).to(tl.float32)[None, :]
        out_row = out_ptr + m[:, None].to(tl.int64) * stride_om
        tl.store(out_row + n0[None, :], acc0.to(dtype), mask=mask)
        tl.store(out_row + n1[None, :], acc1.to(dtype), mask=mask)
    else:
        ws_row = ws_ptr + (pid_k * M + m[:, None]).to(tl.int64) * N
        tl.store(ws_row + n0[None, :], acc0, mask=mask)
        tl.store(ws_row + n1[None, :], acc1, mask=mask)


@triton.jit(do_not_specialize=["M", "has_bias"])
def splitk_reduce_kernel(ws_ptr, bias_ptr, out_ptr, M, N, stride_om, has_bias, SPLIT: tl.constexpr,
                         BLOCK: tl.constexpr):
    """out[m, n] = sum over splits of ws[s, m, n] (+ bias[n]), in float32, rounded once."""
    pid = tl.program_id(0)
    i = pid * BLOCK + tl.arange(0, BLOCK)
    ok = i < M * N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLIT):
        acc += tl.load(ws_ptr + s * M * N + i, mask=ok, other=0)
    n = i % N
    if has_bias:
        acc += tl.load(bias_ptr + n, mask=ok, other=0).to(tl.float32)
    mm = i // N
    tl.store(out_ptr + mm.to(tl.int64) * stride_om + n, acc.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit(do_not_specialize=["M", "group_size", "tiles_per_split", "has_perm", "has_bias", "split_k"])
def marlin_gemm_wide_kernel(
    x_ptr, b_ptr, s_ptr, z_ptr, sh_ptr, perm_ptr, bias_ptr, out_ptr, ws_ptr,
    M, N, stride_xm, stride_om, group_size, tiles_per_split,
    has_perm, has_bias, split_k,
    ZMODE: tl.constexpr, SINGLE: tl.constexpr, SCALE_W: tl.constexpr, IS_FP16: tl.constexpr,
    BM: tl.constexpr, BT: tl.constexpr, NB: tl.constexpr,
):
    """One `[BM, 16 BT] x [16 BT, 64 NB]` dot per step: the words tile is widened to the whole weight tile
    (rows (t, q, h, a), columns (nb, c, w, b): Marlin's scale order). Without SCALE_W the dot runs on the
    exact integers `code - zero` and each group's float32 partial sum is scaled (quanto: minus
    `shift * sum(x)`); with SCALE_W (large M: one accumulator, fewer registers) the weights are scaled
    first, in float32, and rounded once to the activation dtype. A step never crosses a group
    (16 BT divides the group size), so K splits on step boundaries."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    R: tl.constexpr = 4 * BT
    C: tl.constexpr = 32 * NB
    BK: tl.constexpr = 16 * BT
    BN: tl.constexpr = 64 * NB
    dtype = x_ptr.dtype.element_ty
    n_blocks = N // 64
    # 0x6400 is float16 1024 and 0x4300 bfloat16 128: OR-ing a code 0..15 into the mantissa gives OFFSET + code
    MAGIC: tl.constexpr = 0x6400 if IS_FP16 else 0x4300
    OFFSET: tl.constexpr = 1024.0 if IS_FP16 else 128.0

    # the words tile as it lies: rows (t, q), columns (nb, c, w)
    col = tl.arange(0, C)
    wcol = pid_n * NB * 128 + (col // 4) * 16 + col % 4
    wcol_ok = pid_n * NB + col // 32 < n_blocks
    r = tl.arange(0, R)
    wrow = (r // 4).to(tl.int64) * (2 * N) + 4 * (r % 4)
    # the widened tile: row (r, h, a) is k = 16 t + 2 q + a + 8 h; column (nb, c, w, b) is n = 64 nb + 16 w + 8 b + c
    ro = tl.arange(0, BK)
    rr = ro // 4
    a = ro % 2
    h = (ro // 2) % 2
    krow = 16 * (rr // 4) + 2 * (rr % 4) + a + 8 * h
    co = tl.arange(0, BN)
    cidx = co // 2
    b = co % 2
    nb = pid_n * NB + cidx // 32
    cc = (cidx // 4) % 8
    cw = cidx % 4
    col_ok = nb < n_blocks
    n_out = nb * 64 + 16 * cw + 8 * b + cc
    if SINGLE:
        spos = nb * 64 + 32 * (cw // 2) + 8 * (cc // 2) + 4 * (cw % 2) + 2 * b + cc % 2
    else:
        spos = pid_n * BN + co
    zpos = nb * 8 + cc
    zshift = 4 * (cw + 4 * b)
    nib_shift = (16 * a + 4 * h)[:, None] + (8 * b)[None, :]

    m = pid_m * BM + tl.arange(0, BM)
    m_ok = m < M
    x_rows = x_ptr + m[:, None].to(tl.int64) * stride_xm

    acc = tl.zeros((BM, BN), dtype=tl.float32)
    xsum = tl.zeros((BM,), dtype=tl.float32)
    t_begin = pid_k * tiles_per_split
    for step in range(0, tiles_per_split // BT):
        t0 = t_begin + step * BT
        words = tl.load(b_ptr + t0.to(tl.int64) * (2 * N) + wrow[:, None] + wcol[None, :], mask=wcol_ok[None, :], other=0)
        wide = tl.reshape(tl.broadcast_to(words[:, None, :, None], (R, 4, C, 2)), (BK, BN))
        # code + OFFSET as a float by bit pattern (no int-to-float conversion): exact, as is the difference below
        q = (((wide >> nib_shift) & 0xF) | MAGIC).to(tl.int16).to(dtype, bitcast=True)
        k = 16 * t0 + krow
        if has_perm:
            k = tl.load(perm_ptr + k)
        xa = tl.load(x_rows + k[None, :], mask=m_ok[:, None], other=0)
        if SINGLE:
            g = 0
        else:
            g = (16 * t0) // group_size
        if ZMODE == 1:
            zw = tl.load(z_ptr + g * (N // 8) + zpos, mask=col_ok, other=0)
            q = q - (((zw >> zshift) & 0xF).to(tl.float32) + OFFSET).to(dtype)[None, :]
        elif ZMODE == 0:
            q = q - (OFFSET + 8.0)
        else:
            q = q - OFFSET
        if SCALE_W:  # weights (code - zero) * scale rounded once to the activation dtype; one accumulator
            s = tl.load(s_ptr + g * N + spos, mask=col_ok, other=0).to(tl.float32)
            wf = q.to(tl.float32) * s[None, :]
            if ZMODE == 2:
                wf = wf - tl.load(sh_ptr + g * N + spos, mask=col_ok, other=0).to(tl.float32)[None, :]
            acc = tl.dot(xa, wf.to(dtype), acc)
        else:  # exact integer weights; each group's float32 partial sum is scaled
            part = tl.dot(xa, q.to(dtype))
            if ZMODE == 2:
                xpart = tl.sum(xa.to(tl.float32), axis=1)
            if SINGLE:
                acc += part
                if ZMODE == 2:
                    xsum += xpart
            else:
                s = tl.load(s_ptr + g * N + spos, mask=col_ok, other=0).to(tl.float32)
                acc += part * s[None, :]
                if ZMODE == 2:
                    sh = tl.load(sh_ptr + g * N + spos, mask=col_ok, other=0).to(tl.float32)
                    acc -= xpart[:, None] * sh[None, :]
    if SINGLE and not SCALE_W:
        s = tl.load(s_ptr + spos, mask=col_ok, other=0).to(tl.float32)
        acc = acc * s[None, :]
        if ZMODE == 2:
            sh = tl.load(sh_ptr + spos, mask=col_ok, other=0).to(tl.float32)
            acc -= xsum[:, None] * sh[None, :]

    mask = m_ok[:, None] & col_ok[None, :]
    if split_k == 1:
        if has_bias:
            acc += tl.load(bias_ptr + n_out, mask=col_ok, other=0).to(tl.float32)[None, :]
        out_row = out_ptr + m[:, None].to(tl.int64) * stride_om
        tl.store(out_row + n_out[None, :], acc.to(dtype), mask=mask)
    else:
        ws_row = ws_ptr + (pid_k * M + m[:, None]).to(tl.int64) * N
        tl.store(ws_row + n_out[None, :], acc, mask=mask)
