"""`verify --gemm` through the CLI: each GEMM backend (our Triton kernel, optimum-quanto's Marlin CUDA kernel) on
packed layers passes, and fails on a corrupted `B` (marked `cuda`: skipped without a GPU), and without a GPU or
the extra it says what it needs."""
import json
import struct

import numpy as np
import pytest
import torch

from marlin_convert import pack_checkpoint, verify_checkpoint
from marlin_convert.errors import MarlinConvertError
from tests._support.checkpoints import make_gptq_checkpoint
from tests._support.markers import needs_quanto


def _packed_on_cuda(tmp_path, **kwargs):
    """A synthetic GPTQ checkpoint (`make_gptq_checkpoint` options) and its Marlin output packed on the GPU."""
    src, out = tmp_path / "src", tmp_path / "out"
    make_gptq_checkpoint(src, **kwargs)
    pack_checkpoint(src, out, device="cuda")
    return src, out


GEMM_CASES = {
    "sym-g128": dict(sym=True, group_size=128),
    "asym-g128-actorder": dict(sym=False, group_size=128, act_order=True),
    "asym-per-column": dict(sym=False, group_size=-1),
    "sym-actorder-bf16": dict(sym=True, group_size=128, act_order=True, scale_dtype=torch.bfloat16),
}


BACKENDS = [pytest.param("triton", id="triton"), pytest.param("quanto", id="quanto", marks=needs_quanto)]


@pytest.mark.cuda
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(GEMM_CASES))
def test_verify_gemm_passes(cli, tmp_path, case, backend):
    src, out = _packed_on_cuda(tmp_path, **GEMM_CASES[case])
    for args in ((src, out), (out,)):
        res = cli("verify", *args, "--gemm", "--gemm-backend", backend, "--json")
        assert res.code == 0, res.out + res.err
        layers = [c for c in json.loads(res.out)["checks"] if c["name"].startswith("model.layers")]
        assert layers and all("Marlin GEMM rel err" in c["detail"] and "within" in c["detail"] for c in layers)


@pytest.mark.cuda
@needs_quanto
def test_verify_gemm_quanto_skips_group_64_with_reason_triton_checks_it(cli, tmp_path):
    src, out = _packed_on_cuda(tmp_path, sym=False, group_size=64)
    res = cli("verify", src, out, "--gemm", "--gemm-backend", "quanto", "--json")
    assert res.code == 0
    assert all("group size 128 and per-column scales only" in c["detail"]
               for c in json.loads(res.out)["checks"] if c["name"].startswith("model.layers"))
    res = cli("verify", src, out, "--gemm", "--json")  # the default backend, Triton, has group 64
    assert res.code == 0
    assert all("Marlin GEMM rel err" in c["detail"] and "within" in c["detail"]
               for c in json.loads(res.out)["checks"] if c["name"].startswith("model.layers"))


def _corrupt_tensor(path, name, seed=0):
    """Overwrite a tensor's bytes in a safetensors file with random bytes (header untouched)."""
    raw = bytearray(path.read_bytes())
    (hlen,) = struct.unpack("<Q", raw[:8])
    start, stop = json.loads(raw[8 : 8 + hlen])[name]["data_offsets"]
    base = 8 + hlen
    raw[base + start : base + stop] = np.random.default_rng(seed).integers(0, 256, stop - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))


@pytest.mark.cuda
@pytest.mark.parametrize("backend", BACKENDS)
def test_verify_gemm_fails_on_corrupted_B(cli, tmp_path, backend):
    src, out = _packed_on_cuda(tmp_path, sym=True, group_size=128)
    _corrupt_tensor(out / "model.safetensors", "model.layers.1.mlp.up_proj.B")
    res = cli("verify", src, out, "--gemm", "--gemm-backend", backend, "--json")
    assert res.code == 1
    report = json.loads(res.out)
    assert report["ok"] is False
    (bad,) = [c for c in report["checks"] if c["status"] == "FAIL"]
    assert bad["name"] == "model.layers.1.mlp.up_proj"
    assert "Marlin GEMM rel err" in bad["detail"] and "ABOVE" in bad["detail"]
    assert cli("verify", src, out, "--gemm", "--gemm-backend", backend).code == 1


def test_verify_gemm_says_what_it_needs(cli, tmp_path, monkeypatch):
    src, out = tmp_path / "src", tmp_path / "out"
    make_gptq_checkpoint(src)
    pack_checkpoint(src, out, device="cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MarlinConvertError, match=r"pip install 'marlin-convert\[gpu-verify\]'"):
        verify_checkpoint(out, src, device="cpu", gemm=True, gemm_backend="quanto")
    res = cli("verify", src, out, "--gemm", "--gemm-backend", "quanto", "--device", "cpu")
    assert res.code == 2 and "gpu-verify" in res.err and "CUDA" in res.err
    res = cli("verify", src, out, "--gemm", "--device", "cpu")  # the default, Triton, needs no extra
    assert res.code == 2 and "CUDA GPU" in res.err and "Traceback" not in res.err
    res = cli("verify", src, out, "--gemm", "--gemm-backend", "nope", "--device", "cpu")
    assert res.code == 2 and "unknown GEMM backend 'nope'" in res.err


def test_a_misspelt_gemm_backend_is_a_usage_error_even_without_gemm(cli, tmp_path):
    """`--gemm-backend` with a name that is not a backend stops verify before any check (exit 2, one line naming
    the choices), also when `--gemm` is not given, where it used to be ignored and verify passed."""
    src, out = tmp_path / "src", tmp_path / "out"
    make_gptq_checkpoint(src)
    pack_checkpoint(src, out, device="cpu")
    for args in ((out,), (src, out)):
        res = cli("verify", *args, "--gemm-backend", "quant0")
        assert res.code == 2, (res.out, res.err)
        assert "unknown GEMM backend 'quant0'; choose one of quanto, triton" in res.err and "Traceback" not in res.err
        assert "PASS" not in res.out
    res = cli("verify", out, "--gemm-backend", "quant0", "--json")
    assert res.code == 2 and "unknown GEMM backend" in json.loads(res.out)["error"]["message"]


def test_verify_knows_the_gemm_backends_that_the_gemm_check_runs():
    """`pipeline.options` names the backends without importing torch; they are those of `runtime.gemm_check`."""
    from marlin_convert.pipeline import options
    from marlin_convert.runtime import gemm_check

    assert options.GEMM_BACKENDS == gemm_check.GEMM_BACKENDS
