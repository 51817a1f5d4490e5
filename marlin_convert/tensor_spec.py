"""`TensorSpec`: a tensor's safetensors dtype name and shape, the one description every layer shares."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .dtypes import DTYPE_SIZES

__all__ = ["TensorSpec"]


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's safetensors dtype name (e.g. "I32") and shape, read from a header."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_SIZES[self.dtype]
