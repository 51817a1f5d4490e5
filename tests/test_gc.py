"""`_gc`: the console script holds the garbage collector off until torch is imported, and only then."""
from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from marlin_convert import _gc

FIXTURE = Path(__file__).parent / "fixtures" / "producers" / "gptqmodel_sym"


@pytest.fixture
def collector_state():
    """Put the test process's collector back as it was (on, nothing frozen by the test)."""
    was_enabled, frozen = gc.isenabled(), gc.get_freeze_count()
    yield
    _gc._held = False
    if gc.get_freeze_count() != frozen:
        gc.unfreeze()
    (gc.enable if was_enabled else gc.disable)()


def test_hold_turns_the_collector_off_and_release_turns_it_back_on_with_the_living_frozen(collector_state):
    gc.enable()
    _gc.hold()
    assert not gc.isenabled()
    frozen_before = gc.get_freeze_count()
    _gc.release()
    assert gc.isenabled()
    assert gc.get_freeze_count() > frozen_before
    _gc.release()  # a second release changes nothing
    assert gc.isenabled()


def test_release_without_hold_leaves_a_library_users_collector_alone(collector_state):
    gc.disable()  # the user's own choice
    _gc.release()
    assert not gc.isenabled()
    gc.enable()
    frozen = gc.get_freeze_count()
    _gc.release()
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_hold_does_not_take_over_a_collector_the_user_turned_off(collector_state):
    gc.disable()
    _gc.hold()
    _gc.release()
    assert not gc.isenabled()


def test_the_console_script_runs_the_collector_again_once_the_command_has_imported_torch(tmp_path):
    """A pack through the console script's entry: by the time the command ends (an atexit handler, which the
    entry still runs), the collector is on again and torch's objects are frozen; during the torch import it was
    off (checked by an import hook at that moment)."""
    probe = r"""
import atexit, builtins, gc, sys
seen = {}
real_import = builtins.__import__
def hook(name, *args, **kwargs):
    if name == "torch" and "torch" not in sys.modules:
        seen["during_torch_import"] = gc.isenabled()
    return real_import(name, *args, **kwargs)
builtins.__import__ = hook
atexit.register(lambda: print("at-exit", seen.get("during_torch_import"), gc.isenabled(), gc.get_freeze_count() > 0))
from marlin_convert.cli import entry
sys.argv = ["marlin-convert", "pack", sys.argv[1], "-o", sys.argv[2], "--device", "cpu"]
entry()
"""
    out = subprocess.run([sys.executable, "-c", probe, str(FIXTURE), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "at-exit False True True" in out.stdout, out.stdout + out.stderr


TEARDOWN_PROBE = """
import sys, types
from marlin_convert import cli
if sys.argv[1] == "cut":  # what an interruption during `import torch` leaves: torch gone, a part of it loaded
    sys.modules["torch._C"] = types.ModuleType("torch._C")
class Late:
    def __del__(self):
        sys.stdout.write("teardown\\n")
        sys.stdout.flush()
keep = Late()  # a module global: only the interpreter's teardown finalizes it
def interrupted():
    raise SystemExit(130)
cli.main = interrupted
cli.entry()
"""


def test_an_import_of_torch_cut_short_leaves_without_the_teardown():
    """A SIGTERM that lands while `import torch` runs takes torch out of `sys.modules` but leaves its C++ library
    in the process, whose destructors aborted the interpreter's teardown ("terminate called without an active
    exception", exit -6 instead of 130, once in a CI-like run of test_interrupts). The entry leaves by `os._exit`
    whenever any part of torch is loaded; with none, the teardown runs as before."""
    cut = subprocess.run([sys.executable, "-c", TEARDOWN_PROBE, "cut"], capture_output=True, timeout=120)
    assert cut.returncode == 130 and b"teardown" not in cut.stdout, cut
    clean = subprocess.run([sys.executable, "-c", TEARDOWN_PROBE, "clean"], capture_output=True, timeout=120)
    assert clean.returncode == 130 and b"teardown" in clean.stdout, clean
