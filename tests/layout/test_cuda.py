"""The CUDA layout path of issue #4: the Triton kernels give the portable path's bytes on fresh random inputs,
and the k-packed kernel gives vLLM's `gptq_marlin_repack` bytes (optimum-quanto's build of it). Marked `cuda`
(skipped without a GPU). The CUDA pipeline and `verify --gemm` tests are in tests/pipeline/, the GEMM check's
in tests/test_gemm_check.py."""
import pytest
import torch

from marlin_convert import layout
from marlin_convert.errors import ShapeError
from marlin_convert.layout import portable
from tests._support.markers import needs_quanto
from tests._support.words import pack_rows

SHAPES = [(64, 128), (128, 256), (192, 384), (320, 640), (1024, 2048), (4096, 4096), (11008, 4096), (4096, 11008)]
"""(N, K) = (out_features, in_features)."""
SMALL = SHAPES[:5]


def _codes(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _qweight(codes: torch.Tensor) -> torch.Tensor:
    """GPTQ qweight int32 [K/8, N] of uint8 codes [N, K], packed by the test-side writer."""
    return torch.from_numpy(pack_rows(codes.t().contiguous().numpy()))


def _poison(nbytes: int) -> None:
    """Leave a freed block of 0xA5 bytes in the caching allocator, so an unwritten output element shows."""
    block = torch.full((nbytes,), 0xA5, dtype=torch.uint8, device="cuda")
    del block


def _cpu_pack(codes: torch.Tensor) -> torch.Tensor:
    return portable.pack_codes(codes)


# ----------------------------------------------------------------------------- kernels against the CPU path


@pytest.mark.cuda
@pytest.mark.parametrize("source", ["codes", "kpacked"])
@pytest.mark.parametrize("variant", ["gather", "shuffle"])
@pytest.mark.parametrize("n,k", SHAPES)
def test_pack_cuda_equals_cpu(n, k, variant, source):
    """From uint8 codes and from GPTQ words, both kernel variants give the portable path's bytes."""
    from marlin_convert.layout.pack_triton import pack_codes_cuda, pack_kpacked_cuda

    codes = _codes(n, k, (3 if source == "codes" else 7) * n + k)
    _poison(n * k // 2)
    if source == "codes":
        got = pack_codes_cuda(codes.cuda(), variant=variant)
    else:
        got = pack_kpacked_cuda(_qweight(codes).cuda(), variant=variant)
    assert got.is_cuda and got.dtype == torch.int32 and tuple(got.shape) == (k // 16, 2 * n)
    assert torch.equal(got.cpu(), _cpu_pack(codes))


@pytest.mark.cuda
@pytest.mark.parametrize("n,k", SHAPES)
def test_unpack_codes_cuda_equals_cpu(n, k):
    from marlin_convert.layout.pack_triton import unpack_codes_cuda

    codes = _codes(n, k, n + 5 * k)
    packed = _cpu_pack(codes)
    _poison(n * k)
    got = unpack_codes_cuda(packed.cuda(), n=n, k=k)
    assert got.dtype == torch.uint8 and tuple(got.shape) == (n, k)
    assert torch.equal(got.cpu(), codes)
    assert torch.equal(got.cpu(), portable.unpack_codes(packed, n=n, k=k))


@pytest.mark.cuda
@pytest.mark.parametrize("variant", ["gather", "shuffle"])
@pytest.mark.parametrize("perm_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("n,k", SMALL + [(4096, 4096), (4096, 11008)])
def test_pack_kpacked_cuda_act_order(n, k, perm_dtype, variant):
    """Marlin row j takes source row perm[j]: the bytes of the CPU pack of codes[:, perm]."""
    from marlin_convert.layout.pack_triton import pack_kpacked_cuda

    codes = _codes(n, k, n * k + 1)
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(k)).to(perm_dtype)
    _poison(n * k // 2)
    got = pack_kpacked_cuda(_qweight(codes).cuda(), perm.cuda(), variant=variant)
    assert torch.equal(got.cpu(), _cpu_pack(codes[:, perm.long()].contiguous()))


@pytest.mark.cuda
@pytest.mark.parametrize("variant", ["gather", "shuffle"])
def test_pack_kpacked_cuda_perm_runs(variant):
    """A run perm[16a:16b] gives Marlin tile rows a..b-1, as on the CPU (streaming a layer in row blocks)."""
    from marlin_convert.layout.pack_triton import pack_kpacked_cuda

    n, k = 320, 1024
    codes = _codes(n, k, 99)
    q = _qweight(codes)
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(3))
    full = _cpu_pack(codes[:, perm].contiguous())
    for a, b in [(0, 16), (16, 48), (40, 64), (63, 64)]:
        got = pack_kpacked_cuda(q.cuda(), perm[16 * a : 16 * b].cuda(), variant=variant)
        assert torch.equal(got.cpu(), full[a:b])
        assert torch.equal(got.cpu(), portable.pack_kpacked_portable(q, perm[16 * a : 16 * b]))


@pytest.mark.cuda
@pytest.mark.parametrize("n,k", [(64, 128), (192, 384), (4096, 4096)])
def test_layout_dispatches_to_triton(n, k):
    codes = _codes(n, k, 11)
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(1))
    assert layout.uses_triton(codes.cuda()) and not layout.uses_triton(codes)
    packed = layout.pack(codes.cuda())
    assert packed.is_cuda and torch.equal(packed.cpu(), layout.pack(codes))
    assert torch.equal(layout.unpack(packed, n=n, k=k).cpu(), codes)
    assert torch.equal(layout.pack_kpacked(_qweight(codes).cuda(), perm.cuda()).cpu(),
                       layout.pack(codes[:, perm].contiguous()))


@pytest.mark.cuda
@pytest.mark.parametrize("fill", [0x0, 0xF])
def test_edge_patterns_cuda(fill):
    codes = torch.full((128, 256), fill, dtype=torch.uint8)
    codes[::7, ::5] = 15 - fill
    assert torch.equal(layout.pack(codes.cuda()).cpu(), _cpu_pack(codes))
    assert torch.equal(layout.pack_kpacked(_qweight(codes).cuda()).cpu(), _cpu_pack(codes))


@pytest.mark.cuda
def test_cuda_kernels_refuse_bad_input():
    from marlin_convert.layout.pack_triton import pack_codes_cuda, pack_kpacked_cuda, unpack_codes_cuda

    words = torch.zeros((16, 64), dtype=torch.int32, device="cuda")
    with pytest.raises(ShapeError):
        pack_kpacked_cuda(words, torch.zeros(128, dtype=torch.int32, device="cuda"))  # not a permutation
    with pytest.raises(ShapeError):
        pack_kpacked_cuda(words, torch.arange(127, device="cuda"))
    with pytest.raises(ShapeError):
        pack_kpacked_cuda(words, torch.arange(1, 17, device="cuda") * 8)  # a run reaching row 128 of 128
    with pytest.raises(ShapeError):
        pack_codes_cuda(torch.zeros((64, 128), dtype=torch.uint8))  # on the CPU
    with pytest.raises(ShapeError):
        pack_codes_cuda(torch.zeros((96, 128), dtype=torch.uint8, device="cuda"))
    with pytest.raises(ShapeError):
        unpack_codes_cuda(torch.zeros((8, 128), dtype=torch.int32, device="cuda"), n=64, k=256)


# ----------------------------------------------------------------------------- against vLLM's kernel


@pytest.mark.cuda
@needs_quanto
@pytest.mark.parametrize("n,k", [(64, 128), (192, 384), (4096, 4096), (11008, 4096), (4096, 11008), (1024, 2048)])
def test_equals_vllm_gptq_marlin_repack(n, k):
    """Symmetric GPTQ without act-order: our B is byte-equal to vLLM's gptq_marlin_repack (quanto's build);
    with a perm, vLLM's older act-order path gives our bytes too."""
    from marlin_convert.runtime.gemm_check import quanto_lib
    from marlin_convert.layout.pack_triton import pack_kpacked_cuda

    lib = quanto_lib()
    q = _qweight(_codes(n, k, n ^ k)).cuda()
    theirs = lib.gptq_marlin_repack(q, torch.empty(0, dtype=torch.int32, device="cuda"), k, n, 4)
    assert torch.equal(pack_kpacked_cuda(q), theirs)
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(k)).to(torch.int32).cuda()
    theirs = lib.gptq_marlin_repack(q, perm, k, n, 4)
    assert torch.equal(pack_kpacked_cuda(q, perm), theirs)
