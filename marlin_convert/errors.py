"""Error types. The library raises these; only the CLI turns them into messages and exit codes."""
from __future__ import annotations

__all__ = [
    "MarlinConvertError",
    "ShapeError",
    "UnknownFormatError",
    "CheckpointError",
    "OutputExistsError",
    "VerifyMismatch",
    "NothingToConvert",
    "NotQuantized",
    "NotAnOutputError",
    "printable",
]


def printable(text: str) -> str:
    """`text` on one printable line: newlines, escape bytes, lone surrogates and other unprintable
    characters are written as Python escapes (`\\n`, `\\x1b`, `\\ud800`)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class MarlinConvertError(Exception):
    """Base class: a clean, one-line message about bad usage or bad input (exit 2)."""

    def __str__(self) -> str:
        return printable(super().__str__())


class ShapeError(MarlinConvertError, ValueError):
    """A tensor's shape or dtype breaks a layout rule; the message states the rule."""


class UnknownFormatError(MarlinConvertError):
    """The checkpoint's quantization format is not recognised or not supported."""


class CheckpointError(MarlinConvertError):
    """A file of the checkpoint is missing, truncated, malformed or inconsistent."""


class OutputExistsError(MarlinConvertError):
    """The output path exists and --force was not given, or it lies inside the input."""


class VerifyMismatch(MarlinConvertError):
    """Verification found a difference (exit 1)."""


class NothingToConvert(MarlinConvertError):
    """No layer is eligible for Marlin and --strict was given (exit 3)."""


class NotQuantized(NothingToConvert):
    """The checkpoint holds no quantized weights at all (plain fp16/bf16): nothing to convert (exit 3)."""


class NotAnOutputError(CheckpointError):
    """A command that needs a marlin-convert output (unpack, verify OUT) was given something else (exit 2)."""
