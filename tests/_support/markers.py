"""pytest markers for optional extras."""
from __future__ import annotations

import importlib.util

import pytest

__all__ = ["has_quanto", "needs_quanto"]


def has_quanto() -> bool:
    """True when optimum-quanto (the `gpu-verify` extra) is importable."""
    return importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("optimum.quanto") is not None


needs_quanto = pytest.mark.skipif(not has_quanto(), reason="optimum-quanto is not installed")
