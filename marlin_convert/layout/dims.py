"""The Marlin int4 layout's dimensions and group sizes: plain numbers, so that planning needs no torch."""
from __future__ import annotations

__all__ = ["TILE", "BLOCK_N", "MIN_K", "SUPPORTED_GROUP_SIZES", "INTERLEAVE"]

TILE = 16
"""Marlin tiles are 16x16 (k, n)."""
BLOCK_N = 64
"""N must be a multiple of this (one thread's 16x64 block)."""
MIN_K = 128
"""K must be a multiple of this (vLLM's MIN_THREAD_K)."""
SUPPORTED_GROUP_SIZES = (-1, 32, 64, 128)

INTERLEAVE = (0, 2, 4, 6, 1, 3, 5, 7)
