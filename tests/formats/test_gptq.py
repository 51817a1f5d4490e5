import numpy as np
import pytest
import torch

from marlin_convert.formats import FormatContext, LayerPlan, TensorSpec
from marlin_convert.formats.gptq import GptqFormat
from tests._support.checkpoints import make_layer
from tests._support.words import pack_cols, pack_rows
from tests._support.seeds import stable_seed


def _plan(n, k, group_size, *, zero_format, has_zeros=True, g_idx=True):
    sources = {"qweight": "w.qweight", "qzeros": "w.qzeros", "scales": "w.scales"}
    if g_idx:
        sources["g_idx"] = "w.g_idx"
    groups = 1 if group_size == -1 else k // group_size
    return LayerPlan(prefix="w", format="gptq", sources=sources, n=n, k=k, group_size=group_size, num_groups=groups,
                     has_zeros=has_zeros, extra={"zero_format": zero_format})


def _stored(n, k, groups, rng, fill=None):
    if fill is not None:
        word = np.uint32(int(fill * 0x11111111)).view(np.int32)
        return {
            "qweight": torch.full((k // 8, n), int(word), dtype=torch.int32),
            "qzeros": torch.full((groups, n // 8), int(word), dtype=torch.int32),
        }
    return {
        "qweight": torch.from_numpy(rng.integers(-2**31, 2**31, size=(k // 8, n), dtype=np.int64).astype(np.int32)),
        "qzeros": torch.from_numpy(rng.integers(-2**31, 2**31, size=(groups, n // 8), dtype=np.int64).astype(np.int32)),
    }


@pytest.mark.parametrize("zero_format", ["v1", "v2"])
@pytest.mark.parametrize("fill", [None, 0x0, 0xF, 0x7, 0x8])
@pytest.mark.parametrize("group_size", [128, -1])
def test_decode_encode_is_byte_identical(zero_format, fill, group_size):
    rng = np.random.default_rng(stable_seed(zero_format, fill, group_size))
    n, k = 128, 256
    groups = 1 if group_size == -1 else k // group_size
    stored = _stored(n, k, groups, rng, fill)
    stored["scales"] = torch.from_numpy(rng.standard_normal((groups, n)).astype(np.float32)).to(torch.float16)
    stored["g_idx"] = torch.from_numpy(rng.integers(0, groups, size=k).astype(np.int32))
    plan = _plan(n, k, group_size, zero_format=zero_format)
    back = GptqFormat.encode(GptqFormat.decode(plan, stored), plan)
    for role, t in stored.items():
        assert torch.equal(back[role].view(torch.uint8), t.view(torch.uint8)), role


def test_decode_matches_independent_truth():
    rng = np.random.default_rng(5)
    t = make_layer(rng, 128, 256, 64, sym=False, act_order=True, scale_dtype=torch.bfloat16)
    stored_zeros = (t.zeros.astype(np.int16) - 1) % 16
    tensors = {
        "qweight": torch.from_numpy(pack_rows(t.codes)),
        "qzeros": torch.from_numpy(pack_cols(stored_zeros.astype(np.uint8))),
        "scales": t.scales,
        "g_idx": torch.from_numpy(t.g_idx),
    }
    rec = GptqFormat.decode(_plan(128, 256, 64, zero_format="v1"), tensors)
    np.testing.assert_array_equal(rec.codes.full().numpy(), t.codes.T)
    idx = torch.from_numpy(np.random.default_rng(1).permutation(256)[:40])
    np.testing.assert_array_equal(rec.codes.take_cols(idx).numpy(), t.codes.T[:, idx.numpy()])
    np.testing.assert_array_equal(rec.zeros.numpy(), t.zeros)
    np.testing.assert_array_equal(rec.g_idx.numpy(), t.g_idx)
    assert rec.scales is tensors["scales"]


def _ctx(qzeros_word, *, checkpoint_format="gptq", sym=True):
    n, k = 64, 128
    tensors = {
        "l.qweight": torch.zeros((k // 8, n), dtype=torch.int32),
        "l.qzeros": torch.full((1, n // 8), qzeros_word, dtype=torch.int32),
        "l.scales": torch.ones((1, n), dtype=torch.float16),
    }
    qc = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": sym, "checkpoint_format": checkpoint_format}
    specs = {name: TensorSpec({torch.int32: "I32", torch.float16: "F16"}[t.dtype], tuple(t.shape)) for name, t in tensors.items()}
    return FormatContext(config={"quantization_config": qc}, json_files={}, tensors=specs), tensors.__getitem__


def test_v2_zeros_under_gptq_label_are_detected_with_a_warning():
    ctx, read = _ctx(np.uint32(0x88888888).view(np.int32).item())
    plan = GptqFormat.plan(ctx, read)
    assert plan.layers[0].extra["zero_format"] == "v2" and not plan.layers[0].has_zeros
    assert any("0x88888888" in w for w in plan.warnings)


def test_v1_symmetric_zeros_need_no_warning():
    ctx, read = _ctx(0x77777777)
    plan = GptqFormat.plan(ctx, read)
    assert plan.layers[0].extra["zero_format"] == "v1" and not plan.layers[0].has_zeros and not plan.warnings


def test_v1_zero_nibble_f_is_not_converted():
    ctx, read = _ctx(np.uint32(0x7777777F).view(np.int32).item(), sym=False)
    plan = GptqFormat.plan(ctx, read)
    assert not plan.layers[0].eligible and "0xF" in plan.layers[0].reason
