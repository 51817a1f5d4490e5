"""One glibc malloc arena for the command's process, so memory freed by one thread is reused by the next.

Why: glibc gives each thread that contends for the heap an arena of its own (up to 8 per core), and memory a
thread frees stays in its arena. The commands read, unpack, hash and write on a few threads, each freeing
buffers of several MiB that another thread allocates next; with an arena per thread the process kept every
arena's high-water mark (issue #15, 2 GB of 28672x8192 layers on the 2-core machine, side by side: `unpack`
from the page cache peaked at 474-481 MB, 439-457 with one arena; `pack` 449-462 MB, 424-435), times level
within the run-to-run spread (BENCHMARKS.md, CPU). The big reads keep their own pool (`checkpoint.host_buffers`).
"""
from __future__ import annotations

import ctypes
import sys

__all__ = ["share_one_arena"]

_M_ARENA_MAX = -8
"""mallopt's parameter number for the most arenas (glibc malloc.h)."""


def share_one_arena() -> bool:
    """Limit glibc malloc to one arena for threads created from now on; True when glibc took the setting,
    False elsewhere (other C libraries, other systems: nothing changes). The console script calls it before
    it starts any thread; a library user's process is left as it is."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: the C library it runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt(_M_ARENA_MAX, 1) == 1
