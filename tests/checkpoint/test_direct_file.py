"""`SequentialFile`: the bytes on disk are exactly the bytes written, whether O_DIRECT is used, refused when
opening, refused at a write, or turned off; the file is cut back to its length after the padded last chunk."""
from __future__ import annotations

import errno
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


@pytest.mark.parametrize("direct", [True, False])
def test_the_whole_file_digest_is_that_of_the_bytes_on_disk(tmp_path, direct):
    import hashlib

    pieces = _pieces(6)
    f = _write(tmp_path / "f", pieces, direct=direct, hashed=True)
    data = (tmp_path / "f").read_bytes()
    assert f.digest() == (hashlib.sha256(data).hexdigest(), len(data))
    with pytest.raises(RuntimeError):
        _write(tmp_path / "g", [b"x"]).digest()


def test_direct_false_asks_for_the_page_cache(tmp_path):
    f = _write(tmp_path / "f", [b"z" * (CHUNK + 5)], direct=False)
    assert not f.direct and (tmp_path / "f").read_bytes() == b"z" * (CHUNK + 5)
