from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
import torch


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root, with modes, to prove an input directory was left untouched."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for fn in files:
            p = Path(dirpath) / fn
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
    return out


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `marlin-convert ARGS` in process; returns exit code, stdout, stderr."""
    from marlin_convert.cli import main

    monkeypatch.setenv("COLUMNS", "250")

    def run(*args: str) -> CliResult:
        old = sys.argv
        sys.argv = ["marlin-convert", *map(str, args)]
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = old
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return run


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
