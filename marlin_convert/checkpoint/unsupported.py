"""Naming a checkpoint that holds weights in a format marlin-convert does not read (GGUF, PyTorch .bin)."""
from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from ..errors import UnknownFormatError

__all__ = ["SUPPORTED", "unsupported_checkpoint"]

SUPPORTED = "int4 safetensors checkpoints from GPTQ, AWQ (GEMM), compressed-tensors (pack-quantized) or optimum-quanto (qint4)"

_KINDS = (
    ("*.gguf", "GGUF (llama.cpp) checkpoint"),
    ("*.bin", "PyTorch .bin checkpoint"),
    ("*.pt", "PyTorch .pt checkpoint"),
    ("*.pth", "PyTorch .pth checkpoint"),
)


def unsupported_checkpoint(root: Path) -> NoReturn:
    """Raise for a directory without safetensors: name what it holds instead, and what is supported."""
    for pattern, kind in _KINDS:
        found = sorted(p.name for p in root.glob(pattern))
        if found:
            raise UnknownFormatError(f"{root / found[0]}: {kind} is not supported; marlin-convert reads {SUPPORTED}")
    raise UnknownFormatError(f"{root}: no .safetensors file; marlin-convert reads {SUPPORTED}")
