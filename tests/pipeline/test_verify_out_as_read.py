"""verify OUT with each `B` unpacked and hashed while it is read (a big `B` past the page cache; here every one):
a good output passes, and a `B` whose bytes differ fails by its sha256 alone (what its unpack gave proves
nothing more), listed first with any other tensor of the layer that differs."""
from __future__ import annotations

import pytest

from marlin_convert import pack_checkpoint, verify_checkpoint
from marlin_convert.checkpoint import direct_file, read_header, source
from marlin_convert.checkpoint.direct_file import ALIGN
from marlin_convert.pipeline import _layer_checks
from tests._support.checkpoints import make_gptq_checkpoint


@pytest.fixture
def every_b_as_read(monkeypatch):
    """Every tensor read as if it were not cached, every `B` however small taken as it is read; the calls seen."""
    calls = []
    monkeypatch.setattr(direct_file, "HASHED_READ_STEP", ALIGN)
    monkeypatch.setattr(_layer_checks, "ROWS_ON_DEMAND_MIN", 0)
    monkeypatch.setattr(source, "DIRECT_READ_MIN", 0)
    monkeypatch.setattr(source, "in_page_cache", lambda fd, offset: False)
    monkeypatch.setattr(source, "read_direct_as_used",
                        lambda *a, **k: calls.append(a) or direct_file.read_direct_as_used(*a, **k))
    return calls


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("act_order", [False, True])
def test_verify_out_with_b_read_as_used(tmp_path, every_b_as_read, act_order):
    make_gptq_checkpoint(tmp_path / "src", seed=33, sym=False, act_order=act_order, shards=1)
    pack_checkpoint(tmp_path / "src", tmp_path / "out", device="cpu")
    every_b_as_read.clear()
    report = verify_checkpoint(tmp_path / "out", device="cpu")
    assert report.ok, report.checks
    if not every_b_as_read:
        pytest.skip("this filesystem refuses O_DIRECT: nothing was read as used")

    shard = next((tmp_path / "out").glob("*.safetensors"))
    infos = read_header(shard).tensors
    layer = sorted(name[: -len(".B")] for name in infos if name.endswith(".B"))[0]
    b, s = infos[f"{layer}.B"], infos[f"{layer}.s"]
    _flip(shard, b.start + (b.end - b.start) // 2)
    rows = {row["name"]: row for row in verify_checkpoint(tmp_path / "out", device="cpu").checks}
    assert rows[layer]["status"] == "FAIL" and rows[layer]["detail"] == f"{layer}.B: sha256 differs from the manifest"
    _flip(shard, s.start + 1)
    rows = {row["name"]: row for row in verify_checkpoint(tmp_path / "out", device="cpu").checks}
    assert rows[layer]["detail"] == f"{layer}.B: sha256 differs from the manifest; {layer}.s: sha256 differs from the manifest"
