"""Independent restatements of the reference algorithms, for the tests and the benchmarks.

Written from the seed (optimum-quanto `MarlinInt4PackedTensor`, after IST-DASLab marlin) and from
vLLM's `marlin_permute_scales` / `marlin_zero_points` in plain numpy loops, sharing no code with the
package under test. `seed_pack_torch` is the seed's pack as torch ops, the GPU benchmark's baseline.
"""
from __future__ import annotations

import functools

import numpy as np
import torch


@functools.lru_cache(maxsize=None)
def seed_perm() -> np.ndarray:
    """optimum-quanto `_get_perm()`: the 1024-entry Marlin permutation (mma fragments, then interleave); read-only."""
    perm = []
    for i in range(32):
        perm1 = []
        col = i // 4
        for block in [0, 1]:
            for row in [2 * (i % 4), 2 * (i % 4) + 1, 2 * (i % 4 + 4), 2 * (i % 4 + 4) + 1]:
                perm1.append(16 * row + col + 8 * block)
        for j in range(4):
            perm.extend([p + 256 * j for p in perm1])
    perm = np.array(perm)
    interleave = np.array([0, 2, 4, 6, 1, 3, 5, 7])
    out = perm.reshape((-1, 8))[:, interleave].ravel()
    out.flags.writeable = False
    return out


def seed_pack(codes: np.ndarray) -> np.ndarray:
    """The seed's pack: codes uint8 [N, K] -> int32 [K/16, 2N]."""
    n, k = codes.shape
    perm = seed_perm()
    w = codes.T.reshape((k // 16, 16, n // 16, 16)).transpose((0, 2, 1, 3)).reshape((k // 16, n * 16))
    res = w.reshape((-1, perm.size))[:, perm].reshape(w.shape)
    p = np.zeros((res.shape[0], res.shape[1] // 8), dtype=np.uint32)
    res = res.astype(np.uint32)
    for i in range(8):
        p |= res[:, i::8] << 4 * i
    return p.astype(np.int32)


def seed_pack_torch(codes: torch.Tensor) -> torch.Tensor:
    """`seed_pack` as torch ops on `codes.device` (the seed's algorithm at GPU speed): uint8 [N, K] -> int32 [K/16, 2N]."""
    n, k = codes.shape
    perm = torch.tensor(seed_perm(), device=codes.device)
    w = codes.t().reshape(k // 16, 16, n // 16, 16).permute(0, 2, 1, 3).reshape(k // 16, n * 16)
    res = w.reshape(-1, 1024)[:, perm].reshape(w.shape).to(torch.int32)
    q = torch.zeros((k // 16, 2 * n), dtype=torch.int32, device=codes.device)
    for i in range(8):
        q |= res[:, i::8] << (4 * i)
    return q


SCALE_PERM = [i + 8 * j for i in range(8) for j in range(8)]
SCALE_PERM_SINGLE = [2 * i + j for i in range(4) for j in [0, 1, 8, 9, 16, 17, 24, 25]]


def marlin_permute_scales(s: np.ndarray, k: int, group_size: int) -> np.ndarray:
    """vLLM marlin_permute_scales on a [G, N] array."""
    n = s.shape[1]
    if group_size < k and group_size != -1:
        s = s.reshape((-1, 64))[:, SCALE_PERM]
    else:
        s = s.reshape((-1, 32))[:, SCALE_PERM_SINGLE]
    return s.reshape((-1, n))


def marlin_zero_points(zp: np.ndarray) -> np.ndarray:
    """vLLM marlin_zero_points for 4 bits: unsigned zeros [G, N] -> int32 [G, N/8]."""
    g, n = zp.shape
    zp = zp.reshape((-1, 64))[:, SCALE_PERM]
    zp = zp.reshape((-1, 8))[:, [0, 2, 4, 6, 1, 3, 5, 7]].reshape((g, n)).astype(np.uint32)
    out = np.zeros((g, n // 8), dtype=np.uint32)
    for i in range(8):
        out |= zp[:, i::8] << (4 * i)
    return out.astype(np.int32)


def seed_pack_loop(codes: np.ndarray) -> np.ndarray:
    """vLLM's kernel element map (FORMATS.md §5), one word at a time: a second, loop-level reference."""
    n, k = codes.shape
    w = codes.T  # [K, N]
    out = np.zeros((k // 16) * (n // 64) * 128, dtype=np.uint32)
    for kt in range(k // 16):
        for nt in range(n // 64):
            for t in range(32):
                for warp in range(4):
                    c, r = t // 4, 2 * (t % 4)
                    n0, k0 = 64 * nt + 16 * warp + c, 16 * kt
                    vals = [w[k0 + r, n0], w[k0 + r + 8, n0], w[k0 + r, n0 + 8], w[k0 + r + 8, n0 + 8],
                            w[k0 + r + 1, n0], w[k0 + r + 9, n0], w[k0 + r + 1, n0 + 8], w[k0 + r + 9, n0 + 8]]
                    word = 0
                    for j in range(8):  # the list above is already in nibble order
                        word |= int(vals[j]) << (4 * j)
                    out[(kt * (n // 64) + nt) * 128 + 4 * t + warp] = word
    return out.astype(np.int32).reshape(k // 16, 2 * n)


# ----------------------------------------------------------------------------- decoding Marlin output (test side)

def _inverse(perm) -> np.ndarray:
    return np.argsort(np.asarray(perm))


def seed_unpack(packed: np.ndarray, n: int, k: int) -> np.ndarray:
    """Inverse of seed_pack, restated from optimum-quanto's `unpack`: int32 [K/16, 2N] -> uint8 [N, K]."""
    words = np.ascontiguousarray(packed, dtype=np.int32).view(np.uint32)
    res = np.zeros((k // 16, n * 16), dtype=np.uint8)
    for i in range(8):
        res[:, i::8] = (words >> (4 * i)) & 0xF
    res = res.reshape((-1, 1024))[:, _inverse(seed_perm())].reshape((k // 16, n * 16))
    w = res.reshape((k // 16, n // 16, 16, 16)).transpose((0, 2, 1, 3)).reshape((k, n))
    return np.ascontiguousarray(w.T)


def marlin_unpermute_scales(s: np.ndarray, k: int, group_size: int) -> np.ndarray:
    n = s.shape[1]
    if group_size < k and group_size != -1:
        return s.reshape((-1, 64))[:, _inverse(SCALE_PERM)].reshape((-1, n))
    return s.reshape((-1, 32))[:, _inverse(SCALE_PERM_SINGLE)].reshape((-1, n))


def marlin_unpack_zero_points(zp: np.ndarray) -> np.ndarray:
    g, w = zp.shape
    words = zp.astype(np.int64) & 0xFFFFFFFF
    z = np.zeros((g, w * 8), dtype=np.uint8)
    for i in range(8):
        z[:, i::8] = (words >> (4 * i)) & 0xF
    z = z.reshape((-1, 8))[:, _inverse([0, 2, 4, 6, 1, 3, 5, 7])].reshape((-1, 64))
    return z[:, _inverse(SCALE_PERM)].reshape((g, w * 8))
