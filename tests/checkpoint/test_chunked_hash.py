"""`chunked_hash`: sha256 of byte ranges through one reused buffer per thread, which a thread can give back."""
from __future__ import annotations

import hashlib
import os

import numpy as np

from marlin_convert.checkpoint import chunked_hash


def test_ranges_hash_as_hashlib_does_and_a_released_buffer_is_made_again(tmp_path, monkeypatch):
    """Ranges across several chunks, at odd offsets, give hashlib's digest of the same bytes; after
    `release_buffer` the thread holds no buffer, and the next hash makes one again and is still right."""
    chunked_hash.release_buffer()  # one an earlier test left on this thread
    monkeypatch.setattr(chunked_hash, "CHUNK", 4096)
    data = np.random.default_rng(31).integers(0, 256, size=50_000, dtype=np.uint8).tobytes()
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        for start, nbytes in ((0, 50_000), (7, 12_345), (4095, 4097), (49_999, 1), (10, 0)):
            assert chunked_hash.hash_range(fd, start, nbytes, "f") == hashlib.sha256(data[start : start + nbytes]).hexdigest()
            assert len(chunked_hash._buffers.buf) == 4096
            chunked_hash.release_buffer()
            assert not hasattr(chunked_hash._buffers, "buf")
        chunked_hash.release_buffer()  # twice is harmless
    finally:
        os.close(fd)
    assert chunked_hash.hash_file(path) == (hashlib.sha256(data).hexdigest(), 50_000)
