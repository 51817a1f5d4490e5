"""The safetensors dtype names and their torch dtypes and sizes."""
from __future__ import annotations

import torch

__all__ = ["TORCH_DTYPES", "DTYPE_NAMES", "DTYPE_SIZES"]

TORCH_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
}
for _name, _attr in (("F8_E8M0", "float8_e8m0fnu"), ("F8_E4M3FNUZ", "float8_e4m3fnuz"),
                     ("F8_E5M2FNUZ", "float8_e5m2fnuz"), ("C64", "complex64")):
    if hasattr(torch, _attr):  # newer safetensors dtypes, where this torch has them
        TORCH_DTYPES[_name] = getattr(torch, _attr)
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in TORCH_DTYPES.items()}
DTYPE_SIZES: dict[str, int] = {name: dt.itemsize for name, dt in TORCH_DTYPES.items()}
