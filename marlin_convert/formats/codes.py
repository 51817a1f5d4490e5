"""Lazy views of a layer's int4 codes `[n, k]`, so big layers are converted in slices.

A source format keeps its packed tensor and hands out slices of codes on demand; the whole
`[n, k]` uint8 matrix (twice the packed size) is only built when asked for with `full()`.
"""
from __future__ import annotations

from typing import Callable, Iterator, Union

import torch

from ..layout import unpack_codes, unpack_nibbles

__all__ = ["Codes", "DenseCodes", "KPackedCodes", "NPackedCodes", "MarlinCodes", "RowBlocks", "chunk_bounds", "assemble"]

CHUNK_BYTES = 8 << 20
"""Target size of one slice of codes: small enough for the cache-sized temporaries to stay small."""


def chunk_bounds(total: int, other: int, *, align: int) -> Iterator[tuple[int, int]]:
    """`(start, stop)` slices of `total`, each a multiple of `align` holding about CHUNK_BYTES of codes."""
    step = max(align, (CHUNK_BYTES // max(other, 1)) // align * align)
    for start in range(0, total, step):
        yield start, min(start + step, total)


class Codes:
    """Codes `[n, k]`, values 0..15; subclasses override what their packing makes cheap."""

    n: int
    k: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.k)

    @property
    def device(self) -> torch.device:
        """Where the underlying tensor lives (slices come back on the same device)."""
        return self._storage().device

    def _storage(self) -> torch.Tensor:
        raise NotImplementedError

    def take_cols(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 `[n, len(index)]`: the codes of the given input columns."""
        return self.full().index_select(1, index.to(self.device, torch.int64))

    def cols(self, start: int, stop: int) -> torch.Tensor:
        """uint8 `[n, stop - start]` (start and stop multiples of 8)."""
        return self.take_cols(torch.arange(start, stop, device=self.device))

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """uint8 `[stop - start, k]` (start and stop multiples of 64)."""
        return self.full()[start:stop]

    def full(self) -> torch.Tensor:
        """uint8 `[n, k]`."""
        return self.cols(0, self.k)


class DenseCodes(Codes):
    """Codes already held one per byte."""

    def __init__(self, codes: torch.Tensor):
        self.tensor = codes
        self.n, self.k = int(codes.shape[0]), int(codes.shape[1])

    def _storage(self) -> torch.Tensor:
        return self.tensor

    def take_cols(self, index: torch.Tensor) -> torch.Tensor:
        return self.tensor.index_select(1, index.to(self.tensor.device, torch.int64))

    def cols(self, start: int, stop: int) -> torch.Tensor:
        return self.tensor[:, start:stop].contiguous()

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return self.tensor[start:stop]

    def full(self) -> torch.Tensor:
        return self.tensor


class KPackedCodes(Codes):
    """Codes packed along k: GPTQ qweight `[k/8, n]` (8 k per row of words, lowest k in the lowest
    nibble), or with `unpack_rows` any layout with one k per row, such as AWQ's `[k, n/8]`."""

    def __init__(self, words: torch.Tensor, *, n: int, k: int,
                 unpack_rows: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.words, self.n, self.k = words, n, k
        self._unpack_rows = unpack_rows
        self._k_per_row = 8 if unpack_rows is None else 1

    def _storage(self) -> torch.Tensor:
        return self.words

    def _kn(self, words: torch.Tensor) -> torch.Tensor:
        """Rows of words -> uint8 `[k of those rows, n]`."""
        if self._unpack_rows is not None:
            return self._unpack_rows(words)
        return unpack_nibbles(words.t().contiguous()).t()

    def take_cols(self, index: torch.Tensor) -> torch.Tensor:
        index = index.to(self.device, torch.int64)
        if self._k_per_row == 1:
            return self._kn(self.words.index_select(0, index)).t().contiguous()
        words = self.words.index_select(0, index // 8)  # [len, n]
        shifts = (4 * (index % 8)).to(torch.int32).unsqueeze(1)
        return ((words >> shifts) & 0xF).to(torch.uint8).t().contiguous()

    def cols(self, start: int, stop: int) -> torch.Tensor:
        per = self._k_per_row
        return self._kn(self.words[start // per : stop // per]).t().contiguous()


class NPackedCodes(Codes):
    """Codes packed 8 per int32 along k as `[n, k/8]` (compressed-tensors weight_packed)."""

    def __init__(self, words: torch.Tensor, *, n: int, k: int):
        self.words, self.n, self.k = words, n, k

    def _storage(self) -> torch.Tensor:
        return self.words

    def take_cols(self, index: torch.Tensor) -> torch.Tensor:
        index = index.to(self.device, torch.int64)
        words = self.words.index_select(1, index // 8)  # [n, len]
        return ((words >> (4 * (index % 8)).to(torch.int32)) & 0xF).to(torch.uint8)

    def cols(self, start: int, stop: int) -> torch.Tensor:
        return unpack_nibbles(self.words[:, start // 8 : stop // 8].contiguous())

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return unpack_nibbles(self.words[start:stop])[:, : self.k]


class MarlinCodes(Codes):
    """Codes held in Marlin tiles `[k/16, 2n]` (no act-order permutation)."""

    def __init__(self, packed: torch.Tensor, *, n: int, k: int):
        self.packed, self.n, self.k = packed, n, k

    def _storage(self) -> torch.Tensor:
        return self.packed

    def cols(self, start: int, stop: int) -> torch.Tensor:
        if start % 128 or (stop % 128 and stop != self.k):
            return super().cols(start, stop)
        return unpack_codes(self.packed[start // 16 : stop // 16], n=self.n, k=stop - start)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return unpack_codes(self.packed[:, 2 * start : 2 * stop].contiguous(), n=stop - start, k=self.k)

    def full(self) -> torch.Tensor:
        return unpack_codes(self.packed, n=self.n, k=self.k)


RowBlocks = Iterator[torch.Tensor]
"""A big tensor handed out as consecutive blocks of rows (dim 0), so it never sits whole in memory."""


def assemble(blocks: RowBlocks, *, stream: bool) -> Union[torch.Tensor, RowBlocks]:
    """The blocks themselves when streaming, else the whole tensor."""
    return blocks if stream else torch.cat(list(blocks), dim=0)
