"""The `marlin-convert` command: parses options, calls `pipeline`, prints. No logic of its own.

Usage errors are typer's own (usage line, exit 2). Library errors become one line on stderr (or a JSON
error object with `--json`) and the documented exit code; Ctrl-C and SIGTERM print "interrupted".
Nothing here imports click: typer >= 0.29 bundles its own.
"""
from __future__ import annotations

import atexit
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from . import _gc
from ._malloc import share_one_arena
from ._version import __version__
from .cli_render import BarReporter, err_console, error_object, heading, inspect_tables, out_console, plural, size, text
from .errors import MarlinConvertError, NothingToConvert, VerifyMismatch

__all__ = ["app", "main", "EXIT_CODES", "Interrupted"]

EXIT_CODES: dict[type[BaseException], int] = {VerifyMismatch: 1, NothingToConvert: 3, MarlinConvertError: 2}
"""Subclasses first (DESIGN §7): 0 ok, 1 verification failed, 2 bad usage or input, 3 nothing to convert."""
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="marlin-convert",
    help="Repack int4 GPTQ, AWQ, AutoRound, compressed-tensors and optimum-quanto checkpoints into the Marlin layout once, "
         "offline, and back, byte for byte.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no `<bool>` type placeholders
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM. Not a KeyboardInterrupt, which typer turns into a silent exit 130 itself."""


class _State:
    json = False
    emitted = False


def emit_json(data: dict[str, Any]) -> None:
    from .cli_render import emit_json as write

    _State.emitted = True
    try:
        write(data)
    except BrokenPipeError:
        _stdout_closed()


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON report on stdout (an error object on failure); no progress.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the output directory if it is empty or a previous marlin-convert output.")]
DeviceOpt = Annotated[str, typer.Option("--device", metavar="auto|cpu|cuda", help="Where the layout math runs (same bytes).")]
JobsOpt = Annotated[Optional[int], typer.Option("--jobs", "-j", metavar="N", help="Layers converted in parallel (default: one per core, at most 16).")]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", metavar="REV", help="Hub id only: branch, tag or commit (default: main).")]
CacheDirOpt = Annotated[Optional[Path], typer.Option("--cache-dir", metavar="DIR", help="Hub id only: Hugging Face cache folder (default: HF_HUB_CACHE).")]
SrcArg = Annotated[str, typer.Argument(metavar="SRC", help="Checkpoint directory, Hugging Face cache snapshot, or Hub id org/name.", show_default=False)]


def _pipeline() -> Any:
    """The pipeline module, imported on first use (it imports torch)."""
    from . import pipeline

    return pipeline


def _source(src: str, revision: str | None, cache_dir: Path | None) -> Path:
    from .checkpoint.hub import resolve_source

    return resolve_source(src, revision=revision, cache_dir=cache_dir)


def _run(json_out: bool, call: Any) -> Any:
    _State.json = json_out
    reporter = BarReporter(quiet=json_out)
    try:
        return call(reporter)
    finally:
        reporter.stop()


def _version(value: bool) -> None:
    if value:
        out_console.print(f"marlin-convert {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the version and exit.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and, at the end, where the time went (also MARLIN_CONVERT_DEBUG=1).")] = False,
) -> None:
    if debug:
        os.environ["MARLIN_CONVERT_DEBUG"] = "1"
    if os.environ.get("MARLIN_CONVERT_DEBUG") == "1":
        atexit.register(_print_stage_times)


def _print_stage_times() -> None:
    """--debug: the per-stage timers (`stage_timers`), on stderr when the command ends (when it timed anything)."""
    from .stage_timers import recorded, summary

    if recorded():
        sys.stderr.write("marlin-convert --debug: time per stage\n" + "\n".join(summary()) + "\n")


@app.command()
def inspect(
    src: SrcArg,
    all_tensors: Annotated[bool, typer.Option("--all", help="One row per tensor instead of one per layer group.")] = False,
    revision: RevisionOpt = None,
    cache_dir: CacheDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the quantized layers by group: packed, or copied and why (or describe a marlin-convert output)."""
    _State.json = json_out
    report = _pipeline().inspect_checkpoint(_source(src, revision, cache_dir))
    if json_out:
        return emit_json(report.to_json())
    for w in report.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    inspect_tables(report, show_all=all_tensors)


