from __future__ import annotations

import os

import pytest
import torch

from tests._support.cli import run_cli

_PYTEST_PID = os.getpid()
_os_exit = os._exit


def _exit_elsewhere(code: int) -> None:
    """`os._exit` in the pytest process would end the run with that code and no report (the console script's
    entry leaves that way once torch is loaded, and a test that ran it in process once ended a CI run early
    with 0): it fails the test instead. Forked children and subprocesses exit as usual."""
    if os.getpid() == _PYTEST_PID:
        raise RuntimeError(f"os._exit({code}) called in the pytest process")
    _os_exit(code)


os._exit = _exit_elsewhere


@pytest.fixture
def cli():
    """Run `marlin-convert ARGS` in process; returns exit code, stdout, stderr (see `tests._support.cli`)."""
    return run_cli


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
