"""`StoredRows`: a stored 2-D tensor read a row range at a time gives exactly the rows the official reader gives."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from marlin_convert.checkpoint.safetensors_file import read_header
from marlin_convert.checkpoint.stored_rows import StoredRows


@pytest.fixture
def stored(tmp_path):
    gen = torch.Generator().manual_seed(11)
    tensors = {
        "a.bias": torch.randn(7, generator=gen).to(torch.float16),  # before the words: they do not start at 0
        "a.qweight": torch.randint(-2**31, 2**31 - 1, (37, 24), generator=gen, dtype=torch.int64).to(torch.int32),
        "b.scales": torch.randn(5, 24, generator=gen).to(torch.bfloat16),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path, load_file(str(path)), read_header(path).tensors


@pytest.mark.parametrize("rows", [slice(0, 37), slice(0, 1), slice(5, 21), slice(36, 37), slice(30, 99), slice(8, 8),
                                  slice(None, 4), slice(33, None)])
def test_row_ranges_are_the_stored_rows(stored, rows):
    path, official, infos = stored
    with open(path, "rb") as f:
        words = StoredRows(f, infos["a.qweight"])
        got = words[rows]
    expected = official["a.qweight"][rows]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert got.numpy().tobytes() == expected.numpy().tobytes()


def test_shape_dtype_and_device_are_the_stored_tensors(stored):
    path, official, infos = stored
    with open(path, "rb") as f:
        scales = StoredRows(f, infos["b.scales"])
        assert (scales.shape, scales.dtype, scales.device.type, scales.dim(), len(scales)) == \
            (official["b.scales"].shape, torch.bfloat16, "cpu", 2, 5)
        assert torch.equal(scales[1:4], official["b.scales"][1:4])


@pytest.mark.parametrize("key", [3, slice(0, 10, 2), (slice(0, 2), 1)])
def test_only_row_ranges_are_read(stored, key):
    path, _, infos = stored
    with open(path, "rb") as f, pytest.raises(TypeError, match="a.qweight"):
        StoredRows(f, infos["a.qweight"])[key]


def test_a_tensor_that_is_not_2d_is_refused(stored):
    path, _, infos = stored
    with open(path, "rb") as f, pytest.raises(ValueError, match="a.bias"):
        StoredRows(f, infos["a.bias"])
