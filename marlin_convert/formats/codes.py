"""Lazy views of a layer's int4 codes `[n, k]`, so big layers are converted in slices.

A source format keeps its packed tensor and hands out slices of codes on demand; the whole
`[n, k]` uint8 matrix (twice the packed size) is only built when asked for with `full()`.
"""
from __future__ import annotations

from typing import Callable, Iterator, Union

import torch

from ..layout import pack, pack_kpacked, pack_nibbles, unpack, unpack_nibbles
from ..layout.portable import unpack_to_kpacked

__all__ = ["Codes", "DenseCodes", "WordsAlongNCodes", "WordsAlongKCodes", "MarlinCodes", "RowBlocks", "chunk_bounds", "assemble"]

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

    def marlin_rows(self, start: int, stop: int, perm: torch.Tensor | None = None) -> torch.Tensor:
        """Rows `start/16 .. stop/16` of the Marlin weight `[k/16, 2n]` (start, stop multiples of 128);
        with `perm`, Marlin row j holds input column `perm[j]` (act-order)."""
        cols = self.cols(start, stop) if perm is None else self.take_cols(perm[start:stop])
        return pack(cols)

    def kpacked_rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows `start/8 .. stop/8` of the GPTQ-style words `[k/8, n]` (start, stop multiples of 8)."""
        return pack_nibbles(self.cols(start, stop)).t().contiguous()


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


class WordsAlongNCodes(Codes):
    """Codes in int32 words whose rows run along n (one row of words per input row block): GPTQ qweight
    `[k/8, n]` (each word holds 8 consecutive k, lowest k in the lowest nibble), or with `unpack_rows`
    any layout with one k per row, such as AWQ's `[k, n/8]` (each word holds 8 n)."""

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

    def marlin_rows(self, start: int, stop: int, perm: torch.Tensor | None = None) -> torch.Tensor:
        if self._k_per_row != 8:
            return super().marlin_rows(start, stop, perm)
        if perm is None:  # straight from the words: no [n, k] codes, not even for a slice
            return pack_kpacked(self.words[start // 8 : stop // 8])
        return pack_kpacked(self.words, perm[start:stop])

    def kpacked_rows(self, start: int, stop: int) -> torch.Tensor:
        if self._k_per_row != 8:
            return super().kpacked_rows(start, stop)
        return self.words[start // 8 : stop // 8]


class WordsAlongKCodes(Codes):
    """Codes in int32 words whose rows run along k: `[n, k/8]`, each word holding 8 consecutive k,
    lowest k in the lowest nibble (compressed-tensors weight_packed)."""

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
    """Codes held in Marlin tiles `[k/16, 2n]`, whose row j holds input column `perm[j]` when an
    act-order `perm` is given. `ready(rows)`, when given, returns once the first `rows` tile rows of `packed`
    are in memory (a `B` still being read, front to back, while its first rows are unpacked)."""

    def __init__(self, packed: torch.Tensor, *, n: int, k: int, perm: torch.Tensor | None = None,
                 ready: Callable[[int], None] | None = None):
        self.packed, self.n, self.k = packed, n, k
        self.perm = perm
        self._ready = ready
        self._words: torch.Tensor | None = None

    def _storage(self) -> torch.Tensor:
        return self.packed

    def _tiles(self, start: int, stop: int) -> torch.Tensor:
        """Tile rows `start .. stop` of `packed`, once they are in memory."""
        if self._ready is not None:
            self._ready(stop)
        return self.packed[start:stop]

    def _all(self) -> torch.Tensor:
        return self._tiles(0, self.packed.shape[0])

    def cols(self, start: int, stop: int) -> torch.Tensor:
        if self.perm is not None or start % 128 or (stop % 128 and stop != self.k):
            return super().cols(start, stop)
        return unpack(self._tiles(start // 16, stop // 16), n=self.n, k=stop - start)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        codes = unpack(self._all()[:, 2 * start : 2 * stop].contiguous(), n=stop - start, k=self.k)
        return codes if self.perm is None else _unpermute(codes, self.perm)

    def full(self) -> torch.Tensor:
        codes = unpack(self._all(), n=self.n, k=self.k)
        return codes if self.perm is None else _unpermute(codes, self.perm)

    def kpacked_rows(self, start: int, stop: int) -> torch.Tensor:
        if self.packed.device.type != "cpu":
            return super().kpacked_rows(start, stop)
        if self.perm is None:
            return unpack_to_kpacked(self._tiles(start // 16, stop // 16), n=self.n, k=stop - start)
        if self._words is None:  # act-order: rows come from anywhere in B, so restore all words once
            self._words = unpack_to_kpacked(self._all(), n=self.n, k=self.k, perm=self.perm)
        return self._words[start // 8 : stop // 8]


def _unpermute(codes: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Codes whose column j holds input column perm[j] -> codes in input order."""
    restored = torch.empty_like(codes)
    restored[:, perm.to(codes.device, torch.int64)] = codes
    return restored


RowBlocks = Iterator[torch.Tensor]
"""A big tensor handed out as consecutive blocks of rows (dim 0), so it never sits whole in memory."""


def assemble(blocks: RowBlocks, *, stream: bool) -> Union[torch.Tensor, RowBlocks]:
    """The blocks themselves when streaming, else the whole tensor."""
    return blocks if stream else torch.cat(list(blocks), dim=0)
