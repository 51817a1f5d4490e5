"""The Triton kernels behind `pack_triton` (imported only when a kernel is first needed).

See `pack_triton` for the word map they implement. (No `from __future__ import annotations` here:
Triton reads the `tl.constexpr` annotations of kernel parameters.)
"""
import triton
import triton.language as tl

__all__ = ["pack_kpacked_gather", "pack_kpacked_shuffle", "pack_codes", "pack_codes_gather", "unpack_codes"]


@triton.jit
def _marlin_word(pl0, pl8, ph0, ph8, sh):
    """Byte `sh / 8` of PL(n0), PL(n0 + 8), PH(n0), PH(n0 + 8), in that order, as one word."""
    return (((pl0 >> sh) & 0xFF) | (((pl8 >> sh) & 0xFF) << 8)
            | (((ph0 >> sh) & 0xFF) << 16) | (((ph8 >> sh) & 0xFF) << 24))


@triton.jit
def _pairs(a, b):
    """GPTQ words of k 16t..16t+7 (a) and 16t+8..16t+15 (b), uint32 -> (PL, PH)."""
    pl = (a & 0x0F0F0F0F) | ((b & 0x0F0F0F0F) << 4)
    ph = ((a >> 4) & 0x0F0F0F0F) | (((b >> 4) & 0x0F0F0F0F) << 4)
    return pl, ph


@triton.jit
def _load_col(words_ptr, perm_ptr, t, n, N, HALF: tl.constexpr, HAS_PERM: tl.constexpr):
    """uint32 word holding Marlin k `16t + 8*HALF .. +7` of column n (through perm when given)."""
    if HAS_PERM:
        src = tl.load(perm_ptr + 16 * t + 8 * HALF)
        word = tl.load(words_ptr + (src >> 3).to(tl.int64) * N + n).to(tl.uint32, bitcast=True)
        acc = (word >> ((src & 7) * 4).to(tl.uint32)) & 0xF
        for i in tl.static_range(1, 8):
            src = tl.load(perm_ptr + 16 * t + 8 * HALF + i)
            word = tl.load(words_ptr + (src >> 3).to(tl.int64) * N + n).to(tl.uint32, bitcast=True)
            acc |= ((word >> ((src & 7) * 4).to(tl.uint32)) & 0xF) << (4 * i)
        return acc
    else:
        return tl.load(words_ptr + (2 * t + HALF).to(tl.int64) * N + n).to(tl.uint32, bitcast=True)


@triton.jit
def _gather_grid(BT: tl.constexpr, NB: tl.constexpr):
    """Index grids of one program of a gather kernel: tile rows t `[BT, 1, 1, 1, 1]`, 64-column blocks nb
    `[1, NB, 1, 1, 1]`, and c, q, w of each Marlin word (`[1, 1, 8, 1, 1]`, `[.., 4, 1]`, `[.., 1, 4]`)."""
    t = (tl.program_id(0) * BT + tl.arange(0, BT))[:, None, None, None, None]
    nb = (tl.program_id(1) * NB + tl.arange(0, NB))[None, :, None, None, None]
    c = tl.arange(0, 8)[None, None, :, None, None]
    q = tl.arange(0, 4)[None, None, None, :, None]
    w = tl.arange(0, 4)[None, None, None, None, :]
    return t, nb, c, q, w


@triton.jit
def _store_gathered(out_ptr, N, t, nb, c, q, w, pl0, pl8, ph0, ph8):
    """Store the Marlin words of the grid of `_gather_grid`, from the PL/PH words of columns n0 and n0 + 8."""
    out = _marlin_word(pl0, pl8, ph0, ph8, (8 * q).to(tl.uint32))  # [BT, NB, 8, 4, 4]
    offs = t.to(tl.int64) * (2 * N) + nb * 128 + c * 16 + q * 4 + w
    tl.store(out_ptr + offs, out.to(tl.int32, bitcast=True))


