"""`SequentialFile`: the bytes on disk are exactly the bytes written, whether O_DIRECT is used, refused when
opening, refused at a write, or turned off; the file is cut back to its length after the padded last chunk."""
from __future__ import annotations

import errno
import hashlib
import os
import random

import pytest

from marlin_convert.checkpoint import direct_file
from marlin_convert.checkpoint.direct_file import ALIGN, CHUNK, SequentialFile

O_DIRECT = getattr(os, "O_DIRECT", 0)


def _pieces(seed: int) -> list[bytes]:
    """Writes of awkward sizes: empty, one byte, unaligned, exactly a chunk, more than a chunk."""
    rng = random.Random(seed)
    sizes = [0, 1, 7, ALIGN - 1, ALIGN, ALIGN + 3, CHUNK - 5, CHUNK, 3, CHUNK + ALIGN + 1, 0, 12345]
    return [rng.randbytes(n) for n in sizes]


def _write(path, pieces, **kw) -> SequentialFile:
    f = SequentialFile(path, **kw)
    for p in pieces:
        f.write(p)
    f.finish()
    f.fsync()
    f.close()
    return f


def _direct_supported(tmp_path) -> bool:
    if not O_DIRECT:
        return False
    try:
        fd = os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT | O_DIRECT)
    except OSError:
        return False
    os.close(fd)
    return True


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_bytes_on_disk_are_the_bytes_written(tmp_path, direct, seed):
    pieces = _pieces(seed)
    f = _write(tmp_path / "f", pieces, direct=direct)
    assert (tmp_path / "f").read_bytes() == b"".join(pieces)
    if not direct:
        assert not f.direct


def test_direct_io_is_used_where_the_filesystem_allows_it(tmp_path):
    if not _direct_supported(tmp_path):
        pytest.skip("this filesystem refuses O_DIRECT")
    pieces = _pieces(2)
    f = _write(tmp_path / "f", pieces)
    assert f.direct
    assert (tmp_path / "f").read_bytes() == b"".join(pieces)


def test_a_file_shorter_than_the_alignment(tmp_path):
    _write(tmp_path / "f", [b"abc"], direct=True)
    assert (tmp_path / "f").read_bytes() == b"abc"
    _write(tmp_path / "g", [], direct=True)
    assert (tmp_path / "g").read_bytes() == b""


def test_refused_when_opening_falls_back_to_the_page_cache(tmp_path, monkeypatch):
    real_open = os.open

    def no_direct(path, flags, *a):
        if O_DIRECT and flags & O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *a)

    monkeypatch.setattr(direct_file.os, "open", no_direct)
    pieces = _pieces(3)
    f = _write(tmp_path / "f", pieces, direct=True)
    assert not f.direct
    assert (tmp_path / "f").read_bytes() == b"".join(pieces)


@pytest.mark.parametrize("refuse_after", [0, 1, 2])
def test_refused_at_a_write_goes_on_through_the_page_cache(tmp_path, monkeypatch, refuse_after):
    """EINVAL from the first, second or third O_DIRECT write (a filesystem that opens but cannot do it):
    the chunk and everything after it are written through the page cache, at the same offsets."""
    if not _direct_supported(tmp_path):
        pytest.skip("this filesystem refuses O_DIRECT")
    real_pwrite = os.pwrite
    calls = []

    def flaky(fd, data, offset):
        import fcntl

        if fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT:
            calls.append(offset)
            if len(calls) > refuse_after:
                raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(direct_file.os, "pwrite", flaky)
    pieces = _pieces(4)
    f = _write(tmp_path / "f", pieces, direct=True)
    assert not f.direct and len(calls) >= refuse_after + 1  # later chunks may be under way already
    assert (tmp_path / "f").read_bytes() == b"".join(pieces)


