"""The `marlin-convert` command: parses options, calls `pipeline`, prints. No logic of its own."""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from . import __version__
from .errors import MarlinConvertError, NothingToConvert, VerifyMismatch

__all__ = ["app", "main", "EXIT_CODES"]

EXIT_CODES: dict[type[BaseException], int] = {VerifyMismatch: 1, NothingToConvert: 3, MarlinConvertError: 2}
"""Subclasses first (DESIGN §7): 0 ok, 1 verification failed, 2 bad usage or input, 3 nothing to convert."""

app = typer.Typer(
    name="marlin-convert",
    help="Repack int4 GPTQ, AWQ, compressed-tensors and optimum-quanto checkpoints into the Marlin layout once, offline, and back, byte for byte.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out_console = Console()
err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON report on stdout; no progress.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the output directory if it exists.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="Where the layout math runs: auto, cpu or cuda (same bytes).")]
JobsOpt = Annotated[Optional[int], typer.Option("--jobs", "-j", help="Layers converted in parallel (default: one per core, at most 16).")]


class _BarReporter:
    """A rich progress bar over bytes on stderr (only on a terminal); warnings go to stderr too."""

    def __init__(self, quiet: bool):
        self.quiet = quiet or not err_console.is_terminal
        self.progress: Progress | None = None

    def start(self, total_bytes: int, label: str) -> None:
        if self.quiet:
            return
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
        err_console.print(f"[yellow]warning:[/] {message}", highlight=False)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _pipeline() -> Any:
    """The pipeline module, imported on first use (it imports torch)."""
    from . import pipeline

    return pipeline


def _run(json_out: bool, call: Any) -> Any:
    reporter = _BarReporter(quiet=json_out)
    try:
        return call(reporter)
    finally:
        reporter.stop()


def _emit_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _size(nbytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return ""


def _version(value: bool) -> None:
    if value:
        out_console.print(f"marlin-convert {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (also MARLIN_CONVERT_DEBUG=1).")] = False,
) -> None:
    if debug:
        os.environ["MARLIN_CONVERT_DEBUG"] = "1"


@app.command()
def inspect(
    src: Annotated[Path, typer.Argument(help="Checkpoint directory.")],
    json_out: JsonOpt = False,
) -> None:
    """Show every quantized layer and tensor: packed, or copied and why."""
    report = _pipeline().inspect_checkpoint(src)
    if json_out:
        return _emit_json(report.to_json())
    for w in report.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    table = Table(title=f"{src} ({report.format})")
    table.add_column("tensor", overflow="fold")
    for col in ("dtype", "shape", "action"):
        table.add_column(col, no_wrap=True)
    table.add_column("why not", overflow="fold")
    for t in report.tensors:
        style = "green" if t["action"] == "pack" else "yellow"
        reason = t["reason"] or ("" if t["layer"] else "not a quantized layer")
        table.add_row(t["name"], t["dtype"], str(t["shape"]), f"[{style}]{t['action']}[/]", reason)
    out_console.print(table)
    eligible = sum(1 for layer in report.layers if layer["eligible"])
    others = sum(1 for t in report.tensors if t["layer"] is None)
    out_console.print(f"{eligible} of {len(report.layers)} quantized layers eligible; {others} other tensors copied verbatim")


