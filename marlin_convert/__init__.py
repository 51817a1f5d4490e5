"""marlin-convert: repack int4 checkpoints into the Marlin layout once, offline, losslessly.

Importing it also registers the "marlin" quantization method with transformers (lazily: transformers is
neither imported nor required), so `AutoModelForCausalLM.from_pretrained` runs converted checkpoints
through `marlin_convert.runtime.MarlinLinear`.

The public API is four checkpoint-level functions and the tensor-level layout functions:

    >>> from marlin_convert import pack_checkpoint, unpack_checkpoint, verify_checkpoint, inspect_checkpoint
    >>> from marlin_convert.layout import pack, unpack
"""
from __future__ import annotations

from ._version import __version__
from .errors import (  # noqa: E402
    CheckpointError,
    MarlinConvertError,
    NothingToConvert,
    OutputExistsError,
    ShapeError,
    UnknownFormatError,
    VerifyMismatch,
)
from ._transformers_hook import install as _install_transformers_hook  # noqa: E402

_install_transformers_hook()

__all__ = [
    "__version__",
    "pack_checkpoint",
    "unpack_checkpoint",
    "verify_checkpoint",
    "inspect_checkpoint",
    "PackReport",
    "UnpackReport",
    "VerifyReport",
    "InspectReport",
    "Reporter",
    "MarlinConvertError",
    "CheckpointError",
    "NothingToConvert",
    "OutputExistsError",
    "ShapeError",
    "UnknownFormatError",
    "VerifyMismatch",
]

_LAZY = {"InspectReport", "PackReport", "Reporter", "UnpackReport", "VerifyReport", "inspect_checkpoint",
         "pack_checkpoint", "unpack_checkpoint", "verify_checkpoint"}


def __getattr__(name: str):  # PEP 562: torch is imported on first use, so `marlin-convert --help` starts fast
    if name in _LAZY:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'marlin_convert' has no attribute {name!r}")