def test_a_short_direct_write_is_completed_through_the_page_cache(tmp_path, monkeypatch):
    if not _direct_supported(tmp_path):
        pytest.skip("this filesystem refuses O_DIRECT")
    real_pwrite = os.pwrite

    def short_once(fd, data, offset, state={"done": False}):
        if not state["done"] and len(data) > ALIGN:
            state["done"] = True
            return real_pwrite(fd, memoryview(data)[:ALIGN], offset)
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(direct_file.os, "pwrite", short_once)
    pieces = _pieces(5)
    _write(tmp_path / "f", pieces, direct=True)
    assert (tmp_path / "f").read_bytes() == b"".join(pieces)


def test_the_environment_turns_it_off(tmp_path, monkeypatch):
    monkeypatch.setenv("MARLIN_CONVERT_DIRECT_IO", "0")
    f = _write(tmp_path / "f", [b"x" * 10])
    assert not f.direct and (tmp_path / "f").read_bytes() == b"x" * 10


def test_other_errors_are_raised(tmp_path, monkeypatch):
    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct_file.os, "pwrite", full)
    f = SequentialFile(tmp_path / "f", direct=True)
    with pytest.raises(OSError) as e:
        f.write(b"y" * (CHUNK + 1))
        f.finish()
    assert e.value.errno == errno.ENOSPC
    f.close()


def test_direct_false_asks_for_the_page_cache(tmp_path):
    f = _write(tmp_path / "f", [b"z" * (CHUNK + 5)], direct=False)
    assert not f.direct and (tmp_path / "f").read_bytes() == b"z" * (CHUNK + 5)


@pytest.mark.parametrize("how", ["read_direct", "read_direct_hashed", "read_direct_as_used"])
@pytest.mark.parametrize("start,nbytes", [(0, 1), (1, ALIGN), (ALIGN - 3, 5), (8, 3 * ALIGN + 17), (12345, 1 << 20),
                                          (ALIGN, 0)])
def test_direct_reads_give_the_bytes_at_any_offset(tmp_path, monkeypatch, start, nbytes, how):
    """The bytes of the file at any offset; `read_direct_hashed` and `read_direct_as_used` read in steps (a few
    alignment units here, so a tensor takes several); the first hashes them as they come: also the sha256 of
    exactly those bytes; the second hands them back at once, there once `wait(nbytes)` returns."""
    if not _direct_supported(tmp_path):
        pytest.skip("this filesystem refuses O_DIRECT")
    monkeypatch.setattr(direct_file, "HASHED_READ_STEP", 3 * ALIGN)
    data = random.Random(7).randbytes(2 * (1 << 20) + 999)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY | O_DIRECT)
    try:
        if how == "read_direct_as_used":
            view, progress = direct_file.read_direct_as_used(fd, start, nbytes, fallback=_never)
            progress.wait(nbytes)
            got = (view, None)
        else:
            got = direct_file.read_direct_hashed(fd, start, nbytes) if how == "read_direct_hashed" else (
                direct_file.read_direct(fd, start, nbytes), None)
    finally:
        os.close(fd)
    assert got is not None and got[0] is not None and bytes(got[0]) == data[start : start + nbytes]
    if how == "read_direct_hashed":
        assert got[1] == hashlib.sha256(data[start : start + nbytes]).hexdigest()


def _never(view):
    raise AssertionError("the page-cache fallback was not expected here")


def test_read_direct_as_used_hands_out_each_prefix_as_it_lands(tmp_path, monkeypatch):
    """`wait(upto)` returns once the reads have covered `upto` bytes of the tensor, not before: with the third
    read held back, the first two steps' bytes are there and waiting for more blocks until it is let go."""
    import threading

    data = random.Random(3).randbytes(10 * ALIGN)
    (tmp_path / "f").write_bytes(data)
    go, third = threading.Event(), threading.Event()
    real, calls = os.preadv, []

    def held(fd, buffers, offset):
        calls.append(offset)
        if len(calls) == 3:
            third.set()
            assert go.wait(10)
        return real(fd, buffers, offset)

    monkeypatch.setattr(direct_file, "HASHED_READ_STEP", 2 * ALIGN)
    monkeypatch.setattr(direct_file.os, "preadv", held)
    start, nbytes = 100, 8 * ALIGN
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        view, progress = direct_file.read_direct_as_used(fd, start, nbytes, fallback=_never)
        progress.wait(4 * ALIGN - start)  # the first two steps (from the aligned offset 0) cover this much
        assert bytes(view[: 4 * ALIGN - start]) == data[start : 4 * ALIGN]
        assert third.wait(10)
        waiter = threading.Thread(target=progress.wait, args=(nbytes,))
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive()  # the rest is not there while the third read is held
        go.set()
        waiter.join(10)
        assert not waiter.is_alive() and bytes(view) == data[start : start + nbytes]
    finally:
        go.set()
        os.close(fd)


