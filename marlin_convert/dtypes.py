"""The safetensors dtype names and their sizes (torch-free), and their torch dtypes (torch on first use).

`DTYPE_SIZES` is a plain table, so reading headers, planning and `inspect` need no torch; `TORCH_DTYPES`
and `DTYPE_NAMES` are built on first access (PEP 562), which imports torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["TORCH_DTYPES", "DTYPE_NAMES", "DTYPE_SIZES"]

DTYPE_SIZES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
    "F8_E8M0": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1, "C64": 8,
}
"""Bytes per element of every safetensors dtype this package reads (the same as torch's `itemsize`)."""

_TORCH_ATTRS = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "U16": "uint16", "U32": "uint32", "U64": "uint64",
    "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz", "C64": "complex64",
}
"""The torch dtype of each name; the last four where this torch has them."""

TORCH_DTYPES: dict[str, torch.dtype]
DTYPE_NAMES: dict[torch.dtype, str]


def __getattr__(name: str) -> Any:  # PEP 562: the torch tables are built, and torch imported, on first use
    if name not in ("TORCH_DTYPES", "DTYPE_NAMES"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import torch

    torch_dtypes = {key: getattr(torch, attr) for key, attr in _TORCH_ATTRS.items() if hasattr(torch, attr)}
    globals().update(TORCH_DTYPES=torch_dtypes, DTYPE_NAMES={v: k for k, v in torch_dtypes.items()})
    return globals()[name]
