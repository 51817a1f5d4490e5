"""Issue 15 (throughput): what changed in how pack, verify and unpack do their work keeps what they prove.

unpack hashes whole restored files and names the tensor when one differs; verify proves bit-equal dequantized
weights from the record's fields (`same_dequant_inputs`) and gives the same report for any number of jobs;
streamed blocks are hashed on a thread of their own; `--debug` prints where the time went.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from marlin_convert import pack_checkpoint, verify_checkpoint
from marlin_convert.checkpoint.hashed import BlocksAhead
from marlin_convert.formats import DenseCodes, QuantizedLinear
from marlin_convert.pipeline._compare import same_dequant_inputs
from tests._support.checkpoints import make_gptq_checkpoint

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "producers" / "gptqmodel_sym"


def _flip_tensor_bit(path: Path, name: str, byte: int = 5) -> None:
    """Flip one bit inside tensor `name`'s data in a safetensors file (header parsed here, by hand)."""
    data = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    begin, _ = json.loads(data[8 : 8 + length])[name]["data_offsets"]
    data[8 + length + begin + byte] ^= 0x04
    path.write_bytes(bytes(data))


def test_unpack_names_the_tensor_whose_restored_bytes_differ(cli, tmp_path):
    """A flipped bit in a Marlin `B` restores a different qweight: the restored shard's whole-file sha256 differs,
    and unpack names the tensor (exit 1) and writes nothing."""
    truth = make_gptq_checkpoint(tmp_path / "src", seed=3)
    pack_checkpoint(tmp_path / "src", tmp_path / "out", device="cpu")
    prefix = sorted(truth)[0]
    _flip_tensor_bit(tmp_path / "out" / "model.safetensors", f"{prefix}.B")
    res = cli("unpack", tmp_path / "out", "-o", tmp_path / "back")
    assert res.code == 1, res.err
    assert f"{prefix}.qweight" in res.err and "restored bytes differ" in res.err, res.err
    assert not (tmp_path / "back").exists()


def test_verify_report_is_the_same_for_any_jobs(tmp_path):
    make_gptq_checkpoint(tmp_path / "src", seed=4, sym=False, act_order=True, shards=2)
    pack_checkpoint(tmp_path / "src", tmp_path / "out", device="cpu")
    reports = [verify_checkpoint(tmp_path / "out", src, device="cpu", jobs=jobs)
               for src in (tmp_path / "src", None) for jobs in (1, 3)]
    assert all(r.ok for r in reports)
    assert reports[0].checks == reports[1].checks and reports[2].checks == reports[3].checks