@app.command()
def pack(
    src: Annotated[Path, typer.Argument(help="Source int4 checkpoint directory (never modified).")],
    out: Annotated[Path, typer.Option("-o", "--output", help="Output directory for the Marlin checkpoint.")],
    force: ForceOpt = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 3 when no layer is eligible.")] = False,
    device: DeviceOpt = "auto",
    jobs: JobsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Repack every eligible layer into the Marlin layout; copy everything else."""
    report = _run(json_out, lambda r: _pipeline().pack_checkpoint(src, out, force=force, strict=strict, device=device, jobs=jobs, reporter=r))
    if json_out:
        return _emit_json(report.to_json())
    table = Table(title=f"packed {src} ({report.format}) -> {out}", show_header=False)
    table.add_row("layers converted", str(report.layers_converted))
    table.add_row("tensors copied", str(report.tensors_copied))
    table.add_row("layers skipped", str(len(report.skipped)))
    table.add_row("shards", str(len(report.shards)))
    table.add_row("bytes", f"{_size(report.bytes_in)} in, {_size(report.bytes_out)} out")
    table.add_row("time", f"{report.seconds:.2f} s on {report.device}")
    out_console.print(table)
    for prefix, reason in report.skipped.items():
        out_console.print(f"  [yellow]copied[/] {prefix}: {reason}", highlight=False)


@app.command()
def unpack(
    src: Annotated[Path, typer.Argument(help="Marlin checkpoint directory written by `pack`.")],
    out: Annotated[Path, typer.Option("-o", "--output", help="Output directory for the restored checkpoint.")],
    force: ForceOpt = False,
    jobs: JobsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Restore the original checkpoint, byte-identical tensors, from a Marlin checkpoint and its manifest."""
    report = _run(json_out, lambda r: _pipeline().unpack_checkpoint(src, out, force=force, jobs=jobs, reporter=r))
    if json_out:
        return _emit_json(report.to_json())
    out_console.print(
        f"restored {report.layers_restored} {report.format} layers and {report.tensors_copied} other tensors "
        f"into {out} ({len(report.shards)} shards, {_size(report.bytes_out)}, {report.seconds:.2f} s); every tensor matches its sha256"
    )


@app.command()
def verify(
    first: Annotated[Path, typer.Argument(metavar="SRC_OR_OUT", help="Source checkpoint (or the Marlin output alone).")],
    second: Annotated[Optional[Path], typer.Argument(metavar="[OUT]", help="Marlin output directory.")] = None,
    device: DeviceOpt = "auto",
    gemm: Annotated[bool, typer.Option(
        "--gemm", help="Also run each layer through optimum-quanto's Marlin GEMM on the GPU against a dense "
                       "reference (needs a CUDA GPU and: pip install 'marlin-convert\\[gpu-verify]').")] = False,
    forward: Annotated[bool, typer.Option(
        "--forward", help="Also run the same tokens through the dense source model and the converted one "
                          "(transformers) and compare hidden states and logits (needs SRC and: "
                          "pip install 'marlin-convert\\[transformers]').")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Prove OUT is a lossless Marlin repack of SRC (exit 0) or name what differs (exit 1).

    With OUT alone, checks hashes and the in-memory round trip against the manifest.
    """
    src, out = (first, second) if second is not None else (None, first)
    report = _run(json_out, lambda r: _pipeline().verify_checkpoint(out, src, device=device, reporter=r, gemm=gemm, forward=forward))
    if json_out:
        _emit_json(report.to_json())
    else:
        table = Table(title=f"verify {out}" + (f" against {src}" if src else " (manifest only)"))
        for col in ("check", "result", "detail"):
            table.add_column(col)
        for c in report.checks:
            style = "green" if c["status"] == "PASS" else "red bold"
            table.add_row(c["name"], f"[{style}]{c['status']}[/]", c["detail"])
        out_console.print(table)
        out_console.print("[green]PASS[/]" if report.ok else f"[red bold]FAIL[/]: {len(report.failures)} check(s) failed")
    if not report.ok:
        raise typer.Exit(1)


def _exit_code(e: BaseException) -> int:
    return next(code for cls, code in EXIT_CODES.items() if isinstance(e, cls))


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Entry point: runs the app; library errors become one line on stderr and an exit code."""
    signal.signal(signal.SIGTERM, _sigterm)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file-size limit becomes an OSError, not a kill
    try:
        code = app(standalone_mode=False)  # click returns the code of typer.Exit in this mode
    except MarlinConvertError as e:
        if os.environ.get("MARLIN_CONVERT_DEBUG") == "1":
            err_console.print_exception()
        err_console.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise SystemExit(_exit_code(e)) from None
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("[red]interrupted[/]: the output is complete or absent, never partial")
        raise SystemExit(130) from None
    except OSError as e:
        if os.environ.get("MARLIN_CONVERT_DEBUG") == "1":
            err_console.print_exception()
        where = f"{e.filename}: " if e.filename else ""
        err_console.print(f"[red]error:[/] {where}{e.strerror or e}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except Exception as e:
        import click

        if isinstance(e, click.ClickException):  # usage errors
            e.show()
            raise SystemExit(2) from None
        if os.environ.get("MARLIN_CONVERT_DEBUG") == "1":
            raise
        err_console.print(f"[red]internal error:[/] {type(e).__name__}: {e} (rerun with --debug for the traceback)",
                          highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
