"""The `marlin-convert` CLI run in process (the console script itself is tested in a subprocess elsewhere)."""
from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass

__all__ = ["CliResult", "run_cli", "run_console"]


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: object, columns: int = 250) -> CliResult:
    """Run `marlin-convert ARGS` in this process; the exit code and what it printed to stdout and stderr."""
    from marlin_convert.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_argv, old_columns = sys.argv, os.environ.get("COLUMNS")
    sys.argv = ["marlin-convert", *map(str, args)]
    os.environ["COLUMNS"] = str(columns)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old_argv
        if old_columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old_columns
    return CliResult(code, out.getvalue(), err.getvalue())


def run_console(*args: object, cwd: object = None, env: dict[str, str] | None = None, timeout: float = 300,
                **kwargs: object) -> "subprocess.CompletedProcess[str]":
    """`marlin-convert ARGS` through the installed console script in a subprocess, offline, wide lines."""
    import shutil
    import subprocess
    from pathlib import Path

    beside = Path(sys.executable).parent / "marlin-convert"
    exe = str(beside) if beside.exists() else shutil.which("marlin-convert")
    assert exe, "the marlin-convert console script is not installed (pip install -e .)"
    full_env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=full_env,
                          timeout=timeout, **kwargs)  # type: ignore[call-overload]