def _record(**changes: object) -> QuantizedLinear:
    gen = torch.Generator().manual_seed(7)
    n, k, gs = 64, 256, 128
    fields = dict(codes=DenseCodes(torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=gen)),
                  scales=torch.rand((k // gs, n), generator=gen).to(torch.float16), zeros=None, shift=None,
                  g_idx=None, group_size=gs)
    fields.update(changes)
    return QuantizedLinear(**fields)  # type: ignore[arg-type]


def test_same_dequant_inputs_reads_the_fields_as_dequantize_does():
    base = _record()
    assert same_dequant_inputs(base, _record())
    # None means 8 for zero points and k // group_size for g_idx, as `dequantize` reads them
    assert same_dequant_inputs(base, _record(zeros=torch.full((2, 64), 8, dtype=torch.uint8)))
    assert same_dequant_inputs(base, _record(g_idx=(torch.arange(256) // 128).to(torch.int32)))
    scales = base.scales.clone()
    scales[1, 3] = -scales[1, 3]
    assert not same_dequant_inputs(base, _record(scales=scales))
    zeros = torch.full((2, 64), 8, dtype=torch.uint8)
    zeros[0, 0] = 7
    assert not same_dequant_inputs(base, _record(zeros=zeros))
    g_idx = (torch.arange(256) // 128).to(torch.int32)
    g_idx[0] = 1
    assert not same_dequant_inputs(base, _record(g_idx=g_idx))
    assert not same_dequant_inputs(base, _record(shift=torch.zeros((2, 64), dtype=torch.float16)))
    assert not same_dequant_inputs(base, _record(scales=base.scales.to(torch.bfloat16)))


def test_blocks_ahead_hand_out_every_block_in_order_and_raise_the_makers_error():
    gen = torch.Generator().manual_seed(1)
    blocks = [torch.randint(-2**31, 2**31 - 1, (r, 32), dtype=torch.int32, generator=gen) for r in (5, 7, 1, 9)]
    got = list(BlocksAhead(iter(blocks)))
    assert all(torch.equal(a, b) for a, b in zip(got, blocks)) and len(got) == len(blocks)

    def broken():
        yield blocks[0]
        raise ValueError("kernel failed")

    with pytest.raises(ValueError, match="kernel failed"):
        list(BlocksAhead(broken()))


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_prints_time_per_stage_on_stderr(tmp_path, how):
    exe = str(Path(sys.executable).with_name("marlin-convert"))
    env = {**os.environ, "MARLIN_CONVERT_DEBUG": "1"} if how == "env" else {k: v for k, v in os.environ.items()
                                                                            if k != "MARLIN_CONVERT_DEBUG"}
    debug = ["--debug"] if how == "flag" else []
    res = subprocess.run([exe, *debug, "pack", str(TINY), "-o", str(tmp_path / "out"), "--device", "cpu"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "time per stage" in res.stderr and "sha256 " in res.stderr and "write" in res.stderr, res.stderr
    quiet = subprocess.run([exe, "verify", str(TINY), str(tmp_path / "out")], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "MARLIN_CONVERT_DEBUG"})
    assert quiet.returncode == 0 and "time per stage" not in quiet.stderr, quiet.stderr


def test_debug_prints_no_empty_table_after_a_usage_error():
    """A usage error times nothing: `--debug` then adds no stage table under the error."""
    exe = str(Path(sys.executable).with_name("marlin-convert"))
    res = subprocess.run([exe, "--debug", "pack"], capture_output=True, text=True)
    assert res.returncode == 2 and "Missing argument" in res.stderr, res.stderr
    assert "time per stage" not in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_cpu_pack_writes_its_shards_past_the_page_cache(tmp_path, monkeypatch):
    """pack asks for O_DIRECT when the layout kernel runs on the CPU (the page-cache copies cost CPU there)."""
    from marlin_convert.pipeline import pack as pack_module

    asked = []
    real = pack_module.write_shards

    def spy(*args, **kwargs):
        asked.append(kwargs.get("direct"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pack_module, "write_shards", spy)
    pack_checkpoint(TINY, tmp_path / "out", device="cpu")
    assert asked == [True]


def test_closing_the_layer_stream_stops_every_block_maker():
    """Makers start as soon as a layer is made (read ahead too); an error that ends the command closes the
    stream, which must leave no maker running a kernel (a daemon thread in C code at exit can abort Python)."""
    import threading
    import time

    from marlin_convert.pipeline._stream import LayerStream

    def slow_blocks():
        for i in range(1000):
            time.sleep(0.005)
            yield torch.full((4, 4), i, dtype=torch.int32)

    made = []

    def make(prefix):
        blocks = BlocksAhead(slow_blocks())
        made.append(blocks)
        return {"B": blocks}

    with LayerStream(make, ["a", "b", "c"], jobs=3) as stream:
        first = iter(stream.take("a", "B"))
        next(first)  # the writer has started on layer a; b and c are read ahead, their makers running
    assert len(made) == 3
    assert not [t for t in threading.enumerate() if t.name == "marlin-convert-blocks"]


def test_pack_reads_words_hashed_ahead_a_row_range_at_a_time(tmp_path, monkeypatch):
    """Words whose sha256 the pass over the source has taken are not read whole: the kernel reads them a row range
    at a time (`StoredRows`; here from any size, in use from `ROWS_ON_DEMAND_MIN`). Every output file is the same
    as from whole reads, verify passes, and an act-order layer's words (gathered from anywhere) are still read
    whole."""
    from concurrent.futures import Future

    from marlin_convert.pipeline import _layers

    from marlin_convert.checkpoint import Checkpoint, StoredRows
    from marlin_convert.pipeline._digests_ahead import DigestsAhead
    from tests._support.files import tree_hashes

    for act_order in (False, True):
        make_gptq_checkpoint(tmp_path / f"src{act_order}", seed=21, act_order=act_order, shards=2)
    with monkeypatch.context() as m:  # no pass: every tensor read whole, hashed from that read
        m.setattr(Checkpoint, "is_cached", lambda self, name: False)
        pack_checkpoint(tmp_path / "srcFalse", tmp_path / "whole", device="cpu")

    def taken_by_the_pass(self: DigestsAhead, name: str) -> Future[str]:  # as if the pass had got there first
        done: Future[str] = Future()
        done.set_result(self._ckpt.hash_stored(name))
        return done

    sliced: list[tuple[str, int]] = []
    row_range = StoredRows.__getitem__
    monkeypatch.setattr(DigestsAhead, "claim", taken_by_the_pass)
    monkeypatch.setattr(_layers, "ROWS_ON_DEMAND_MIN", 0)
    monkeypatch.setattr(StoredRows, "__getitem__", lambda self, rows: sliced.append((self._info.name, rows.start)) or row_range(self, rows))
    pack_checkpoint(tmp_path / "srcFalse", tmp_path / "rows", device="cpu")
    assert {name for name, _ in sliced} == {n for n in json.loads((tmp_path / "srcFalse" / "model.safetensors.index.json")
                                            .read_text())["weight_map"] if n.endswith(".qweight")}
    assert tree_hashes(tmp_path / "rows") == tree_hashes(tmp_path / "whole")
    assert verify_checkpoint(tmp_path / "rows", tmp_path / "srcFalse", device="cpu").ok

    sliced.clear()
    pack_checkpoint(tmp_path / "srcTrue", tmp_path / "act_order", device="cpu")
    assert sliced == [] and verify_checkpoint(tmp_path / "act_order", tmp_path / "srcTrue", device="cpu").ok
    monkeypatch.setattr(_layers, "ROWS_ON_DEMAND_MIN", 1 << 20)  # these words are smaller: read whole
    pack_checkpoint(tmp_path / "srcFalse", tmp_path / "small", device="cpu")
    assert sliced == [] and tree_hashes(tmp_path / "small") == tree_hashes(tmp_path / "whole")


def test_words_the_pass_has_not_reached_are_hashed_from_the_page_cache_and_read_by_row_ranges(tmp_path, monkeypatch):
    """Words in the page cache that the pass over the source has not hashed yet (the command claims them first)
    are not read whole either: pack and verify hash them from the page cache themselves and read them a row range
    at a time. pack's files (its manifest's sha256 included) are those of whole reads; verify passes, and still
    fails a layer whose source words have a flipped bit."""
    import shutil

    from marlin_convert.checkpoint import Checkpoint, StoredRows
    from marlin_convert.pipeline import _layers
    from marlin_convert.pipeline._digests_ahead import DigestsAhead
    from tests._support.files import tree_hashes

    make_gptq_checkpoint(tmp_path / "src", seed=23, shards=2)
    with monkeypatch.context() as m:  # no pass, nothing cached: every tensor read whole, hashed from that read
        m.setattr(Checkpoint, "is_cached", lambda self, name: False)
        pack_checkpoint(tmp_path / "src", tmp_path / "whole", device="cpu")

    sliced: list[str] = []
    row_range = StoredRows.__getitem__
    monkeypatch.setattr(DigestsAhead, "claim", lambda self, name: None)  # the command always gets there first
    monkeypatch.setattr(Checkpoint, "is_cached", lambda self, name: True)
    monkeypatch.setattr(_layers, "ROWS_ON_DEMAND_MIN", 0)
    monkeypatch.setattr(StoredRows, "__getitem__", lambda self, rows: sliced.append(self._info.name) or row_range(self, rows))
    pack_checkpoint(tmp_path / "src", tmp_path / "rows", device="cpu")
    qweights = {n for n in json.loads((tmp_path / "src" / "model.safetensors.index.json").read_text())["weight_map"]
                if n.endswith(".qweight")}
    assert set(sliced) == qweights
    assert tree_hashes(tmp_path / "rows") == tree_hashes(tmp_path / "whole")

    sliced.clear()
    assert verify_checkpoint(tmp_path / "rows", tmp_path / "src", device="cpu").ok
    assert set(sliced) == qweights
    shutil.copytree(tmp_path / "src", tmp_path / "bad")
    layer = sorted(qweights)[0]
    shard = json.loads((tmp_path / "src" / "model.safetensors.index.json").read_text())["weight_map"][layer]
    _flip_tensor_bit(tmp_path / "bad" / shard, layer, byte=555)
    report = verify_checkpoint(tmp_path / "rows", tmp_path / "bad", device="cpu")
    prefix = layer.removesuffix(".qweight")
    assert [f["name"] for f in report.failures] == [prefix], report.failures
    assert f"{layer}: source bytes differ from the manifest" in report.failures[0]["detail"], report.failures


def test_verify_compares_source_words_read_by_row_ranges_with_the_file(tmp_path, monkeypatch):
    """verify SRC OUT reads source words that the pass has hashed a row range at a time (`StoredRows`) for its
    repack and its comparison with the unpacked bytes. Those reads are of the file itself: with a pass that says
    the recorded sha256 (as if the file changed after it was hashed), a flipped bit in a source `qweight` still
    fails the layer, by both comparisons, and a clean source passes."""
    import shutil
    from concurrent.futures import Future

    from marlin_convert.checkpoint import StoredRows
    from marlin_convert.pipeline import _layers
    from marlin_convert.pipeline._digests_ahead import DigestsAhead

    make_gptq_checkpoint(tmp_path / "src", seed=22)
    pack_checkpoint(tmp_path / "src", tmp_path / "out", device="cpu")
    recorded = json.loads((tmp_path / "out" / "marlin_convert_manifest.json").read_text())["source_tensors"]

    def recorded_digest(self: DigestsAhead, name: str) -> Future[str]:
        done: Future[str] = Future()
        done.set_result(recorded[name]["sha256"] if name in recorded else self._ckpt.hash_stored(name))
        return done

    sliced: list[str] = []
    row_range = StoredRows.__getitem__
    monkeypatch.setattr(DigestsAhead, "claim", recorded_digest)
    monkeypatch.setattr(_layers, "ROWS_ON_DEMAND_MIN", 0)
    monkeypatch.setattr(StoredRows, "__getitem__", lambda self, rows: sliced.append(self._info.name) or row_range(self, rows))
    assert verify_checkpoint(tmp_path / "out", tmp_path / "src", device="cpu").ok
    assert any(name.endswith(".qweight") for name in sliced)

    shutil.copytree(tmp_path / "src", tmp_path / "bad")
    layer = sorted(n for n in recorded if n.endswith(".qweight"))[0]
    _flip_tensor_bit(tmp_path / "bad" / "model.safetensors", layer, byte=777)
    report = verify_checkpoint(tmp_path / "out", tmp_path / "bad", device="cpu")
    prefix = layer.removesuffix(".qweight")
    assert [f["name"] for f in report.failures] == [prefix], report.failures
    detail = report.failures[0]["detail"]
    assert f"{layer}: unpacking {prefix}.* does not give the source bytes" in detail, detail
    assert f"{prefix}.B: differs from a fresh pack of the source" in detail, detail


def test_the_pass_ahead_hashes_every_shard_and_gives_its_buffers_back_once_per_thread(tmp_path, monkeypatch):
    """The pass over a checkpoint's tensors hashes every shard's tensors (the digests of hashlib over the file's
    bytes), with each of its workers going from shard to shard; a worker gives its thread's hashing buffer back
    once, when no shard is left (not after each one: fresh pages are dear), so the buffers are not held to the
    command's end. (Two workers may run on one pool thread, one after the other, when the first finds no shard
    left for the second to wait on: then that thread gives back twice, the second time nothing.)"""
    import hashlib
    import threading

    from marlin_convert.checkpoint import Checkpoint, open_checkpoint
    from marlin_convert.pipeline import _digests_ahead
    from marlin_convert.pipeline._digests_ahead import DigestsAhead

    make_gptq_checkpoint(tmp_path / "src", seed=29, shards=3)
    released: list[str] = []
    monkeypatch.setattr(Checkpoint, "is_cached", lambda self, name: True)
    monkeypatch.setattr(_digests_ahead, "release_buffer", lambda: released.append(threading.current_thread().name))
    with open_checkpoint(tmp_path / "src") as ckpt:
        names = [n for n in ckpt.location if n.endswith((".qweight", ".scales"))]
        with DigestsAhead(ckpt, names, workers=2) as ahead:
            ahead._pool.shutdown(wait=True)  # the pass is over: every tensor is its
            futures = {name: ahead.claim(name) for name in names}
        for name, future in futures.items():
            shard, info = ckpt.location[name]
            with open(tmp_path / "src" / shard, "rb") as f:
                f.seek(info.start)
                assert future is not None and future.result() == hashlib.sha256(f.read(info.nbytes)).hexdigest(), name
    assert len({shard for shard, _ in (ckpt.location[n] for n in names)}) == 3
    assert len(released) == 2, released  # one a worker (2), not one a shard (3)
