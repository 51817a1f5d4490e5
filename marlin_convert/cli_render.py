"""What the CLI prints: the rich progress bar, tables, sizes, plurals and JSON (reports and error objects)."""
from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from .errors import printable

__all__ = ["out_console", "err_console", "BarReporter", "emit_json", "error_object", "size", "plural",
           "heading", "inspect_tables", "ERROR_SCHEMA_VERSION"]

ERROR_SCHEMA_VERSION = 1
"""`schema_version` of the JSON error object (same numbering as the reports')."""

out_console = Console()
err_console = Console(stderr=True)


class BarReporter:
    """A rich progress bar over bytes on stderr (only on a terminal); warnings go to stderr too.
    Duck-types `marlin_convert.progress.Reporter`, so `--help` need not import the library."""

    def __init__(self, quiet: bool):
        self.quiet = quiet or not err_console.is_terminal
        self.progress: Progress | None = None

    def start(self, total_bytes: int, label: str) -> None:
        if self.quiet:
            return
        self.stop()
        self.progress = Progress(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), console=err_console, transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(label, total=total_bytes)

    def advance(self, nbytes: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, nbytes)

    def warn(self, message: str) -> None:
        err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None



def text(value: str) -> str:
    """A name from a checkpoint, safe to print: one line (unprintable characters escaped), no rich markup."""
    return escape(printable(value))

def emit_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def error_object(kind: str, message: str, exit_code: int) -> dict[str, Any]:
    """The `--json` answer of a failed command."""
    return {"schema_version": ERROR_SCHEMA_VERSION, "ok": False, "error": {"type": kind, "message": message},
            "exit_code": exit_code}


def size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return ""


def plural(count: int, word: str, words: str | None = None) -> str:
    """`1 shard`, `2 shards`."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def heading(text: str) -> None:
    """A title line that wraps at spaces only (rich table titles break long paths mid-word)."""
    out_console.print(f"[bold]{escape(text)}[/]", soft_wrap=True, highlight=False)


def _flag(value: Any, yes: str, no: str) -> str:
    return "" if value is None else (yes if value else no)


def _dims(values: list[int]) -> str:
    return ",".join(map(str, values)) if values and values != [0] else ""


def inspect_tables(report: Any, show_all: bool) -> None:
    """Print an InspectReport: a heading, one row per layer group (or per tensor with `show_all`), totals."""
    if report.converted_from is not None:
        cf = report.converted_from
        heading(f"{report.path}: marlin-convert output (tool {cf['tool_version']}), converted from "
                f"{cf['format']} ({plural(cf['tensors'], 'tensor')}, {plural(cf['shards'], 'shard')}, {size(cf['bytes'])})")
    else:
        heading(f"{report.path} ({report.format})")
    if show_all:
        table = Table()
        table.add_column("tensor", overflow="fold")
        for col in ("dtype", "shape", "action"):
            table.add_column(col, no_wrap=True)
        table.add_column("why not", overflow="fold")
        for t in report.tensors:
            style = "green" if t["action"] in ("pack", "packed") else "yellow"
            reason = t["reason"] or ("" if t["layer"] or t["action"] == "copied" else "not a quantized layer")
            table.add_row(text(t["name"]), t["dtype"], str(t["shape"]), f"[{style}]{t['action']}[/]", escape(reason))
    else:
        table = Table()
        table.add_column("layer group", overflow="fold")
        for col in ("layers", "N", "K", "group", "sym", "act-order", "bytes"):
            table.add_column(col, no_wrap=True, justify="right" if col in ("layers", "bytes") else "left")
        table.add_column("action", overflow="fold")
        for g in report.groups:
            gs = g["group_size"]
            group = "" if gs is None else ("channel" if gs == -1 else f"g{gs}")
            done = "packed" if report.converted_from is not None else "pack"
            action = f"[green]{done}[/]" if g["eligible"] else f"[yellow]copy[/]: {escape(g['reason'] or '')}"
            table.add_row(text(g["pattern"]), str(g["layers"]), _dims(g["n"]), _dims(g["k"]), group,
                          _flag(g["sym"], "sym", "asym"), _flag(g["act_order"], "yes", "no"), size(g["bytes"]), action)
    out_console.print(table)
    t = report.totals
    other = t["tensors"] - sum(1 for x in report.tensors if x["layer"])
    out_console.print(
        f"{t['eligible_layers']} of {plural(t['layers'], 'quantized layer')} "
        f"{'converted' if report.converted_from is not None else 'eligible'}; "
        f"{plural(t['tensors'], 'tensor')} ({size(t['bytes'])}): {t['packed_tensors']} "
        f"{'packed' if report.converted_from is not None else 'to pack'} ({size(t['packed_bytes'])}), "
        f"{plural(other, 'other tensor')} copied verbatim" + ("" if show_all else "; --all lists every tensor"),
        highlight=False, soft_wrap=True)
