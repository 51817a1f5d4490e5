"""Source formats: each decodes its tensors of one linear layer into the canonical record and back.

Importing this package registers every format. `detect_format` picks one from the config files.
Detection and planning need no torch: torch is imported by the first decode, encode or layout call
(and by the names in `_LAZY`, on first use).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import UnknownFormatError
from . import autoround, awq, compressed_tensors, gptq, quanto  # noqa: F401  (registers)
from .base import Format, FormatContext, FormatName, FormatPlan, TensorReader, TensorSpec, normalize_name
from .marlin import from_marlin, marlin_specs, to_marlin
from .record import LayerPlan, QuantizedLinear, dequantize, trivial_g_idx

if TYPE_CHECKING:
    from .codes import Codes, DenseCodes, MarlinCodes, RowBlocks

_LAZY = {"Codes", "DenseCodes", "MarlinCodes", "RowBlocks"}
"""Names from `codes`, which imports torch: imported on first use (PEP 562)."""

__all__ = [
    "Codes",
    "DenseCodes",
    "MarlinCodes",
    "RowBlocks",
    "DETECT_ORDER",
    "MARKER_FILES",
    "detect_format",
    "Format",
    "FormatContext",
    "FormatName",
    "FormatPlan",
    "LayerPlan",
    "QuantizedLinear",
    "TensorReader",
    "TensorSpec",
    "dequantize",
    "from_marlin",
    "marlin_specs",
    "normalize_name",
    "to_marlin",
    "trivial_g_idx",
]

MARKER_FILES: tuple[str, ...] = Format.all_marker_files()
"""JSON files besides config.json that some format reads (give them to `open_checkpoint`)."""

DETECT_ORDER: list[str] = [
    FormatName.GPTQ.value,
    FormatName.AWQ.value,
    FormatName.COMPRESSED_TENSORS.value,
    FormatName.QUANTO.value,
    FormatName.AUTO_ROUND.value,
]
"""Most specific first; each entry must be registered."""


def detect_format(ctx: FormatContext) -> type[Format]:
    """The one registered format whose markers this checkpoint carries.

    Raises: UnknownFormatError naming what was found, when none or several match.
    """
    matches = [Format.get(name) for name in DETECT_ORDER if Format.get(name).detect(ctx)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UnknownFormatError(f"checkpoint matches several formats: {', '.join(m.name for m in matches)}")
    qc = ctx.quantization_config
    if qc is not None:
        method = qc.get("quant_method", "<missing>")
        return _unsupported(f"quantization_config.quant_method {method!r} is not a supported int4 format")
    return _unsupported("config.json has no quantization_config (and no other format's marker file)")


def _unsupported(reason: str) -> type[Format]:
    known = ", ".join(DETECT_ORDER)
    raise UnknownFormatError(f"{reason}; supported: {known}")


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import codes

    return getattr(codes, name)