@app.command()
def pack(
    src: SrcArg,
    out: Annotated[Path, typer.Option("-o", "--output", metavar="OUT", help="Output directory for the Marlin checkpoint.")],
    force: ForceOpt = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 3 when no layer is eligible.")] = False,
    revision: RevisionOpt = None,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
    jobs: JobsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Repack every eligible layer into the Marlin layout; copy everything else."""
    _State.json = json_out
    path = _source(src, revision, cache_dir)
    report = _run(json_out, lambda r: _pipeline().pack_checkpoint(path, out, force=force, strict=strict, device=device, jobs=jobs, reporter=r))
    if json_out:
        return emit_json(report.to_json())
    heading(f"packed {src} ({report.format}) -> {out}")
    table = Table(show_header=False)
    table.add_row("layers converted", str(report.layers_converted))
    table.add_row("tensors copied", str(report.tensors_copied))
    table.add_row("layers skipped", str(len(report.skipped)))
    table.add_row("shards", str(len(report.shards)))
    table.add_row("bytes", f"{size(report.bytes_in)} in, {size(report.bytes_out)} out")
    table.add_row("time", f"{report.seconds:.2f} s on {report.device}")
    out_console.print(table)
    for prefix, reason in report.skipped.items():
        out_console.print(f"  [yellow]copied[/] {escape(prefix)}: {escape(reason)}", highlight=False, soft_wrap=True)


@app.command()
def unpack(
    src: Annotated[Path, typer.Argument(metavar="OUT", help="Marlin checkpoint directory written by `pack`.", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--output", metavar="BACK", help="Output directory for the restored checkpoint.")],
    force: ForceOpt = False,
    jobs: JobsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Restore the original checkpoint, every file byte for byte, from a Marlin checkpoint and its manifest."""
    report = _run(json_out, lambda r: _pipeline().unpack_checkpoint(src, out, force=force, jobs=jobs, reporter=r))
    if json_out:
        return emit_json(report.to_json())
    out_console.print(
        f"restored {report.layers_restored} {report.format} layers and {plural(report.tensors_copied, 'other tensor')} "
        f"into {out} ({plural(len(report.shards), 'shard')}, {size(report.bytes_out)}, {report.seconds:.2f} s); "
        "every file matches the manifest", highlight=False, soft_wrap=True,
    )


@app.command()
def verify(
    first: Annotated[str, typer.Argument(metavar="SRC", help="Source checkpoint (or the Marlin output alone).", show_default=False)],
    second: Annotated[Optional[Path], typer.Argument(metavar="OUT", help="Marlin output directory (omit to check OUT alone: verify OUT).", show_default=False)] = None,
    revision: RevisionOpt = None,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
    gemm: Annotated[bool, typer.Option(
        "--gemm", help="Also run each layer through a Marlin GEMM on the GPU against a dense reference "
                       "(needs a CUDA GPU, see below).")] = False,
    gemm_backend: Annotated[str, typer.Option(
        "--gemm-backend", metavar="triton|quanto", help="GEMM for --gemm: triton (ours, no compiler) or quanto (optimum-quanto's "
                               "CUDA kernel, float16, group 128 or per-column).")] = "triton",
    forward: Annotated[bool, typer.Option(
        "--forward", help="Also run the same tokens through the dense source model and the converted one "
                          "(transformers) and compare hidden states and logits (needs SRC and the "
                          "transformers extra, see below).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Prove OUT is a lossless Marlin repack of SRC (exit 0) or name what differs (exit 1).

    With OUT alone (verify OUT), checks hashes and the in-memory round trip against the manifest.

    \b
    --gemm needs a CUDA GPU and Triton; --gemm-backend quanto also needs:
      pip install 'marlin-convert[gpu-verify]'
    --forward needs SRC and:
      pip install 'marlin-convert[transformers]'
    """
    _State.json = json_out
    src, out = (_source(first, revision, cache_dir), second) if second is not None else (None, Path(first))
    report = _run(json_out, lambda r: _pipeline().verify_checkpoint(out, src, device=device, reporter=r, gemm=gemm,
                                                                    gemm_backend=gemm_backend, forward=forward))
    if json_out:
        emit_json({**report.to_json(), "exit_code": 0 if report.ok else 1})
    else:
        heading(f"verify {out}" + (f" against {src}" if src else " (manifest only)"))
        table = Table()
        for col in ("check", "result", "detail"):
            table.add_column(col, overflow="fold")
        for c in report.checks:
            style = "green" if c["status"] == "PASS" else "red bold"
            table.add_row(text(c["name"]), f"[{style}]{c['status']}[/]", text(c["detail"]))
        out_console.print(table)
        out_console.print("[green]PASS[/]" if report.ok else f"[red bold]FAIL[/]: {plural(len(report.failures), 'check')} failed")
    if not report.ok:
        raise typer.Exit(1)


def _exit_code(e: BaseException) -> int:
    return next(code for cls, code in EXIT_CODES.items() if isinstance(e, cls))


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted


def _os_error_where(e: OSError) -> str:
    """The file an OSError is about: for a copy (two names), the one being written."""
    if e.filename2:
        return f"{e.filename2} (copying {e.filename}): "
    return f"{e.filename}: " if e.filename else ""


def _fail(kind: str, message: str, code: int) -> None:
    """Print one error line on stderr (and the JSON error object with --json), then exit with `code`."""
    if _State.json:
        _emit_error_object(kind, message, code)
    err_console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def _emit_error_object(kind: str, message: str, code: int) -> None:
    """The --json error object; a reader that has gone away does not change the exit code."""
    try:
        emit_json(error_object(kind, message, code))
    except ReaderGone:
        pass


class ReaderGone(BaseException):
    """Whoever read stdout stopped (`marlin-convert inspect X | head -1`): not an error of ours."""


def _stdout_closed() -> None:
    """Send what is left of stdout nowhere and stop quietly (rich's own default exits 1)."""
    out_console.quiet = True
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    raise ReaderGone


out_console.on_broken_pipe = _stdout_closed  # type: ignore[method-assign]


def entry() -> None:
    """The console script and `python -m marlin_convert`: `main`, then, when the command imported torch (or part of
    it: `_torch_loaded`), the process leaves without the interpreter's teardown, which spent 0.3-0.7 s unloading
    torch on the 2-core machine (issue #15: fixed start); `atexit` handlers (the --debug table) still run and
    stdio is flushed.
    Nothing is left to tear down by then: outputs are in place or removed, shards fsynced, pools shut down.
    First, before any thread starts, glibc malloc is limited to one arena (`_malloc`: lower peak memory), and
    the garbage collector is held off until torch is imported (`_gc`: the start takes 0.12-0.19 s less)."""
    share_one_arena()
    _gc.hold()
    try:
        main()
        code: object = 0
    except SystemExit as e:
        if not _torch_loaded():
            raise
        code = e.code
    if not _torch_loaded():
        return
    if isinstance(code, str):  # sys.exit("message") semantics
        sys.stderr.write(code + "\n")
    status = code if isinstance(code, int) else (0 if code is None else 1)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away, a closed stream
            pass
    os._exit(status)


def _torch_loaded() -> bool:
    """Whether any of torch is loaded: `torch` itself, or a part of it left by an import that an interruption cut
    short (then `torch` is gone from `sys.modules` but its C++ library is in the process, and the interpreter's
    teardown could abort in its destructors: "terminate called without an active exception")."""
    return any(name == "torch" or name.startswith("torch.") for name in sys.modules)


def main() -> None:
    """Runs the app; library errors become one line on stderr and an exit code (SystemExit)."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file-size limit becomes an OSError, not a kill
    debug = lambda: os.environ.get("MARLIN_CONVERT_DEBUG") == "1"  # noqa: E731
    try:
        try:
            app(prog_name="marlin-convert")  # standalone: typer prints usage errors and help, and exits itself
        except SystemExit as e:
            if e.code == 2 and "--json" in sys.argv[1:] and not _State.emitted:  # a usage error, printed on stderr
                _emit_error_object("UsageError", "bad usage: see the usage message on stderr", 2)
            raise
    except (ReaderGone, BrokenPipeError):
        try:
            _stdout_closed()
        except ReaderGone:
            pass
        raise SystemExit(0) from None
    except (Interrupted, KeyboardInterrupt):
        if _State.json:
            _emit_error_object("Interrupted", "interrupted: the output is complete or absent, never partial", EXIT_INTERRUPTED)
        err_console.print("[red]interrupted[/]: the output is complete or absent, never partial")
        raise SystemExit(EXIT_INTERRUPTED) from None
    except MarlinConvertError as e:
        if debug():
            err_console.print_exception()
        _fail(type(e).__name__, str(e), _exit_code(e))
    except OSError as e:
        if debug():
            err_console.print_exception()
        where = _os_error_where(e)
        _fail(type(e).__name__, f"{where}{e.strerror or e}", 2)
    except Exception as e:
        if debug():
            raise
        if _State.json:
            _emit_error_object(type(e).__name__, f"internal error: {e}", 2)
        err_console.print(f"[red]internal error:[/] {escape(type(e).__name__)}: {escape(str(e))} "
                          "(rerun with --debug for the traceback)", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