@triton.jit
def pack_kpacked_gather(words_ptr, perm_ptr, out_ptr, N, HAS_PERM: tl.constexpr, BT: tl.constexpr,
                        NB: tl.constexpr):
    t, nb, c, q, w = _gather_grid(BT, NB)
    n0 = nb * 64 + w * 16 + c  # [1, NB, 8, 1, 4]
    pl0, ph0 = _pairs(_load_col(words_ptr, perm_ptr, t, n0, N, 0, HAS_PERM),
                      _load_col(words_ptr, perm_ptr, t, n0, N, 1, HAS_PERM))
    pl8, ph8 = _pairs(_load_col(words_ptr, perm_ptr, t, n0 + 8, N, 0, HAS_PERM),
                      _load_col(words_ptr, perm_ptr, t, n0 + 8, N, 1, HAS_PERM))
    _store_gathered(out_ptr, N, t, nb, c, q, w, pl0, pl8, ph0, ph8)


@triton.jit
def _shuffle(pl, ph, BT: tl.constexpr, NB: tl.constexpr):
    """PL, PH `[BT, 64 NB]` (columns in order) -> the Marlin words `[BT, 128 NB]` of those tile rows."""
    pl = tl.permute(tl.reshape(pl, (BT, NB, 4, 2, 8)), (0, 1, 4, 2, 3))  # [t, nb, c, w, h]
    ph = tl.permute(tl.reshape(ph, (BT, NB, 4, 2, 8)), (0, 1, 4, 2, 3))
    pl0, pl8 = tl.split(pl)
    ph0, ph8 = tl.split(ph)
    o0 = _marlin_word(pl0, pl8, ph0, ph8, 0)
    o1 = _marlin_word(pl0, pl8, ph0, ph8, 8)
    o2 = _marlin_word(pl0, pl8, ph0, ph8, 16)
    o3 = _marlin_word(pl0, pl8, ph0, ph8, 24)
    o = tl.join(tl.join(o0, o2), tl.join(o1, o3))  # [t, nb, c, w, 2, 2]: q = 2 * (dim 4) + (dim 5)
    o = tl.permute(tl.reshape(o, (BT, NB, 8, 4, 4)), (0, 1, 2, 4, 3))  # [t, nb, c, q, w]
    return tl.reshape(o, (BT, NB * 128))


@triton.jit
def pack_kpacked_shuffle(words_ptr, perm_ptr, out_ptr, N, HAS_PERM: tl.constexpr, BT: tl.constexpr,
                         NB: tl.constexpr):
    pid_t = tl.program_id(0)
    pid_n = tl.program_id(1)
    t = (pid_t * BT + tl.arange(0, BT))[:, None]
    n = (pid_n * NB * 64 + tl.arange(0, NB * 64))[None, :]
    pl, ph = _pairs(_load_col(words_ptr, perm_ptr, t, n, N, 0, HAS_PERM),
                    _load_col(words_ptr, perm_ptr, t, n, N, 1, HAS_PERM))
    out = _shuffle(pl, ph, BT, NB)
    offs = t.to(tl.int64) * (2 * N) + pid_n * NB * 128 + tl.arange(0, NB * 128)[None, :]
    tl.store(out_ptr + offs, out.to(tl.int32, bitcast=True))


@triton.jit
def _pairs_of_code_words(x0, x1, x2, x3):
    """(PL, PH) of one column and tile row from its 16 codes as 4 uint32 words (codes 4x .. 4x+3 in word x)."""
    lo = x0 | ((x2 << 4) & 0xF0F0F0F0)  # bytes p_0 .. p_3
    hi = x1 | ((x3 << 4) & 0xF0F0F0F0)  # bytes p_4 .. p_7
    pl = (lo & 0xFF) | ((lo >> 8) & 0xFF00) | ((hi & 0xFF) << 16) | ((hi << 8) & 0xFF000000)
    ph = ((lo >> 8) & 0xFF) | ((lo >> 16) & 0xFF00) | ((hi << 8) & 0xFF0000) | (hi & 0xFF000000)
    return pl, ph


