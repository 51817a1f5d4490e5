"""`gemm_check.check_layer`: optimum-quanto's Marlin GEMM on our Marlin tensors matches a dense reference
and catches a reordered block (marked `cuda`: skipped without a GPU or optimum-quanto)."""
import pytest
import torch

from marlin_convert.formats import DenseCodes, QuantizedLinear, to_marlin
from tests._support.markers import needs_quanto


def _codes(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _record(n, k, group_size, *, kind, act_order=False, dtype=torch.float16, seed=0):
    g = torch.Generator().manual_seed(seed)
    groups = 1 if group_size == -1 else k // group_size
    scales = (torch.rand((groups, n), generator=g) * 0.02 + 1e-3).to(dtype)
    zeros = torch.randint(1, 16, (groups, n), dtype=torch.uint8, generator=g) if kind == "asym" else None
    shift = (torch.rand((groups, n), generator=g) * 0.1).to(dtype) if kind == "shift" else None
    g_idx = None
    if act_order:
        g_idx = (torch.arange(k) // group_size).to(torch.int32)[torch.randperm(k, generator=g)]
    return QuantizedLinear(DenseCodes(_codes(n, k, seed)), scales, zeros, shift, g_idx, group_size)


@pytest.mark.cuda
@needs_quanto
@pytest.mark.parametrize("n,k,group_size,kind,act_order", [
    (192, 256, 128, "sym", False),  # N % 128 == 64: padded for the kernel
    (192, 512, -1, "asym", False),
    (4096, 4096, 128, "asym", True),
    (1024, 2048, 128, "shift", False),  # optimum-quanto's float shift
    (1024, 2048, -1, "shift", False),
    (11008, 4096, 128, "sym", False),
])
def test_gemm_check_layers(n, k, group_size, kind, act_order):
    from marlin_convert.runtime.gemm_check import check_layer

    rec = _record(n, k, group_size, kind=kind, act_order=act_order, seed=n + k)
    tensors = to_marlin(rec)
    result = check_layer(rec, tensors)
    assert result.skipped is None and result.ok, result.detail
    bad = dict(tensors)
    blocks = tensors["B"].view(k // 16, n // 64, 128).clone()
    blocks[:, 1] = blocks[:, 1].roll(1, dims=-1)  # one 64-column block out of order
    bad["B"] = blocks.view(k // 16, 2 * n)
    result = check_layer(rec, bad)
    assert not result.ok and "ABOVE" in result.detail, result.detail


@pytest.mark.cuda
@needs_quanto
@pytest.mark.parametrize("kind,act_order", [("sym", False), ("asym", True)])
def test_gemm_check_cuda_record(kind, act_order):
    """A record and Marlin tensors already on the GPU (as `verify --device cuda` makes them)."""
    from marlin_convert.runtime.gemm_check import check_layer

    rec = _record(512, 1024, 128, kind=kind, act_order=act_order, seed=5)
    move = lambda t: None if t is None else t.cuda()  # noqa: E731
    rec = QuantizedLinear(DenseCodes(rec.codes.full().cuda()), rec.scales.cuda(), move(rec.zeros), None,
                          move(rec.g_idx), rec.group_size)
    result = check_layer(rec, to_marlin(rec))
    assert result.skipped is None and result.ok, result.detail
