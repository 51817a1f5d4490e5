"""`RowWindows`: a stored 2-D tensor read once, window by window, for two views that slice it by rows on two
threads. Each slice is the stored rows (against the official reader), the sha256 is that of the stored bytes
(against hashlib over the file's bytes), no more than `keep_windows` windows are ever held, and a view that
stops early or never starts holds nothing up."""
from __future__ import annotations

import hashlib
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

from marlin_convert.checkpoint import RowWindows
from marlin_convert.checkpoint.safetensors_file import TensorInfo, read_header
from marlin_convert.errors import CheckpointError

ROWS, COLS = 301, 16  # 64-byte rows; a 256-byte window is 4 rows, the last window 1 row


@pytest.fixture
def stored(tmp_path):
    gen = torch.Generator().manual_seed(23)
    tensors = {
        "a.bias": torch.randn(5, generator=gen).to(torch.float16),  # before the words: they do not start at 0
        "a.qweight": torch.randint(-2**31, 2**31 - 1, (ROWS, COLS), generator=gen, dtype=torch.int64).to(torch.int32),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    info = read_header(path).tensors["a.qweight"]
    stored_bytes = path.read_bytes()[info.start : info.end]
    return path, info, load_file(str(path))["a.qweight"], hashlib.sha256(stored_bytes).hexdigest()


def _slices(step: int, overlap: int = 0) -> list[slice]:
    return [slice(max(0, a - overlap), min(ROWS, a + step)) for a in range(0, ROWS, step)]


def _consume(view, slices, official, bad: list[str], stop_after: int | None = None) -> None:
    try:
        for i, rows in enumerate(slices):
            if stop_after is not None and i == stop_after:
                return
            got = view[rows]
            if got.numpy().tobytes() != official[rows].numpy().tobytes():
                bad.append(f"{rows}")
    except BaseException as e:  # reported by the test
        bad.append(repr(e))
    finally:
        view.close()


def _run_views(windows, plans, official) -> list[str]:
    bad: list[str] = []
    views = [windows.view() for _ in plans]  # both before either reads, as verify makes them
    threads = [threading.Thread(target=_consume, args=(view, slices, official, bad, stop), daemon=True)
               for view, (slices, stop) in zip(views, plans)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive(), "a view hung"
    return bad


@pytest.mark.parametrize("steps", [(5, 7), (1, 32), (13, 13), (64, 3)])
def test_two_views_on_two_threads_get_the_stored_rows_and_sha256(stored, steps):
    path, info, official, sha = stored
    with open(path, "rb") as f:
        windows = RowWindows(f, info, window=256, keep=4 * 256)
        bad = _run_views(windows, [(_slices(steps[0]), None), (_slices(steps[1], overlap=2), None)], official)
        assert bad == []
        assert windows.finish() == sha
    assert windows.rereads == 0
    assert 1 <= windows.most_kept <= windows.keep_windows


def test_a_view_that_stops_early_does_not_hold_the_other_up(stored):
    path, info, official, sha = stored
    with open(path, "rb") as f:
        windows = RowWindows(f, info, window=256, keep=4 * 256)
        bad = _run_views(windows, [(_slices(3), 2), (_slices(5), None)], official)
        assert bad == []
        assert windows.finish() == sha


def test_a_view_that_starts_after_the_other_is_done_reads_what_was_let_go(stored, monkeypatch):
    """On one thread (what verify never does): the first view is held up `STALL` seconds by the second, which has
    not started, then runs to the end; the second then reads the rows that were let go from the file again.
    Both get the stored rows."""
    from marlin_convert.checkpoint import row_windows

    monkeypatch.setattr(row_windows, "STALL", 0.05)
    path, info, official, sha = stored
    with open(path, "rb") as f:
        windows = RowWindows(f, info, window=256, keep=4 * 256)
        first, second = windows.view(), windows.view()
        bad: list[str] = []
        _consume(first, _slices(9), official, bad)
        _consume(second, _slices(9), official, bad)
        assert bad == []
        assert windows.rereads > 0 and windows.most_kept <= windows.keep_windows
        assert windows.finish() == sha


def test_finish_alone_hashes_every_stored_byte(stored):
    path, info, _, sha = stored
    with open(path, "rb") as f:
        assert RowWindows(f, info, window=256).finish() == sha
        assert RowWindows(f, info, window=1 << 20).finish() == sha  # one window


def test_a_read_that_fails_is_raised_in_the_view(stored):
    path, info, _, _ = stored
    past_the_end = TensorInfo(info.name, info.dtype, (ROWS * 4, COLS), info.start, info.start + 4 * info.nbytes)
    with open(path, "rb") as f:
        view = RowWindows(f, past_the_end, window=256).view()
        with pytest.raises(CheckpointError, match="truncated"):
            view[ROWS * 3 : ROWS * 4]