@triton.jit
def pack_codes(codes_ptr, out_ptr, N, K, BT: tl.constexpr, NB: tl.constexpr):
    """codes viewed as int32 `[N, K/4]`: word x of tile row t of column n holds codes 16t+4x .. +3."""
    pid_t = tl.program_id(0)
    pid_n = tl.program_id(1)
    n = (pid_n * NB * 64 + tl.arange(0, NB * 64))[:, None]
    col = (pid_t * BT * 4 + tl.arange(0, BT * 4))[None, :]
    x = tl.load(codes_ptr + n.to(tl.int64) * (K // 4) + col).to(tl.uint32, bitcast=True)  # [64NB, 4BT]
    xe, xo = tl.split(tl.reshape(x, (NB * 64, BT, 2, 2)))  # words 0, 2 and 1, 3 of each tile row
    x0, x2 = tl.split(xe)
    x1, x3 = tl.split(xo)
    pl, ph = _pairs_of_code_words(x0, x1, x2, x3)
    out = _shuffle(tl.trans(pl), tl.trans(ph), BT, NB)
    t = (pid_t * BT + tl.arange(0, BT))[:, None]
    offs = t.to(tl.int64) * (2 * N) + pid_n * NB * 128 + tl.arange(0, NB * 128)[None, :]
    tl.store(out_ptr + offs, out.to(tl.int32, bitcast=True))


@triton.jit
def _code_pairs(codes_ptr, t, n, K):
    """(PL, PH) of columns n (any shape) for tile rows t, from codes viewed as int32 `[N, K/4]`."""
    row = codes_ptr + n.to(tl.int64) * (K // 4) + 4 * t
    x0 = tl.load(row).to(tl.uint32, bitcast=True)
    x1 = tl.load(row + 1).to(tl.uint32, bitcast=True)
    x2 = tl.load(row + 2).to(tl.uint32, bitcast=True)
    x3 = tl.load(row + 3).to(tl.uint32, bitcast=True)
    return _pairs_of_code_words(x0, x1, x2, x3)


@triton.jit
def pack_codes_gather(codes_ptr, out_ptr, N, K, BT: tl.constexpr, NB: tl.constexpr):
    """As `pack_codes`, with the reorder in the load addressing (like `pack_kpacked_gather`)."""
    t, nb, c, q, w = _gather_grid(BT, NB)
    n0 = nb * 64 + w * 16 + c  # [1, NB, 8, 1, 4]
    pl0, ph0 = _code_pairs(codes_ptr, t, n0, K)
    pl8, ph8 = _code_pairs(codes_ptr, t, n0 + 8, K)
    _store_gathered(out_ptr, N, t, nb, c, q, w, pl0, pl8, ph0, ph8)


@triton.jit
def unpack_codes(packed_ptr, codes_ptr, N, K, BT: tl.constexpr, NB: tl.constexpr):
    """Marlin words -> codes as int32 `[N, K/4]`; each output word is gathered from two Marlin words."""
    pid_t = tl.program_id(0)
    pid_n = tl.program_id(1)
    n = (pid_n * NB * 64 + tl.arange(0, NB * 64))[:, None, None]
    t = (pid_t * BT + tl.arange(0, BT))[None, :, None]
    x = tl.arange(0, 4)[None, None, :]
    nb, w, h, c = n >> 6, (n >> 4) & 3, (n >> 3) & 1, n & 7
    src = t.to(tl.int64) * (2 * N) + nb * 128 + c * 16 + w + (x & 1) * 8  # word q = 2 (x & 1)
    sa = (tl.load(packed_ptr + src).to(tl.uint32, bitcast=True) >> (8 * h).to(tl.uint32)) & 0x00FF00FF
    sb = (tl.load(packed_ptr + src + 4).to(tl.uint32, bitcast=True) >> (8 * h).to(tl.uint32)) & 0x00FF00FF
    p = (sa & 0xFF) | ((sa >> 8) & 0xFF00) | ((sb & 0xFF) << 16) | ((sb << 8) & 0xFF000000)
    val = (p >> (4 * (x >> 1)).to(tl.uint32)) & 0x0F0F0F0F
    tl.store(codes_ptr + n.to(tl.int64) * (K // 4) + 4 * t + x, val.to(tl.int32, bitcast=True))
