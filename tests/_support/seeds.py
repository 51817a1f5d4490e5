"""Stable seeds: the same case gets the same random inputs in every run (unlike `hash()` of a string)."""
from __future__ import annotations

import zlib

__all__ = ["stable_seed"]


def stable_seed(*parts: object) -> int:
    """A 32-bit seed from the `repr` of `parts`, the same in every interpreter run."""
    return zlib.crc32(repr(parts).encode())
