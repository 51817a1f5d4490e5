from __future__ import annotations

import pytest
import torch

from tests._support.cli import run_cli


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
