"""verify SRC OUT with nothing in the page cache: each big source `qweight` is read once, window by window, for both
of its consumers (`RowWindows`: the repack compared with `B`, and the unpacked words compared with it), and each big
`B` is compared and unpacked while it is read. Here every tensor counts as big and uncached, and windows are a few
rows. The report is the one the whole reads give (jobs=1), and a flipped bit in a source `qweight` or in a `B`
still fails its layer, naming the tensor."""
from __future__ import annotations

import json
import shutil
import struct

import pytest

from marlin_convert import pack_checkpoint, verify_checkpoint
from marlin_convert.checkpoint import Checkpoint, row_windows, source
from marlin_convert.pipeline import _layer_checks, _layers
from tests._support.checkpoints import make_gptq_checkpoint


@pytest.fixture
def cold(monkeypatch):
    """Every tensor big and out of the page cache; the names read by windows."""
    windowed: list[str] = []
    make = Checkpoint.row_windows
    monkeypatch.setattr(Checkpoint, "row_windows", lambda self, name: windowed.append(name) or make(self, name))
    monkeypatch.setattr(Checkpoint, "is_cached", lambda self, name: False)
    monkeypatch.setattr(source, "in_page_cache", lambda fd, offset: False)
    monkeypatch.setattr(source, "DIRECT_READ_MIN", 0)
    monkeypatch.setattr(_layers, "ROWS_ON_DEMAND_MIN", 0)
    monkeypatch.setattr(_layer_checks, "ROWS_ON_DEMAND_MIN", 0)
    monkeypatch.setattr(row_windows, "WINDOW", 4096)  # 2-4 rows of these words
    monkeypatch.setattr(row_windows, "KEEP", 4 * 4096)
    return windowed


def _flip(path, name: str, byte: int) -> None:
    data = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    begin, _ = json.loads(data[8 : 8 + length])[name]["data_offsets"]
    data[8 + length + begin + byte] ^= 0x20
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("sym", [True, False])
def test_cold_source_read_once_by_windows_gives_the_whole_read_report(tmp_path, cold, sym):
    truth = make_gptq_checkpoint(tmp_path / "src", seed=41, sym=sym, shards=2)
    pack_checkpoint(tmp_path / "src", tmp_path / "out", device="cpu")
    whole = verify_checkpoint(tmp_path / "out", tmp_path / "src", device="cpu", jobs=1)
    assert whole.ok, whole.checks
    assert cold == []  # one job: no helper thread for the second consumer, read whole
    windowed = verify_checkpoint(tmp_path / "out", tmp_path / "src", device="cpu", jobs=2)
    assert sorted(cold) == sorted(f"{prefix}.qweight" for prefix in truth)
    assert windowed.checks == whole.checks


def test_cold_source_by_windows_still_fails_a_changed_qweight_or_b(tmp_path, cold):
    truth = make_gptq_checkpoint(tmp_path / "src", seed=42, sym=False)
    pack_checkpoint(tmp_path / "src", tmp_path / "out", device="cpu")
    prefix = sorted(truth)[1]
    shutil.copytree(tmp_path / "src", tmp_path / "bad")
    _flip(tmp_path / "bad" / "model.safetensors", f"{prefix}.qweight", byte=3001)
    report = verify_checkpoint(tmp_path / "out", tmp_path / "bad", device="cpu", jobs=2)
    assert f"{prefix}.qweight" in cold
    assert [f["name"] for f in report.failures] == [prefix], report.failures
    detail = report.failures[0]["detail"]
    assert detail.startswith(f"{prefix}.qweight: source bytes differ from the manifest"), detail
    assert f"{prefix}.qweight: unpacking {prefix}.* does not give the source bytes" in detail, detail
    assert f"{prefix}.B: differs from a fresh pack of the source" in detail, detail

    _flip(tmp_path / "out" / "model.safetensors", f"{prefix}.B", byte=999)
    report = verify_checkpoint(tmp_path / "out", tmp_path / "src", device="cpu", jobs=2)
    assert [f["name"] for f in report.failures] == [prefix], report.failures
    assert report.failures[0]["detail"] == f"{prefix}.B: sha256 differs from the manifest"
