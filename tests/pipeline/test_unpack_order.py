"""unpack writes a shard in file order (front to back, past the page cache where it can) when that keeps few
restored tensors in hand, else each layer's tensors together at their offsets; both give the source's bytes."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from marlin_convert import pack_checkpoint, unpack_checkpoint
from marlin_convert.checkpoint import OutEntry
from marlin_convert.pipeline import unpack as unpack_module
from marlin_convert.pipeline.plan import CopyTensor, LayerTensor
from marlin_convert.tensor_spec import TensorSpec
from tests._support.checkpoints import make_gptq_checkpoint


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("order", ["file", "layer-grouped"])
@pytest.mark.parametrize("act_order", [False, True])
def test_both_write_orders_restore_the_source_byte_for_byte(tmp_path, monkeypatch, order, act_order):
    make_gptq_checkpoint(tmp_path / "src", seed=11, act_order=act_order, sym=not act_order, shards=2)
    pack_checkpoint(tmp_path / "src", tmp_path / "out", device="cpu")
    chosen = []
    real = unpack_module._restore_entries

    def spy(names, source_tensors, member_of, plans, budget):
        entries = real(names, source_tensors, member_of, plans, 0 if order == "layer-grouped" else budget)
        chosen.append([e.name for e in entries] == names)
        return entries

    monkeypatch.setattr(unpack_module, "_restore_entries", spy)
    unpack_checkpoint(tmp_path / "out", tmp_path / "back")
    assert _tree(tmp_path / "back") == _tree(tmp_path / "src")
    # the toy shards interleave layers (a layer's scales after other layers' words): a budget of 0 must regroup
    assert chosen and all(chosen) == (order == "file") and len(chosen) == 2


def _e(name: str, nbytes: int, prefix: str | None) -> OutEntry:
    return OutEntry(name, TensorSpec("U8", (nbytes,)), LayerTensor(prefix, name) if prefix else CopyTensor(name))


def test_held_in_order_counts_restored_tensors_not_yet_written():
    # layer a: 100 + 10 bytes; layer b: 200 + 20; a copied tensor in between counts for nothing
    entries = [_e("a.w", 100, "a"), _e("emb", 999, None), _e("b.w", 200, "b"), _e("a.s", 10, "a"), _e("b.s", 20, "b")]
    # at b.w: a.s (10) still held, b restored whole (220) -> 230
    assert unpack_module._held_in_order(entries) == 230
    grouped = [_e("a.w", 100, "a"), _e("a.s", 10, "a"), _e("b.w", 200, "b"), _e("b.s", 20, "b")]
    assert unpack_module._held_in_order(grouped) == 220
    assert unpack_module._held_in_order([_e("emb", 5, None)]) == 0
