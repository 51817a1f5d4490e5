"""The CUDA path of issue #4: the Triton kernels give the CPU path's bytes on fresh random inputs, the
k-packed kernel gives vLLM's `gptq_marlin_repack` bytes (optimum-quanto's build of it), and `verify --gemm`
runs optimum-quanto's Marlin GEMM on packed layers. Marked `cuda` (skipped without a GPU), except the
last test, which checks the message when the GEMM cannot run."""
import importlib.util
import json
import struct

import numpy as np
import pytest
import torch

from marlin_convert import layout, pack_checkpoint, verify_checkpoint
from marlin_convert.errors import MarlinConvertError, ShapeError
from marlin_convert.formats import DenseCodes, QuantizedLinear, to_marlin
from marlin_convert.layout import pack_cpu
from tests.gptq_synth import make_gptq_checkpoint, pack_rows

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
    return pack_cpu.pack_codes(codes)


def _has_quanto() -> bool:
    return importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("optimum.quanto") is not None


needs_quanto = pytest.mark.skipif(not _has_quanto(), reason="optimum-quanto is not installed")


# ----------------------------------------------------------------------------- kernels against the CPU path


@pytest.mark.cuda
@pytest.mark.parametrize("variant", ["gather", "shuffle"])
@pytest.mark.parametrize("n,k", SHAPES)
def test_pack_codes_cuda_equals_cpu(n, k, variant):
    from marlin_convert.layout.pack_triton import pack_codes_cuda

    codes = _codes(n, k, 3 * n + k)
    _poison(n * k // 2)
    got = pack_codes_cuda(codes.cuda(), variant=variant)
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
    assert torch.equal(got.cpu(), pack_cpu.unpack_codes(packed, n=n, k=k))


@pytest.mark.cuda
@pytest.mark.parametrize("variant", ["gather", "shuffle"])
@pytest.mark.parametrize("n,k", SHAPES)
def test_pack_kpacked_cuda_equals_cpu(n, k, variant):
    from marlin_convert.layout.pack_triton import pack_kpacked_cuda

    codes = _codes(n, k, 7 * n + k)
    _poison(n * k // 2)
    got = pack_kpacked_cuda(_qweight(codes).cuda(), variant=variant)
    assert torch.equal(got.cpu(), _cpu_pack(codes))


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
        assert torch.equal(got.cpu(), pack_cpu.pack_kpacked(q, perm[16 * a : 16 * b]))


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
    from marlin_convert.gemm_check import quanto_lib
    from marlin_convert.layout.pack_triton import pack_kpacked_cuda

    lib = quanto_lib()
    q = _qweight(_codes(n, k, n ^ k)).cuda()
    theirs = lib.gptq_marlin_repack(q, torch.empty(0, dtype=torch.int32, device="cuda"), k, n, 4)
    assert torch.equal(pack_kpacked_cuda(q), theirs)
    perm = torch.randperm(k, device="cuda").to(torch.int32)
    theirs = lib.gptq_marlin_repack(q, perm, k, n, 4)
    assert torch.equal(pack_kpacked_cuda(q, perm), theirs)


# ----------------------------------------------------------------------------- pipeline and verify --gemm


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.cuda
def test_pipeline_cuda_writes_the_cpu_bytes(tmp_path):
    src = tmp_path / "src"
    make_gptq_checkpoint(src, sym=False, act_order=True, shards=3, bias=True, ineligible=True)
    pack_checkpoint(src, tmp_path / "cpu", device="cpu")
    report = pack_checkpoint(src, tmp_path / "cuda", device="cuda")
    assert report.device == "cuda"
    cpu, gpu = _files(tmp_path / "cpu"), _files(tmp_path / "cuda")
    assert cpu.keys() == gpu.keys()
    for name in cpu:
        if name.endswith(".safetensors"):
            assert cpu[name] == gpu[name], name


GEMM_CASES = {
    "sym-g128": dict(sym=True, group_size=128),
    "asym-g128-actorder": dict(sym=False, group_size=128, act_order=True),
    "asym-per-column": dict(sym=False, group_size=-1),
    "sym-actorder-bf16": dict(sym=True, group_size=128, act_order=True, scale_dtype=torch.bfloat16),
}


@pytest.mark.cuda
@needs_quanto
@pytest.mark.parametrize("case", list(GEMM_CASES))
def test_verify_gemm_passes(cli, tmp_path, case):
    src, out = tmp_path / "src", tmp_path / "out"
    make_gptq_checkpoint(src, **GEMM_CASES[case])
    pack_checkpoint(src, out, device="cuda")
    for args in ((src, out), (out,)):
        res = cli("verify", *args, "--gemm", "--json")
        assert res.code == 0, res.out + res.err
        layers = [c for c in json.loads(res.out)["checks"] if c["name"].startswith("model.layers")]
        assert layers and all("Marlin GEMM rel err" in c["detail"] and "within" in c["detail"] for c in layers)


@pytest.mark.cuda
@needs_quanto
def test_verify_gemm_skips_group_64_with_reason(cli, tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_gptq_checkpoint(src, sym=False, group_size=64)
    pack_checkpoint(src, out, device="cuda")
    res = cli("verify", src, out, "--gemm", "--json")
    assert res.code == 0
    assert all("group size 128 and per-column scales only" in c["detail"]
               for c in json.loads(res.out)["checks"] if c["name"].startswith("model.layers"))


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
    from marlin_convert.gemm_check import check_layer

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
    from marlin_convert.gemm_check import check_layer

    rec = _record(512, 1024, 128, kind=kind, act_order=act_order, seed=5)
    move = lambda t: None if t is None else t.cuda()  # noqa: E731
    rec = QuantizedLinear(DenseCodes(rec.codes.full().cuda()), rec.scales.cuda(), move(rec.zeros), None,
                          move(rec.g_idx), rec.group_size)
    result = check_layer(rec, to_marlin(rec))
    assert result.skipped is None and result.ok, result.detail


def _corrupt_tensor(path, name, seed=0):
    """Overwrite a tensor's bytes in a safetensors file with random bytes (header untouched)."""
    raw = bytearray(path.read_bytes())
    (hlen,) = struct.unpack("<Q", raw[:8])
    start, stop = json.loads(raw[8 : 8 + hlen])[name]["data_offsets"]
    base = 8 + hlen
    raw[base + start : base + stop] = np.random.default_rng(seed).integers(0, 256, stop - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))


@pytest.mark.cuda
@needs_quanto
def test_verify_gemm_fails_on_corrupted_B(cli, tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_gptq_checkpoint(src, sym=True, group_size=128)
    pack_checkpoint(src, out, device="cuda")
    _corrupt_tensor(out / "model.safetensors", "model.layers.1.mlp.up_proj.B")
    res = cli("verify", src, out, "--gemm", "--json")
    assert res.code == 1
    report = json.loads(res.out)
    assert report["ok"] is False
    (bad,) = [c for c in report["checks"] if c["status"] == "FAIL"]
    assert bad["name"] == "model.layers.1.mlp.up_proj"
    assert "Marlin GEMM rel err" in bad["detail"] and "ABOVE" in bad["detail"]
    assert cli("verify", src, out, "--gemm").code == 1


# ----------------------------------------------------------------------------- without a GPU or the extra


def test_verify_gemm_says_what_it_needs(cli, tmp_path, monkeypatch):
    src, out = tmp_path / "src", tmp_path / "out"
    make_gptq_checkpoint(src)
    pack_checkpoint(src, out, device="cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MarlinConvertError, match=r"pip install 'marlin-convert\[gpu-verify\]'"):
        verify_checkpoint(out, src, device="cpu", gemm=True)
    res = cli("verify", src, out, "--gemm", "--device", "cpu")
    assert res.code == 2 and "gpu-verify" in res.err and "CUDA" in res.err


@pytest.mark.cuda
def test_whole_checkpoint_is_byte_identical_on_cpu_and_cuda(tmp_path):
    """Determinism across devices: every output file, manifest included, is the same from either path."""
    from marlin_convert import pack_checkpoint, unpack_checkpoint
    from tests.conftest import tree_hashes
    from tests.gptq_synth import make_gptq_checkpoint

    make_gptq_checkpoint(tmp_path / "src", sym=False, act_order=True, shards=3, bias=True, ineligible=True)
    pack_checkpoint(tmp_path / "src", tmp_path / "cpu", device="cpu", jobs=1)
    pack_checkpoint(tmp_path / "src", tmp_path / "cuda", device="cuda", jobs=4)
    assert tree_hashes(tmp_path / "cpu") == tree_hashes(tmp_path / "cuda")
    unpack_checkpoint(tmp_path / "cuda", tmp_path / "back")
    unpack_checkpoint(tmp_path / "cpu", tmp_path / "back_cpu")
    assert tree_hashes(tmp_path / "back") == tree_hashes(tmp_path / "back_cpu")
