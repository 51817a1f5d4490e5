"""`pack_kpacked_portable` / `unpack_to_kpacked` (GPTQ qweight straight to Marlin and back), and the blocked
CPU paths of `pack_codes` / `unpack_codes` across block boundaries, against the test-side references."""
import numpy as np
import pytest
import torch

from marlin_convert.errors import ShapeError
from marlin_convert.layout import numpy_kernels, torch_reference
from marlin_convert.layout.portable import pack_codes, pack_kpacked_portable, unpack_codes, unpack_to_kpacked
from tests._support.reference import seed_pack, seed_unpack
from tests._support.words import pack_rows

SHAPES = [(64, 128), (128, 256), (192, 384), (512, 256), (320, 640), (64, 1024), (2560, 256)]


def _codes(n: int, k: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 16, (n, k), dtype=np.uint8)


def _perm(k: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(k)


@pytest.fixture(params=["default", "tiny-blocks"])
def blocks(request, monkeypatch):
    """Run each test with the shipped block size and with blocks so small that every loop has many steps."""
    if request.param == "tiny-blocks":
        monkeypatch.setattr(numpy_kernels, "_BLOCK_BYTES", 4096)
        monkeypatch.setattr(numpy_kernels, "_KPACKED_CHUNK_BYTES", 2048)
        monkeypatch.setattr(numpy_kernels, "_BLOCK_TILES", 3)
        monkeypatch.setattr(numpy_kernels, "_PLANE_BYTES", 24576)  # act-order column blocks of 64..128 columns
    return request.param


@pytest.mark.parametrize("n,k", SHAPES)
def test_pack_kpacked_matches_seed(n, k, blocks):
    codes = _codes(n, k, n + 3 * k)
    q = torch.from_numpy(pack_rows(codes.T))
    got = pack_kpacked_portable(q)
    assert got.dtype == torch.int32 and tuple(got.shape) == (k // 16, 2 * n)
    np.testing.assert_array_equal(got.numpy(), seed_pack(codes))


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("perm_dtype", [torch.int32, torch.int64])
def test_pack_kpacked_with_perm_matches_seed(n, k, perm_dtype, blocks):
    codes = _codes(n, k, 7 * n + k)
    perm = _perm(k, n * k)
    q = torch.from_numpy(pack_rows(codes.T))
    got = pack_kpacked_portable(q, torch.from_numpy(perm).to(perm_dtype))
    np.testing.assert_array_equal(got.numpy(), seed_pack(np.ascontiguousarray(codes[:, perm])))


@pytest.mark.parametrize("n,k", SHAPES)
def test_unpack_to_kpacked_inverts_seed_pack(n, k, blocks):
    codes = _codes(n, k, n * k + 1)
    packed = torch.from_numpy(seed_pack(codes))
    got = unpack_to_kpacked(packed, n=n, k=k)
    assert got.dtype == torch.int32 and tuple(got.shape) == (k // 8, n)
    np.testing.assert_array_equal(got.numpy(), pack_rows(codes.T))


@pytest.mark.parametrize("n,k", SHAPES)
def test_unpack_to_kpacked_with_perm(n, k, blocks):
    codes = _codes(n, k, n * k + 2)
    perm = _perm(k, n + k)
    packed = torch.from_numpy(seed_pack(np.ascontiguousarray(codes[:, perm])))
    got = unpack_to_kpacked(packed, n=n, k=k, perm=torch.from_numpy(perm).to(torch.int32))
    np.testing.assert_array_equal(got.numpy(), pack_rows(codes.T))


@pytest.mark.parametrize("fill", [0x0, 0xF])
@pytest.mark.parametrize("with_perm", [False, True])
def test_edge_patterns(fill, with_perm, blocks):
    n, k = 128, 256
    codes = np.full((n, k), fill, dtype=np.uint8)
    codes[::7, ::5] = 15 - fill  # a sprinkle of the other extreme, so a misplaced nibble shows
    perm = _perm(k, 5) if with_perm else None
    q = torch.from_numpy(pack_rows(codes.T))
    tp = None if perm is None else torch.from_numpy(perm)
    packed = pack_kpacked_portable(q, tp)
    want = seed_pack(np.ascontiguousarray(codes if perm is None else codes[:, perm]))
    np.testing.assert_array_equal(packed.numpy(), want)
    assert torch.equal(unpack_to_kpacked(packed, n=n, k=k, perm=tp), q)
    flat = torch.from_numpy(pack_rows(np.full((k, n), fill, dtype=np.uint8)))
    np.testing.assert_array_equal(pack_kpacked_portable(flat, tp).numpy(), np.full((k // 16, 2 * n), -1 if fill else 0, np.int32))


@pytest.mark.parametrize("n,k", SHAPES)
def test_pack_codes_blocked_paths(n, k, blocks):
    codes = _codes(n, k, 11 * n + k)
    packed = pack_codes(torch.from_numpy(codes))
    np.testing.assert_array_equal(packed.numpy(), seed_pack(codes))
    np.testing.assert_array_equal(unpack_codes(packed, n=n, k=k).numpy(), seed_unpack(packed.numpy(), n, k))


def test_pack_codes_non_contiguous_input():
    codes = _codes(128, 512, 9)
    view = torch.from_numpy(codes)[:, 128:384]
    np.testing.assert_array_equal(pack_codes(view).numpy(), seed_pack(np.ascontiguousarray(codes[:, 128:384])))


def test_kpacked_roundtrip_random_words():
    q = torch.from_numpy(np.random.default_rng(1).integers(-(2**31), 2**31, (64, 192), dtype=np.int64).astype(np.int32))
    perm = torch.from_numpy(_perm(512, 2))
    assert torch.equal(unpack_to_kpacked(pack_kpacked_portable(q), n=192, k=512), q)
    assert torch.equal(unpack_to_kpacked(pack_kpacked_portable(q, perm), n=192, k=512, perm=perm), q)


@pytest.mark.parametrize(
    "shape,dtype",
    [((16, 100), torch.int32), ((15, 64), torch.int32), ((16, 64), torch.int64), ((16,), torch.int32)],
)
def test_pack_kpacked_refuses_bad_words(shape, dtype):
    with pytest.raises(ShapeError):
        pack_kpacked_portable(torch.zeros(shape, dtype=dtype))


@pytest.mark.parametrize(
    "perm",
    [torch.arange(127), torch.zeros(128, dtype=torch.int64), torch.arange(1, 129), torch.arange(128).float()],
)
def test_bad_perm_is_refused(perm):
    with pytest.raises(ShapeError):
        pack_kpacked_portable(torch.zeros((16, 64), dtype=torch.int32), perm)
    with pytest.raises(ShapeError):
        unpack_to_kpacked(torch.zeros((8, 128), dtype=torch.int32), n=64, k=128, perm=perm)


def test_unpack_to_kpacked_checks_shape():
    with pytest.raises(ShapeError):
        unpack_to_kpacked(torch.zeros((8, 128), dtype=torch.int32), n=64, k=256)


# ----------------------------------------------------------------------------- the CPU nibble paths

@pytest.mark.parametrize("shape", [(8,), (3, 16), (2, 5, 64), (70000, 8), (0, 8)])
def test_nibbles_match_restatement_for_any_byte(shape, monkeypatch):
    from marlin_convert.layout import nibbles

    monkeypatch.setattr(nibbles, "_SLICE_BYTES", 64)  # many slices, and a short last one
    v = np.random.default_rng(len(shape)).integers(0, 256, shape, dtype=np.uint8)  # out-of-range too
    pairs = v.reshape(*shape[:-1], shape[-1] // 2, 2).astype(np.uint32)
    want = ((pairs[..., 0] | (pairs[..., 1] << 4)) & 0xFF).astype(np.uint8)
    got = nibbles.pack_nibbles(torch.from_numpy(v))
    assert got.dtype == torch.int32 and tuple(got.shape) == (*shape[:-1], shape[-1] // 8)
    np.testing.assert_array_equal(got.numpy().view(np.uint8).reshape(want.shape), want)
    raw = got.numpy().view(np.uint8)
    back = nibbles.unpack_nibbles(got)
    np.testing.assert_array_equal(back.numpy(), np.stack((raw & 0xF, raw >> 4), axis=-1).reshape(shape))


def test_cpu_paths_accept_unaligned_and_strided_tensors():
    n, k = 128, 256
    buf = np.random.default_rng(3).integers(0, 16, n * k + 1, dtype=np.uint8)
    codes = torch.from_numpy(buf)[1:].reshape(n, k)  # data pointer not 8-byte aligned
    want = seed_pack(buf[1:].reshape(n, k))
    np.testing.assert_array_equal(pack_codes(codes).numpy(), want)
    q = torch.from_numpy(pack_rows(buf[1:].reshape(n, k).T))
    np.testing.assert_array_equal(pack_kpacked_portable(q.t().contiguous().t()).numpy(), want)
    from marlin_convert.layout import pack_nibbles, unpack_nibbles

    assert torch.equal(unpack_nibbles(pack_nibbles(codes)), codes)
    assert torch.equal(unpack_nibbles(pack_nibbles(codes.t())), codes.t())


@pytest.mark.parametrize("a,b", [(0, 8), (3, 11), (0, 40), (39, 40)])
def test_pack_kpacked_row_blocks(a, b, blocks):
    n, k = 192, 640
    codes = _codes(n, k, 21)
    perm = _perm(k, 22)
    q = torch.from_numpy(pack_rows(codes.T))
    whole = seed_pack(np.ascontiguousarray(codes[:, perm]))
    got = pack_kpacked_portable(q, torch.from_numpy(perm[16 * a : 16 * b]))
    np.testing.assert_array_equal(got.numpy(), whole[a:b])
    if (b - a) % 8 == 0:
        np.testing.assert_array_equal(pack_kpacked_portable(q[2 * a : 2 * b]).numpy(), seed_pack(codes)[a:b])


@pytest.mark.parametrize("perm", [torch.arange(24), torch.tensor([0, 128] * 8), torch.arange(-1, 15)])
def test_bad_partial_perm_is_refused(perm):
    with pytest.raises(ShapeError):
        pack_kpacked_portable(torch.zeros((16, 64), dtype=torch.int32), perm)


@pytest.mark.parametrize("with_perm", [False, True])
def test_torch_fallbacks_of_other_devices(with_perm):
    """The torch ops used for tensors off the CPU, run here on CPU tensors."""
    n, k = 192, 384
    codes = _codes(n, k, 31)
    perm = _perm(k, 32) if with_perm else None
    q = torch.from_numpy(pack_rows(codes.T))
    want = seed_pack(np.ascontiguousarray(codes if perm is None else codes[:, perm]))
    perm_t = None if perm is None else torch.from_numpy(perm)
    packed = torch_reference.pack_kpacked_torch(q, perm_t)
    np.testing.assert_array_equal(packed.numpy(), want)
    assert torch.equal(torch_reference.unpack_to_kpacked_torch(packed, n, k, perm_t), q)
    np.testing.assert_array_equal(torch_reference.pack_codes_torch(torch.from_numpy(codes)).numpy(), seed_pack(codes))
