"""A 2-D tensor of a shard read on demand, a block of rows at a time, so it is never held whole.

pack hands a layer's big GPTQ words to the layout kernel this way when their sha256 comes from the pass over the
source (`pipeline/_digests_ahead`): the kernel reads a few MiB of words per block of `B` it makes, so the layer
costs a few blocks of memory instead of its whole `qweight`, and its read is spread over the kernel's work
instead of standing between two layers. `verify SRC OUT` reads source words the same way for its repack and its
comparison with the unpacked bytes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

from .safetensors_file import TensorInfo, read_bytes, tensor_from_bytes

if TYPE_CHECKING:
    import torch

__all__ = ["StoredRows"]


class StoredRows:
    """The rows of a stored 2-D tensor, read when sliced: `rows[a:b]` is a CPU tensor of rows a..b-1 read from
    the file (into a buffer of the process's pool). Only that, `shape`, `dtype`, `device`, `dim()` and `len()`
    are offered; a format names the roles it reads only this way (`Format.row_sliced`)."""

    def __init__(self, f: BinaryIO, info: TensorInfo):
        if len(info.shape) != 2:
            raise ValueError(f"{info.name}: rows of a 2-D tensor only, not of shape {info.shape}")
        self._file, self._info = f, info
        self._row_bytes = info.nbytes // info.shape[0] if info.shape[0] else 0

    @property
    def shape(self) -> torch.Size:
        import torch

        return torch.Size(self._info.shape)

    @property
    def dtype(self) -> torch.dtype:
        from ..dtypes import TORCH_DTYPES

        return TORCH_DTYPES[self._info.dtype]

    @property
    def device(self) -> torch.device:
        import torch

        return torch.device("cpu")

    def dim(self) -> int:
        return 2

    def __len__(self) -> int:
        return self._info.shape[0]

    def __getitem__(self, rows: slice) -> torch.Tensor:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError(f"{self._info.name}: only row ranges are read on demand, not {rows!r}")
        start, stop, _ = rows.indices(self._info.shape[0])
        return self._rows(start, max(start, stop))

    def _rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop-1 (start <= stop), read from the file."""
        part = TensorInfo(self._info.name, self._info.dtype, (stop - start, self._info.shape[1]),
                          self._info.start + start * self._row_bytes, self._info.start + stop * self._row_bytes)
        return tensor_from_bytes(read_bytes(self._file, part), part)
