"""The `marlin-convert` CLI run in process (the console script itself is tested in a subprocess elsewhere)."""
from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass

__all__ = ["CliResult", "run_cli"]


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
