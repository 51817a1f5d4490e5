"""Blocked numpy kernels of the Marlin int4 layout (CPU tensors, as numpy arrays); `portable` calls them.

How a Marlin word is made (DESIGN §4, restated per word; the tests check it against the seed's
gather and against vLLM's kernel element map). For tile row `kt` (codes `16kt .. 16kt+15` of k),
write the pair byte `p_j(n) = code[n, 16kt + j] | code[n, 16kt + j + 8] << 4` (j = 0..7). Output
row `kt` is `n / 64` blocks of 128 words, word `16c + 4q + w` of block `nb` (c < 8, q < 4, w < 4)
being, from its lowest byte up,

    p_2q(n0), p_2q(n0 + 8), p_2q+1(n0), p_2q+1(n0 + 8)      with n0 = 64 nb + 16 w + c.

So a block of codes rows is (1) paired into `p` (64-bit word ops on the rows as they lie),
(2) transposed to k-major (8-byte elements), (3) the bytes of rows n0 and n0 + 8 interleaved (two
widening 16-bit ops), (4) the 4 `w` words of each (c, q) scattered with 4 strided 32-bit copies.
GPTQ `qweight` words (`pack_kpacked_np`) are already k-major: step (1)-(2) becomes nibble-pair byte
ops on the words, and the whole `[n, k]` codes matrix is never built. With an act-order `perm`, the
words are cut in column blocks turned into byte planes that stay in cache while Marlin rows are
gathered from them (see the act-order section).

Everything is single-threaded numpy (the GIL is released inside each op), with no global state:
callers may run several layers on threads. Arguments are trusted: `portable` checks them first.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np
import torch

from .tables import BLOCK_N, TILE

__all__ = ["host_array", "pack_codes_np", "unpack_codes_np", "pack_kpacked_np", "unpack_to_kpacked_np"]

_BLOCK_BYTES = 1 << 18
"""Codes handled per block (bytes of uint8 codes); the block's temporaries are about 2x this."""
_KPACKED_CHUNK_BYTES = 1 << 20
"""Bytes of GPTQ words per chunk of the k-packed paths (scratch about 4x this). Each chunk is ~20 numpy calls,
and each call gives the GIL up and takes it back: with 128 KiB chunks two threads converted no faster than one
(28672x8192: 2.04 GB/s on one thread, 1.94 on two), with 1 MiB chunks 1.9-3.0 GB/s on two against 1.0-2.2 on
one at the three benchmark shapes (BENCHMARKS.md; 2-core VM), so a layer's kernel overlaps other threads' work."""
_BLOCK_TILES = 128
"""Tile rows (16 k each) per block of the codes paths, at most."""

_LO_NIBBLES = np.uint64(0x0F0F0F0F0F0F0F0F)
_HI_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)
_LANE_LO = np.uint64(0x000F000F000F000F)
_LANE_HI = np.uint64(0x00F000F000F000F0)


def host_array(t: torch.Tensor) -> np.ndarray:
    """A C-contiguous numpy view of a CPU tensor (a copy only when the tensor is not contiguous)."""
    return np.ascontiguousarray(t.detach().resolve_conj().resolve_neg().numpy())


def _words_from_pairs(pt8: np.ndarray, z: np.ndarray, out: np.ndarray) -> None:
    """Pair bytes, k-major, to Marlin words.

    pt8 (`uint8`, `[kt, nb, 4 (w), 2 (h), 64 (c, j)]`): byte j of `p` for row n = 64nb + 16w + 8h + c;
    z (`uint16`, `[kt, nb, 4, 64]`): scratch; out (`uint32`, `[kt, nb, 8 (c), 4 (q), 4 (w)]`): destination.
    """
    np.left_shift(pt8[:, :, :, 1], 8, out=z, dtype=np.uint16)
    np.bitwise_or(z, pt8[:, :, :, 0], out=z)
    words = z.view(np.uint32).reshape(z.shape[0], z.shape[1], 4, 8, 4)
    for w in range(4):
        out[..., w] = words[:, :, w]


