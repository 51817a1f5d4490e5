"""`_malloc.share_one_arena`: the console script's one-arena setting."""
from __future__ import annotations

import subprocess
import sys

import pytest

from marlin_convert import cli


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_one_arena_is_set_in_a_fresh_process_and_its_threads_share_it():
    """In a fresh interpreter, after `share_one_arena()`, threads that allocate at once end up in the main arena
    only: glibc's `malloc_info` lists one heap (without it, contending threads open arenas of their own)."""
    probe = r"""
import ctypes, os, sys, tempfile, threading
from marlin_convert._malloc import share_one_arena
if sys.argv[1] == "1":
    assert share_one_arena()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
go = threading.Barrier(4)
def work():
    go.wait()
    for _ in range(2000):
        libc.free(libc.malloc(4096))
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
libc.fdopen.restype = ctypes.c_void_p
libc.fdopen.argtypes = (ctypes.c_int, ctypes.c_char_p)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
with tempfile.TemporaryFile() as f:
    stream = libc.fdopen(os.dup(f.fileno()), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    f.seek(0)
    print(f.read().decode().count("<heap nr="))
"""
    heaps = {}
    for flag in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", probe, flag], capture_output=True, text=True, check=True)
        heaps[flag] = int(out.stdout.strip())
    if heaps["0"] == 1:
        pytest.skip("this C library gave the threads no arenas of their own even without the setting")
    assert heaps["1"] == 1 and heaps["0"] > 1, heaps


def test_the_console_script_sets_it_before_it_runs(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "share_one_arena", lambda: calls.append("arena") or True)
    monkeypatch.setattr(cli, "main", lambda: calls.append("main"))
    monkeypatch.setattr(cli, "_torch_loaded", lambda: False)  # without torch, entry returns normally
    cli.entry()
    assert calls == ["arena", "main"]
