import numpy as np
import pytest
import torch

from marlin_convert import layout
from marlin_convert.errors import ShapeError
from tests._support.reference import marlin_permute_scales, marlin_zero_points, seed_pack, seed_pack_loop

SHAPES = [(64, 128), (128, 128), (256, 128), (64, 256), (192, 384), (512, 256), (320, 640)]


def _codes(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("n,k", SHAPES)
def test_pack_matches_seed(n, k):
    codes = _codes(n, k, n * 7 + k)
    packed = layout.pack(codes)
    assert packed.dtype == torch.int32 and tuple(packed.shape) == (k // 16, 2 * n)
    np.testing.assert_array_equal(packed.numpy(), seed_pack(codes.numpy()))


def test_pack_matches_vllm_kernel_element_map():
    codes = _codes(128, 128, 3)
    np.testing.assert_array_equal(layout.pack(codes).numpy(), seed_pack_loop(codes.numpy()))


@pytest.mark.parametrize("fill", [0, 15])
def test_edge_patterns(fill):
    codes = torch.full((64, 128), fill, dtype=torch.uint8)
    packed = layout.pack(codes)
    np.testing.assert_array_equal(packed.numpy(), seed_pack(codes.numpy()))
    assert torch.equal(layout.unpack(packed, n=64, k=128), codes)


@pytest.mark.parametrize("n,k", SHAPES)
def test_unpack_inverts_seed_pack(n, k):
    codes = _codes(n, k, n + k)
    packed = torch.from_numpy(seed_pack(codes.numpy()))
    assert torch.equal(layout.unpack(packed, n=n, k=k), codes)


@pytest.mark.parametrize("n,k", [(32, 128), (64, 64), (100, 128), (64, 200)])
def test_bad_shapes_are_refused(n, k):
    with pytest.raises(ShapeError):
        layout.pack(torch.zeros((n, k), dtype=torch.uint8))


def test_unpack_checks_shape():
    with pytest.raises(ShapeError):
        layout.unpack(torch.zeros((8, 128), dtype=torch.int32), n=64, k=256)


@pytest.mark.parametrize("group_size,k", [(128, 512), (64, 256), (32, 128), (-1, 256), (128, 128)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_scale_permutation_matches_vllm(group_size, k, dtype):
    groups = 1 if group_size == -1 else k // group_size
    s = torch.randn(groups, 192, generator=torch.Generator().manual_seed(groups * k)).to(dtype)
    got = layout.permute_scales(s, group_size=group_size, k=k)
    want = marlin_permute_scales(s.view(torch.int16).numpy(), k, group_size)
    np.testing.assert_array_equal(got.view(torch.int16).numpy(), want)
    assert torch.equal(layout.unpermute_scales(got, group_size=group_size, k=k).view(torch.int16), s.view(torch.int16))


@pytest.mark.parametrize("groups", [1, 4])
def test_zero_points_match_vllm(groups):
    z = torch.randint(0, 16, (groups, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(groups))
    packed = layout.pack_zeros(z)
    np.testing.assert_array_equal(packed.numpy(), marlin_zero_points(z.numpy()))
    assert torch.equal(layout.unpack_zeros(packed), z)