@pytest.mark.parametrize("err", [errno.EINVAL, errno.EIO])
def test_read_direct_as_used_refused_goes_through_the_fallback_and_errors_reach_the_waiter(tmp_path, monkeypatch, err):
    """A read refused part-way (EINVAL) is done again by the fallback into the same buffer; any other error, and
    one from the fallback, is raised by `wait`."""
    data = random.Random(4).randbytes(6 * ALIGN)
    (tmp_path / "f").write_bytes(data)
    real, calls = os.preadv, []

    def fail_second(fd, buffers, offset):
        calls.append(offset)
        if len(calls) == 2:
            raise OSError(err, os.strerror(err))
        return real(fd, buffers, offset)

    def fallback(view):
        view[:] = data[7 : 7 + len(view)]

    monkeypatch.setattr(direct_file, "HASHED_READ_STEP", ALIGN)
    monkeypatch.setattr(direct_file.os, "preadv", fail_second)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        view, progress = direct_file.read_direct_as_used(fd, 7, 4 * ALIGN, fallback=fallback)
        if err == errno.EINVAL:
            progress.wait(4 * ALIGN)
            assert bytes(view) == data[7 : 7 + 4 * ALIGN]
        else:
            with pytest.raises(OSError, match=os.strerror(err)):
                progress.wait(4 * ALIGN)
    finally:
        os.close(fd)
    monkeypatch.setattr(direct_file.os, "preadv", real)

    def truncated(view):
        raise ValueError("file truncated while reading")

    monkeypatch.setattr(direct_file, "_read_into", lambda *a: False)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        _, progress = direct_file.read_direct_as_used(fd, 0, ALIGN, fallback=truncated)
        with pytest.raises(ValueError, match="truncated"):
            progress.wait(1)
    finally:
        os.close(fd)


def test_read_direct_refused_says_none(tmp_path, monkeypatch):
    (tmp_path / "f").write_bytes(b"x" * 10000)

    def refuse(*a, **k):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(direct_file.os, "preadv", refuse)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        assert direct_file.read_direct(fd, 5, 100) is None
    finally:
        os.close(fd)


@pytest.mark.parametrize("err", [errno.EINVAL, errno.EIO])
def test_read_direct_hashed_refused_says_none_and_other_errors_are_raised(tmp_path, monkeypatch, err):
    (tmp_path / "f").write_bytes(b"x" * 100000)
    calls = []

    def fail_second(fd, buffers, offset):
        calls.append(offset)
        if len(calls) > 1:
            raise OSError(err, os.strerror(err))
        return real(fd, buffers, offset)

    real = os.preadv
    monkeypatch.setattr(direct_file, "HASHED_READ_STEP", ALIGN)
    monkeypatch.setattr(direct_file.os, "preadv", fail_second)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        if err == errno.EINVAL:
            assert direct_file.read_direct_hashed(fd, 5, 3 * ALIGN) is None
        else:
            with pytest.raises(OSError, match=os.strerror(err)):
                direct_file.read_direct_hashed(fd, 5, 3 * ALIGN)
    finally:
        os.close(fd)