def _pairs_from_words(packed: np.ndarray, z: np.ndarray, pt8: np.ndarray) -> None:
    """Inverse of `_words_from_pairs` (same shapes, `packed` read and `pt8` written)."""
    words = z.view(np.uint32).reshape(z.shape[0], z.shape[1], 4, 8, 4)
    for w in range(4):
        words[:, :, w] = packed[..., w]
    np.bitwise_and(z, 0xFF, out=pt8[:, :, :, 0], casting="unsafe")
    np.right_shift(z, 8, out=pt8[:, :, :, 1], casting="unsafe")


def _block_shape(n: int, k: int) -> tuple[int, int]:
    """(codes rows, tile rows) of one block of the codes paths: about `_BLOCK_BYTES` of codes, at most
    `_BLOCK_TILES` tile rows wide (so each output row of the block is a run of >= 512 bytes, and the
    block's rows of output do not all fight for the same cache sets)."""
    tiles = min(k // TILE, _BLOCK_TILES)
    rows = min(n, max(BLOCK_N, _BLOCK_BYTES // (TILE * tiles) // BLOCK_N * BLOCK_N))
    return rows, tiles


class _CodesBlock(NamedTuple):
    """One block of the codes paths: its place and the scratch views that fit it."""

    rows: slice  # codes rows (n)
    tiles: slice  # tile rows (k / 16)
    blocks: slice  # 64-wide column blocks of the output
    pairs: np.ndarray  # uint64 [r, c]: pair bytes of the block, n-major
    pairs_t: np.ndarray  # uint64 [c, r]: the same, k-major
    pairs_t8: np.ndarray  # uint8 view of pairs_t as [c, nb, 4, 2, 64]
    scratch: np.ndarray  # uint16 [c, nb, 4, 64]


def _codes_blocks(n: int, k: int) -> Iterator[_CodesBlock]:
    """Walk `[n, k]` codes in cache-sized blocks, reusing one set of scratch buffers."""
    kt = k // TILE
    rows, tiles = _block_shape(n, k)
    p = np.empty(rows * tiles, dtype=np.uint64)
    pt = np.empty(rows * tiles, dtype=np.uint64)
    z = np.empty(rows * tiles * 4, dtype=np.uint16)
    for r0 in range(0, n, rows):
        r = min(rows, n - r0)
        nb, b0 = r // BLOCK_N, r0 // BLOCK_N
        for t0 in range(0, kt, tiles):
            c = min(tiles, kt - t0)
            ptb = pt[: r * c].reshape(c, r)
            yield _CodesBlock(
                slice(r0, r0 + r), slice(t0, t0 + c), slice(b0, b0 + nb), p[: r * c].reshape(r, c), ptb,
                ptb.view(np.uint8).reshape(c, nb, 4, 2, 64), z[: r * c * 4].reshape(c, nb, 4, 64),
            )


def _tile_view(packed: np.ndarray, kt: int, n: int) -> np.ndarray:
    """int32 `[k/16, 2n]` Marlin words as uint32 `[k/16, n/64, 8, 4, 4]` (tile row, column block, word)."""
    return packed.view(np.uint32).reshape(kt, n // BLOCK_N, 8, 4, 4)


def pack_codes_np(codes: np.ndarray) -> np.ndarray:
    """uint8 `[n, k]` (C-contiguous) -> int32 `[k/16, 2n]`, block by block."""
    n, k = codes.shape
    kt = k // TILE
    out = np.empty((kt, 2 * n), dtype=np.int32)
    dest = _tile_view(out, kt, n)
    src = codes.view(np.uint64).reshape(n, kt, 2)
    for b in _codes_blocks(n, k):
        x = src[b.rows, b.tiles]
        np.left_shift(x[:, :, 1], 4, out=b.pairs)
        np.bitwise_or(b.pairs, x[:, :, 0], out=b.pairs)
        np.copyto(b.pairs_t, b.pairs.T)
        _words_from_pairs(b.pairs_t8, b.scratch, dest[b.tiles, b.blocks])
    return out


def unpack_codes_np(packed: np.ndarray, n: int, k: int) -> np.ndarray:
    """int32 `[k/16, 2n]` (C-contiguous) -> uint8 `[n, k]`, block by block."""
    kt = k // TILE
    codes = np.empty((n, k), dtype=np.uint8)
    dst = codes.view(np.uint64).reshape(n, kt, 2)
    src = _tile_view(packed, kt, n)
    for b in _codes_blocks(n, k):
        _pairs_from_words(src[b.tiles, b.blocks], b.scratch, b.pairs_t8)
        np.copyto(b.pairs, b.pairs_t.T)
        x = dst[b.rows, b.tiles]
        np.bitwise_and(b.pairs, _LO_NIBBLES, out=x[:, :, 0])
        np.right_shift(b.pairs, 4, out=b.pairs)
        np.bitwise_and(b.pairs, _LO_NIBBLES, out=x[:, :, 1])
    return codes


def _tile_rows_per_chunk(n: int) -> int:
    """Tile rows (16 k each) per chunk of the k-packed paths: about `_KPACKED_CHUNK_BYTES` of words."""
    return max(1, _KPACKED_CHUNK_BYTES // (8 * n))


def _kpacked_chunk(words: np.ndarray, lh: np.ndarray, tmp: np.ndarray, pairs: np.ndarray, z: np.ndarray, out: np.ndarray) -> None:
    """GPTQ words of `c` tile rows to their Marlin rows.

    words (`uint8`, `[c, 2, n, 4]`): the int32 words `[2c, n]` as bytes (row 2t holds k 16t..16t+7);
    lh, tmp (`uint8`, `[2, c, n, 4]`, `[c, n, 4]`): scratch; pairs (`uint16`, `[c, n, 4]`): scratch;
    z (`uint16`, `[c, n/64, 4, 64]`): scratch; out (`uint32`, `[c, n/64, 8, 4, 4]`): destination.
    """
    c, _, n, _ = words.shape
    lo, hi = lh[0], lh[1]
    b0, b1, lo64, hi64, t64 = (a.reshape(c, 4 * n).view(np.uint64) for a in (words[:, 0], words[:, 1], lo, hi, tmp))
    # byte q of a word holds k 2q (low nibble) and 2q+1; pair byte p_2q = low nibbles, p_2q+1 = high
    # nibbles (64-bit lanes: a shift moves nibbles across bytes, the masks drop those)
    np.bitwise_and(b0, _LO_NIBBLES, out=lo64)
    np.left_shift(b1, 4, out=t64)
    np.bitwise_and(t64, _HI_NIBBLES, out=t64)
    np.bitwise_or(lo64, t64, out=lo64)
    np.right_shift(b0, 4, out=hi64)
    np.bitwise_and(hi64, _LO_NIBBLES, out=hi64)
    np.bitwise_and(b1, _HI_NIBBLES, out=t64)
    np.bitwise_or(hi64, t64, out=hi64)
    np.left_shift(hi, 8, out=pairs, dtype=np.uint16)
    np.bitwise_or(pairs, lo, out=pairs)
    _words_from_pairs(pairs.view(np.uint8).reshape(c, n // BLOCK_N, 4, 2, 64), z, out)


def _kpacked_unchunk(packed: np.ndarray, z: np.ndarray, pairs: np.ndarray, tmp: np.ndarray, words: np.ndarray) -> None:
    """Inverse of `_kpacked_chunk`: Marlin rows `[c, n/64, 8, 4, 4]` (uint32) to GPTQ word bytes `[c, 2, n, 4]`;
    tmp (`uint16`, `[3, c, n, 4]`): scratch."""
    c, _, n, _ = words.shape
    _pairs_from_words(packed, z, pairs.view(np.uint8).reshape(c, n // BLOCK_N, 4, 2, 64))
    # 16-bit lane v = p_2q | p_2q+1 << 8; word byte q of row 2t is lo(p_2q) | lo(p_2q+1) << 4 =
    # (v & 0xF) | (v >> 4 & 0xF0), of row 2t+1 hi(p_2q) | hi(p_2q+1) << 4 = (v >> 4 & 0xF) | (v >> 8 & 0xF0)
    v, t, a, b = (x.reshape(c, 4 * n).view(np.uint64) for x in (pairs, tmp[0], tmp[1], tmp[2]))
    np.right_shift(v, 4, out=t)
    for dst, low, high in ((words[:, 0], v, t), (words[:, 1], t, None)):
        np.bitwise_and(low, _LANE_LO, out=a)
        if high is None:
            np.right_shift(t, 4, out=b)
            high = b
        np.bitwise_and(high, _LANE_HI, out=b)
        np.bitwise_or(a, b, out=a)
        np.copyto(dst, tmp[1], casting="unsafe")  # the low byte of each 16-bit lane


def _nibble_rows(words: np.ndarray, rows: np.ndarray, dst_nibbles: np.ndarray, out: np.ndarray) -> np.ndarray:
    """For each k in `rows`: its nibble of the k-packed words (uint32 `[*, n]`, k `8r + i` in nibble i of
    row r), moved to nibble `dst_nibbles[i]` of a zeroed word: uint32 `[len(rows), n]` in `out`."""
    np.take(words, rows >> 3, axis=0, out=out)
    np.right_shift(out, (4 * (rows & 7)).astype(np.uint32)[:, None], out=out)
    np.bitwise_and(out, 0xF, out=out)
    np.left_shift(out, (4 * dst_nibbles).astype(np.uint32)[:, None], out=out)
    return out


class _KChunkScratch:
    """Scratch arrays of `_kpacked_chunk` / `_kpacked_unchunk` for up to `tiles` tile rows of `n` columns."""

    def __init__(self, tiles: int, n: int):
        self.lh = np.empty((2, tiles, n, 4), dtype=np.uint8)
        self.tmp = np.empty((tiles, n, 4), dtype=np.uint8)
        self.tmp16 = np.empty((3, tiles, n, 4), dtype=np.uint16)
        self.pairs = np.empty((tiles, n, 4), dtype=np.uint16)
        self.z = np.empty((tiles, n // BLOCK_N, 4, 64), dtype=np.uint16)

    def pack(self, words: np.ndarray, out: np.ndarray) -> None:
        """words uint8 `[c, 2, n, 4]` -> out uint32 `[c, n/64, 8, 4, 4]`."""
        c = words.shape[0]
        _kpacked_chunk(words, self.lh[:, :c], self.tmp[:c], self.pairs[:c], self.z[:c], out)

    def unpack(self, packed: np.ndarray, words: np.ndarray) -> None:
        """packed uint32 `[c, n/64, 8, 4, 4]` -> words uint8 `[c, 2, n, 4]`."""
        c = words.shape[0]
        _kpacked_unchunk(packed, self.z[:c], self.pairs[:c], self.tmp16[:, :c], words)


# ----------------------------------------------------------------------------- act-order (perm) paths
#
# A column block of `m` columns is turned into byte planes: plane row r (uint8 [m]) holds source k 2r
# (low nibble) and 2r + 1 (high nibble), i.e. byte r % 4 of word row r // 4. Marlin rows are then
# gathered a tile-row chunk at a time with one row `take` of 1 byte per code (the block's planes stay
# in cache), the nibbles isolated with 64-bit lane ops, and the pair bytes of `_words_from_pairs`
# assembled from the k-major rows by widening 16/32/64-bit ops. Unpacking runs the same steps back.

_PLANE_BYTES = 1 << 22
"""Bytes of byte planes (k/2 rows x m columns) per column block of the act-order paths."""
_FEW_ROWS = 10
"""A partial perm with fewer than k / _FEW_ROWS rows gathers whole words instead (no planes to build)."""


def _perm_cols(n: int, k: int) -> int:
    """Columns (a multiple of 64) per column block of the act-order paths."""
    return min(n, max(BLOCK_N, _PLANE_BYTES // (k // 2) // BLOCK_N * BLOCK_N))


class _ActOrderBlock:
    """Scratch and steps for one column block (m columns) of an act-order layer with `kw` word rows."""

    def __init__(self, kw: int, m: int, tiles: int):
        self.kw, self.m = kw, m
        self.planes = np.empty((4 * kw, m), dtype=np.uint8)
        self.codes = np.empty((16 * tiles, m), dtype=np.uint8)
        self.lh = np.empty((2, tiles, 4, m), dtype=np.uint8)
        self.eq = np.empty((tiles, 4, m), dtype=np.uint16)
        self.f = np.empty((2, tiles, m), dtype=np.uint32)
        self.e = np.empty((tiles, m, 4), dtype=np.uint16)
        self.z = np.empty((tiles, m // BLOCK_N, 4, 64), dtype=np.uint16)

    def load(self, wb: np.ndarray) -> None:
        """Byte planes from the block's words (uint8 `[kw, m, 4]`)."""
        planes = self.planes.reshape(self.kw, 4, self.m)
        for q in range(4):
            planes[:, q, :] = wb[:, :, q]

    def store(self, wb: np.ndarray) -> None:
        """Byte planes back into the block's words (uint8 `[kw, m, 4]`)."""
        planes = self.planes.reshape(self.kw, 4, self.m)
        for q in range(4):
            wb[:, :, q] = planes[:, q, :]

    def pack_tiles(self, rows: np.ndarray, dest: np.ndarray) -> None:
        """Marlin tile rows whose k are source `rows` (int64 `[16c]`) into dest (uint32 `[c, m/64, 8, 4, 4]`)."""
        c, m = rows.size // TILE, self.m
        g = self.codes[: rows.size]
        np.take(self.planes, rows >> 1, axis=0, out=g)
        g64 = g.view(np.uint64)
        np.right_shift(g64, (4 * (rows & 1)).astype(np.uint64)[:, None], out=g64)
        np.bitwise_and(g64, _LO_NIBBLES, out=g64)
        g4 = g64.reshape(c, 2, 4, 2, m // 8)  # tile k = 8 hk + 2q + bb
        lo, hi = self.lh[0, :c], self.lh[1, :c]  # [c, 4 (q), m]: pair bytes p_2q, p_2q+1
        for dst, bb in ((lo.view(np.uint64), 0), (hi.view(np.uint64), 1)):
            np.left_shift(g4[:, 1, :, bb], 4, out=dst)
            np.bitwise_or(dst, g4[:, 0, :, bb], out=dst)
        eq = self.eq[:c]
        np.left_shift(hi, 8, out=eq, dtype=np.uint16)
        np.bitwise_or(eq, lo, out=eq)
        f01, f23 = self.f[0, :c], self.f[1, :c]
        np.left_shift(eq[:, 1], 16, out=f01, dtype=np.uint32)
        np.bitwise_or(f01, eq[:, 0], out=f01)
        np.left_shift(eq[:, 3], 16, out=f23, dtype=np.uint32)
        np.bitwise_or(f23, eq[:, 2], out=f23)
        e = self.e[:c]
        e64 = e.view(np.uint64).reshape(c, m)
        np.left_shift(f23, 32, out=e64, dtype=np.uint64)
        np.bitwise_or(e64, f01, out=e64)
        _words_from_pairs(e.view(np.uint8).reshape(c, m // BLOCK_N, 4, 2, 64), self.z[:c], dest)

    def unpack_tiles(self, packed: np.ndarray, codes: np.ndarray) -> None:
        """Inverse of `pack_tiles` up to the gather: Marlin tile rows (uint32 `[c, m/64, 8, 4, 4]`) to
        their codes, k-major in Marlin row order (uint8 `[16c, m]`, C-contiguous)."""
        c, m = packed.shape[0], self.m
        e = self.e[:c]
        _pairs_from_words(packed, self.z[:c], e.view(np.uint8).reshape(c, m // BLOCK_N, 4, 2, 64))
        e64 = e.view(np.uint64).reshape(c, m)
        f01, f23 = self.f[0, :c], self.f[1, :c]
        np.copyto(f01, e64, casting="unsafe")
        np.right_shift(e64, 32, out=f23, casting="unsafe")
        eq = self.eq[:c]
        for q, (f, shift) in enumerate(((f01, 0), (f01, 16), (f23, 0), (f23, 16))):
            np.right_shift(f, shift, out=eq[:, q], casting="unsafe")
        lo, hi = self.lh[0, :c], self.lh[1, :c]
        np.copyto(lo, eq, casting="unsafe")
        np.right_shift(eq, 8, out=hi, casting="unsafe")
        g4 = codes.view(np.uint64).reshape(c, 2, 4, 2, m // 8)
        for src, bb in ((lo.view(np.uint64), 0), (hi.view(np.uint64), 1)):
            np.bitwise_and(src, _LO_NIBBLES, out=g4[:, 0, :, bb])
            np.right_shift(src, 4, out=g4[:, 1, :, bb])
            np.bitwise_and(g4[:, 1, :, bb], _LO_NIBBLES, out=g4[:, 1, :, bb])


def _pack_kpacked_perm_np(words: np.ndarray, perm: np.ndarray, dest: np.ndarray) -> None:
    """Act-order pack: Marlin rows j take source k perm[j]; dest uint32 `[len(perm)/16, n/64, 8, 4, 4]`."""
    kw, n = words.shape
    kt = perm.size // TILE
    if perm.size * _FEW_ROWS < 8 * kw:  # a few rows: gather their words, no byte planes of the whole k
        step = _tile_rows_per_chunk(n)
        scratch = _KChunkScratch(step, n)
        gathered = np.empty((16 * step, n), dtype=np.uint32)
        marlin = np.empty((2 * step, n), dtype=np.uint32)
        for t0 in range(0, kt, step):
            c = min(step, kt - t0)
            g = _nibble_rows(words.view(np.uint32), perm[16 * t0 : 16 * (t0 + c)], np.arange(16 * c) & 7, gathered[: 16 * c])
            np.bitwise_or.reduce(g.reshape(2 * c, 8, n), axis=1, out=marlin[: 2 * c])
            scratch.pack(marlin[: 2 * c].view(np.uint8).reshape(c, 2, n, 4), dest[t0 : t0 + c])
        return
    wb = words.view(np.uint8).reshape(kw, n, 4)
    cols = _perm_cols(n, 8 * kw)
    blocks: dict[int, _ActOrderBlock] = {}
    for c0 in range(0, n, cols):
        m = min(cols, n - c0)
        step = _tile_rows_per_chunk(m)
        blk = blocks.get(m) or blocks.setdefault(m, _ActOrderBlock(kw, m, step))
        blk.load(wb[:, c0 : c0 + m])
        for t0 in range(0, kt, step):
            c = min(step, kt - t0)
            blk.pack_tiles(perm[16 * t0 : 16 * (t0 + c)], dest[t0 : t0 + c, c0 // BLOCK_N : (c0 + m) // BLOCK_N])


def _unpack_kpacked_perm_np(src: np.ndarray, perm: np.ndarray, out: np.ndarray) -> None:
    """Act-order unpack: src uint32 `[k/16, n/64, 8, 4, 4]` -> out int32 `[k/8, n]` in source row order."""
    kt, kw, n = src.shape[0], out.shape[0], out.shape[1]
    inverse = np.argsort(perm)  # Marlin row of each source k
    even, odd = inverse[0::2], inverse[1::2]  # plane row r holds source k 2r and 2r + 1
    wb = out.view(np.uint8).reshape(kw, n, 4)
    cols = _perm_cols(n, 8 * kw)
    blocks: dict[int, tuple[_ActOrderBlock, np.ndarray, np.ndarray]] = {}
    for c0 in range(0, n, cols):
        m = min(cols, n - c0)
        step = _tile_rows_per_chunk(m)
        if m not in blocks:
            blocks[m] = (_ActOrderBlock(kw, m, step), np.empty((16 * kt, m), dtype=np.uint8), np.empty((4 * step * 16, m), dtype=np.uint8))
        blk, codes, tmp = blocks[m]
        for t0 in range(0, kt, step):
            c = min(step, kt - t0)
            blk.unpack_tiles(src[t0 : t0 + c, c0 // BLOCK_N : (c0 + m) // BLOCK_N], codes[16 * t0 : 16 * (t0 + c)])
        rows = tmp.shape[0]
        for r0 in range(0, 4 * kw, rows):
            r1 = min(r0 + rows, 4 * kw)
            planes, high = blk.planes[r0:r1], tmp[: r1 - r0]
            np.take(codes, even[r0:r1], axis=0, out=planes)
            np.take(codes, odd[r0:r1], axis=0, out=high)
            np.left_shift(high.view(np.uint64), 4, out=high.view(np.uint64))
            np.bitwise_or(planes.view(np.uint64), high.view(np.uint64), out=planes.view(np.uint64))
        blk.store(wb[:, c0 : c0 + m])


def _kpacked_chunks(kt: int, n: int) -> Iterator[tuple[slice, _KChunkScratch]]:
    """Walk `kt` tile rows of `n` columns in chunks of the k-packed paths, reusing one set of scratch arrays."""
    step = _tile_rows_per_chunk(n)
    scratch = _KChunkScratch(step, n)
    for t0 in range(0, kt, step):
        yield slice(t0, t0 + step), scratch


def _move_kpacked(tiles: np.ndarray, words: np.ndarray, perm: np.ndarray | None, to_marlin: bool) -> None:
    """Fill `tiles` from the GPTQ `words` (`to_marlin`) or the words from the tiles, a few tile rows at a
    time; with `perm`, see the act-order section."""
    if perm is not None:
        if to_marlin:
            _pack_kpacked_perm_np(words, perm, tiles)
        else:
            _unpack_kpacked_perm_np(tiles, perm, words)
        return
    kt, n = tiles.shape[0], words.shape[1]
    wbytes = words.view(np.uint8).reshape(kt, 2, n, 4)
    for rows, scratch in _kpacked_chunks(kt, n):
        if to_marlin:
            scratch.pack(wbytes[rows], tiles[rows])
        else:
            scratch.unpack(tiles[rows], wbytes[rows])


def pack_kpacked_np(words: np.ndarray, perm: np.ndarray | None) -> np.ndarray:
    """int32 `[k/8, n]` GPTQ words (C-contiguous) -> int32 `[k/16, 2n]` (`[len(perm)/16, 2n]`)."""
    kw, n = words.shape
    kt = (kw if perm is None else perm.size // 8) // 2
    out = np.empty((kt, 2 * n), dtype=np.int32)
    _move_kpacked(_tile_view(out, kt, n), words, perm, to_marlin=True)
    return out


def unpack_to_kpacked_np(packed: np.ndarray, n: int, k: int, perm: np.ndarray | None) -> np.ndarray:
    """int32 `[k/16, 2n]` -> int32 `[k/8, n]` GPTQ words (in source row order with `perm`)."""
    out = np.empty((k // 8, n), dtype=np.int32)
    _move_kpacked(_tile_view(packed, k // TILE, n), out, perm, to_marlin=False)
    return out
