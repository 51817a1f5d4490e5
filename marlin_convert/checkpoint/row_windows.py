"""A stored 2-D tensor read once, front to back, for consumers that each slice it by rows: never held whole.

`verify SRC OUT` uses a layer's big source words twice, on two threads: a fresh pack of them is compared with
the Marlin `B`, and the words unpacked from `B` are compared with them. In the page cache each of the two reads
its row ranges from there (`StoredRows`). Not in the page cache, the words were read whole, beside the whole `B`:
2.7x the largest tensor above the interpreter with torch. Here they are read in windows of rows (past the page
cache where the file system allows it, `read_direct`), hashed as they come, in file order, and a window is let
go once every open view has asked for rows past it. Reads wait while a view lags `KEEP` bytes behind, so views
are meant to be used on different threads (or closed). A view that has not started after `STALL` seconds of
waiting no longer holds the reads back: what it missed it reads from the file itself (the same bytes, again).
"""
from __future__ import annotations

import functools
import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, BinaryIO

from ..stage_timers import stage
from .direct_file import read_direct
from .safetensors_file import TensorInfo, read_bytes, tensor_from_bytes
from .stored_rows import StoredRows

if TYPE_CHECKING:
    import torch

__all__ = ["RowWindows", "RowView", "WINDOW", "AHEAD", "KEEP", "STALL"]

WINDOW = 4 << 20
"""Bytes per read, at most (a power of two of whole rows, at least one: the slices the formats take, 16-row
multiples, then lie inside one window and come back without a copy)."""
AHEAD = 2
"""Windows read ahead of the furthest row asked for."""
KEEP = 16 << 20
"""Bytes of windows kept at most: reads wait for the slowest view beyond it (at least `AHEAD` + 2 windows)."""
STALL = 5.0
"""Seconds a view waits on views that have not started before the reads go on without them."""