@pytest.mark.parametrize("act_order", [True, False])
def test_pack_verify_unpack_with_every_tensor_read_past_the_page_cache(tmp_path, monkeypatch, act_order):
    """Every tensor read as if it were not cached (O_DIRECT where the filesystem allows it): the same output,
    verify passes, and unpack gives the source back byte for byte (its `B` unpacked while it is read, one
    alignment unit a step: by row blocks without act-order, whole with it)."""
    from marlin_convert import pack_checkpoint, unpack_checkpoint, verify_checkpoint
    from marlin_convert.checkpoint import source
    from tests._support.checkpoints import make_gptq_checkpoint

    make_gptq_checkpoint(tmp_path / "src", seed=21, sym=False, act_order=act_order, shards=2)
    pack_checkpoint(tmp_path / "src", tmp_path / "ref", device="cpu")
    from marlin_convert.pipeline import _layers

    monkeypatch.setattr(direct_file, "HASHED_READ_STEP", ALIGN)
    monkeypatch.setattr(_layers, "ROWS_ON_DEMAND_MIN", 0)  # every B unpacked as it is read, however small
    as_used = []
    monkeypatch.setattr(source, "read_direct_as_used", lambda *a, **k: as_used.append(a) or direct_file.read_direct_as_used(*a, **k))
    monkeypatch.setattr(source, "DIRECT_READ_MIN", 0)
    monkeypatch.setattr(source, "in_page_cache", lambda fd, offset: False)
    pack_checkpoint(tmp_path / "src", tmp_path / "out", device="cpu")
    assert verify_checkpoint(tmp_path / "out", tmp_path / "src", device="cpu").ok
    unpack_checkpoint(tmp_path / "out", tmp_path / "back")
    assert as_used or not _direct_supported(tmp_path)

    def tree(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert tree(tmp_path / "out") == tree(tmp_path / "ref")
    assert tree(tmp_path / "back") == tree(tmp_path / "src")


def test_in_page_cache_is_true_for_a_file_just_written(tmp_path):
    (tmp_path / "f").write_bytes(b"y" * 100)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        assert direct_file.in_page_cache(fd, 0)
    finally:
        os.close(fd)


def test_a_cold_tensor_is_read_past_the_page_cache_even_when_its_first_page_is_cached(tmp_path):
    """The first tensor of a shard starts in the page that holds the header, which opening the checkpoint
    has just read: a probe at the tensor's first byte said "cached", and the whole file went through the page
    cache (a cold 2 GB output: 4.5 s of system time on the VM). The tensor's middle is what must decide."""
    import json

    import numpy as np

    from marlin_convert.checkpoint import open_checkpoint

    if not _direct_supported(tmp_path):
        pytest.skip("this filesystem refuses O_DIRECT")
    data = np.random.default_rng(5).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()
    header = json.dumps({"w": {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_text("{}")
    _write(tmp_path / "c" / "model.safetensors", [len(header).to_bytes(8, "little"), header, data], direct=True)
    ckpt = open_checkpoint(tmp_path / "c")
    start = ckpt.info("w").start
    fd = os.open(tmp_path / "c" / "model.safetensors", os.O_RDONLY)
    try:
        if direct_file.in_page_cache(fd, start + len(data) // 2):
            pytest.skip("the file stayed in the page cache after an O_DIRECT write")
        with ckpt:
            assert bytes(ckpt.read_raw("w")) == data
        assert not direct_file.in_page_cache(fd, start + 3 * len(data) // 4)  # not read through the cache
    finally:
        os.close(fd)


def test_asking_whether_a_page_is_cached_does_not_bring_it_in(tmp_path):
    """The probe reads nothing: a one-byte RWF_NOWAIT read, used before, started the kernel's read-ahead."""
    if not _direct_supported(tmp_path):
        pytest.skip("this filesystem refuses O_DIRECT")
    _write(tmp_path / "f", [os.urandom(4 << 20)], direct=True)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        if direct_file.in_page_cache(fd, 2 << 20):
            pytest.skip("the file stayed in the page cache after an O_DIRECT write")
        assert not any(direct_file.in_page_cache(fd, 2 << 20) for _ in range(3))
        assert not direct_file.in_page_cache(fd, (2 << 20) + ALIGN)
        os.pread(fd, 1, 2 << 20)  # a buffered read does bring it in
        assert direct_file.in_page_cache(fd, 2 << 20)
    finally:
        os.close(fd)
