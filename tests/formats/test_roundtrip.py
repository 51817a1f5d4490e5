"""encode(decode(stored)) == stored, byte for byte, on fresh random words and edge patterns, per format."""
import numpy as np
import pytest
import torch

from marlin_convert.formats import LayerPlan
from marlin_convert.formats.awq import AwqFormat
from marlin_convert.formats.compressed_tensors import CompressedTensorsFormat
from marlin_convert.formats.quanto import QuantoFormat
from tests._support.seeds import stable_seed

FILLS = [None, 0x0, 0xF, 0x8, 0x7]
N, K, GS = 128, 256, 64
G = K // GS


def _words(rng, shape, fill):
    if fill is not None:
        return torch.full(shape, int(np.uint32(fill * 0x11111111).view(np.int32)), dtype=torch.int32)
    return torch.from_numpy(rng.integers(-2**31, 2**31, size=shape, dtype=np.int64).astype(np.int32))


def _bytes(rng, shape, fill):
    if fill is not None:
        return torch.full(shape, fill * 0x11, dtype=torch.uint8)
    return torch.from_numpy(rng.integers(0, 256, size=shape, dtype=np.uint8))


def _same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def _scales(rng, shape, dtype=torch.float16):
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).to(dtype)


@pytest.mark.parametrize("fill", FILLS)
def test_awq(fill):
    rng = np.random.default_rng(stable_seed("test_awq", fill))
    stored = {"qweight": _words(rng, (K, N // 8), fill), "qzeros": _words(rng, (G, N // 8), fill), "scales": _scales(rng, (G, N))}
    plan = LayerPlan("l", "awq", {r: f"l.{r}" for r in stored}, n=N, k=K, group_size=GS, num_groups=G, has_zeros=True)
    back = AwqFormat.encode(AwqFormat.decode(plan, stored), plan)
    assert all(_same(back[r], stored[r]) for r in stored)


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape_dtype", ["I64", "I32"])
def test_compressed_tensors(fill, dtype, shape_dtype):
    rng = np.random.default_rng(stable_seed("test_compressed_tensors", fill, dtype, shape_dtype))
    stored = {
        "weight_packed": _words(rng, (N, K // 8), fill),
        "weight_scale": _scales(rng, (N, G), dtype),
        "weight_zero_point": _words(rng, (N // 8, G), fill),
        "weight_shape": torch.tensor([N, K], dtype=torch.int64 if shape_dtype == "I64" else torch.int32),
        "weight_g_idx": torch.from_numpy(rng.integers(0, G, size=K).astype(np.int32)),
    }
    plan = LayerPlan("l", "compressed_tensors", {r: f"l.{r}" for r in stored}, n=N, k=K, group_size=GS, num_groups=G,
                     has_zeros=True, extra={"weight_shape_dtype": shape_dtype})
    back = CompressedTensorsFormat.encode(CompressedTensorsFormat.decode(plan, stored), plan)
    assert all(_same(back[r], stored[r]) for r in stored)


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_quanto(fill, dtype):
    rng = np.random.default_rng(stable_seed("test_quanto", fill, dtype))
    rows = N * K // GS
    stored = {"data": _bytes(rng, (rows // 2, GS), fill), "scale": _scales(rng, (rows, 1), dtype), "shift": _scales(rng, (rows, 1), dtype)}
    plan = LayerPlan("l", "quanto", {r: f"l.{r}" for r in stored}, n=N, k=K, group_size=GS, num_groups=K // GS,
                     has_shift=True, extra={"columns": GS})
    back = QuantoFormat.encode(QuantoFormat.decode(plan, stored), plan)
    assert all(_same(back[r], stored[r]) for r in stored)