class RowWindows:
    """The rows of a stored 2-D tensor, read window by window on a thread of the process (`AHEAD` windows beyond
    the furthest row asked for, from the start) and hashed on another as they land, in file order. `view()` gives
    a `StoredRows`-like consumer that must slice in increasing order of the first row; `finish()` reads and
    hashes what was not read yet and returns the sha256 of the stored bytes. Views may be used on different
    threads. Left unfinished, it reads nothing more than was asked for."""

    def __init__(self, f: BinaryIO, info: TensorInfo, *, direct_fd: int | None = None,
                 window: int | None = None, keep: int | None = None):
        if len(info.shape) != 2 or info.shape[0] == 0:
            raise ValueError(f"{info.name}: rows of a non-empty 2-D tensor only, not of shape {info.shape}")
        self._file, self._info, self._fd = f, info, direct_fd
        window, keep = WINDOW if window is None else window, KEEP if keep is None else keep
        self._row_bytes = info.nbytes // info.shape[0]
        self._rows_per = 1 << max(0, (window // max(1, self._row_bytes)).bit_length() - 1)
        self._windows = -(-info.shape[0] // self._rows_per)
        self._keep = max(keep // (self._rows_per * self._row_bytes), AHEAD + 2)  # in windows
        self._span = 1  # the most windows one slice has needed
        self._kept: dict[int, torch.Tensor] = {}  # window index -> its rows, in index order
        self._read = 0  # windows read (and hashed) so far
        self._want = min(AHEAD, self._windows) - 1  # the last window to read before someone asks for more
        self._pending = False  # a read is under way on the thread
        self._done = False  # finished: nothing is kept any more
        self._patient = True  # reads wait for views that have not started too
        self._error: BaseException | None = None
        self._sha = hashlib.sha256()
        self._hashed: list[Future[None]] = []  # each window's hash, on a thread of its own beside the reads
        self._marks: dict[int, int] = {}  # open view -> the first row it may still ask for (-1: not started)
        self._changed = threading.Condition()
        self.rereads = 0
        """Row ranges a view read again from the file (rows let go before it started on them)."""
        self.most_kept = 0
        """The most windows held at once (at most `keep_windows`)."""
        with self._changed:
            self._schedule()

    @property
    def info(self) -> TensorInfo:
        return self._info

    @property
    def keep_windows(self) -> int:
        """Windows kept at most (`KEEP`, or more where one slice spans more)."""
        return max(self._keep, self._span + AHEAD)

    def view(self) -> RowView:
        """A new consumer of the rows (open until `RowView.close`, which lets its windows go)."""
        view = RowView(self)
        with self._changed:
            self._marks[id(view)] = -1
        return view

    def finish(self) -> str:
        """The sha256 of the tensor's stored bytes, reading (without keeping) what was not read yet."""
        with self._changed:
            self._done = True
            self._drop()
            self._want = self._windows - 1
            self._schedule()
            self._wait_for(self._windows - 1)
        for hashed in self._hashed:
            hashed.result()
        return self._sha.hexdigest()

    def _rows(self, view: RowView, start: int, stop: int) -> torch.Tensor | None:
        """Rows start..stop-1 for `view` from the windows, or None when some of them were let go already."""
        import torch

        first, last = start // self._rows_per, (stop - 1) // self._rows_per
        with self._changed:
            self._marks[id(view)] = start
            self._span = max(self._span, last - first + 1)
            self._drop()
            self._want = max(self._want, min(self._windows - 1, last + AHEAD))
            self._schedule()
            self._wait_for(last)
            parts = [self._kept.get(j) for j in range(first, last + 1)]
            if any(p is None for p in parts):
                self.rereads += 1
                return None
        base = first * self._rows_per
        whole = parts[0] if len(parts) == 1 else torch.cat(parts)  # type: ignore[arg-type]
        return whole[start - base : stop - base]  # type: ignore[index]

    def _close(self, view: RowView) -> None:
        with self._changed:
            self._marks.pop(id(view), None)
            self._drop()
            self._schedule()

    def _wait_for(self, index: int) -> None:
        """Until window `index` is read (under the lock); raises what the read raised. Held up `STALL` seconds by
        views that have not started, the reads stop waiting for them."""
        while self._read <= index and self._error is None:
            if not self._changed.wait(timeout=STALL) and not self._pending and -1 in self._marks.values():
                self._patient = False
                self._schedule()
        if self._error is not None:
            raise self._error

    def _holding_marks(self) -> list[int]:
        """The first rows the open views may still ask for, of those the reads wait for (under the lock)."""
        return [max(mark, 0) for mark in self._marks.values() if mark >= 0 or self._patient]

    def _schedule(self) -> None:
        """Start the next read on the thread when one is wanted and none is under way (under the lock)."""
        limit = self._want
        marks = self._holding_marks()
        if marks and not self._done:  # no further than `keep_windows` ahead of the slowest view
            limit = min(limit, min(marks) // self._rows_per + self.keep_windows - 1)
        if not self._pending and self._error is None and self._read <= limit:
            self._pending = True
            _reader().submit(self._read_next)

    def _read_next(self) -> None:
        """Read and hash the next window (on the thread; windows are read one at a time, in order)."""
        index = self._read
        rows, error = None, None
        try:
            rows = self._read_window(index)
        except BaseException as e:  # raised in whoever waits
            error = e
        with self._changed:
            self._pending = False
            if error is not None:
                self._error = error
            else:
                self._read += 1
                if not self._done:
                    self._kept[index] = rows  # type: ignore[assignment]
                    self._drop()
                    self.most_kept = max(self.most_kept, len(self._kept))
                self._schedule()
            self._changed.notify_all()

    def _read_window(self, index: int) -> torch.Tensor:
        info = self._info
        lo = index * self._rows_per
        hi = min(info.shape[0], lo + self._rows_per)
        part = TensorInfo(info.name, info.dtype, (hi - lo, info.shape[1]),
                          info.start + lo * self._row_bytes, info.start + hi * self._row_bytes)
        raw = None
        if self._fd is not None:
            with stage("read tensors (O_DIRECT, windows)", part.nbytes):
                raw = read_direct(self._fd, part.start, part.nbytes)
        if raw is None:
            raw = read_bytes(self._file, part)
        self._hashed.append(_hasher().submit(self._hash, raw))  # in order: one thread, windows read in order
        return tensor_from_bytes(raw, part)

    def _hash(self, raw: memoryview | bytearray) -> None:
        with stage("sha256 read tensors (windows)", len(raw)):
            self._sha.update(raw)

    def _drop(self) -> None:
        """Let go of windows below every open view's mark, then the oldest while more than `KEEP` are kept
        (under the lock); all of them once finished."""
        if self._done:
            self._kept.clear()
            return
        low = min(self._holding_marks(), default=0)
        for index in list(self._kept):
            if (index + 1) * self._rows_per <= low:
                del self._kept[index]
        while len(self._kept) > self.keep_windows:  # what a view that has not started would ask for first
            del self._kept[next(iter(self._kept))]


@functools.lru_cache(maxsize=1)
def _reader() -> ThreadPoolExecutor:
    """The thread that reads windows (one window of one tensor at a time: they come from one disk)."""
    return ThreadPoolExecutor(1, thread_name_prefix="marlin-convert-windows")


@functools.lru_cache(maxsize=1)
def _hasher() -> ThreadPoolExecutor:
    """The thread that hashes windows as they are read, in the order they were read."""
    return ThreadPoolExecutor(1, thread_name_prefix="marlin-convert-windows-sha")


class RowView(StoredRows):
    """One consumer of a `RowWindows`: `rows[a:b]` in increasing order of `a`, as `StoredRows` offers them."""

    def __init__(self, windows: RowWindows):
        super().__init__(windows._file, windows.info)
        self._windows = windows

    def _rows(self, start: int, stop: int) -> torch.Tensor:
        got = None if stop == start else self._windows._rows(self, start, stop)
        return got if got is not None else super()._rows(start, stop)

    def close(self) -> None:
        """Done with the rows: windows kept for this view alone are let go."""
        self._windows._close(self)
