"""MoE checkpoints: hundreds of per-expert layers convert like any other; stacked 3-D experts are copied."""
import numpy as np
import torch

from marlin_convert import inspect_checkpoint, pack_checkpoint, unpack_checkpoint, verify_checkpoint
from tests._support.checkpoints import gptq_config, layer_tensors, make_layer, write_checkpoint
from tests._support.reference import seed_pack


def test_many_experts_and_a_stacked_tensor(tmp_path):
    rng = np.random.default_rng(0)
    tensors, truth = {}, {}
    for layer in range(2):
        for expert in range(64):
            for proj, (n, k) in {"gate_proj": (64, 128), "up_proj": (64, 128), "down_proj": (128, 128)}.items():
                prefix = f"model.layers.{layer}.mlp.experts.{expert}.{proj}"
                t = make_layer(rng, n, k, 128, sym=True, act_order=False, scale_dtype=torch.float16)
                tensors.update(layer_tensors(prefix, t, v2=False))
                truth[prefix] = t
    stacked = "model.layers.0.mlp.fused_experts"
    tensors[f"{stacked}.qweight"] = torch.from_numpy(rng.integers(-2**31, 2**31, (4, 16, 64), dtype=np.int64).astype(np.int32))
    tensors[f"{stacked}.qzeros"] = torch.full((4, 1, 8), 0x77777777, dtype=torch.int32)
    tensors[f"{stacked}.scales"] = torch.from_numpy(rng.uniform(1e-3, 2e-2, (4, 1, 64)).astype(np.float16))
    write_checkpoint(tmp_path / "src", tensors, gptq_config(128, sym=True, desc_act=False, v2=False), shards=4)
    layers = {entry["prefix"]: entry for entry in inspect_checkpoint(tmp_path / "src").layers}
    assert "3-D" in layers[stacked]["reason"]
    report = pack_checkpoint(tmp_path / "src", tmp_path / "out")
    assert report.layers_converted == len(truth) == 384 and list(report.skipped) == [stacked]
    from safetensors.torch import load_file

    out = {}
    for f in (tmp_path / "out").glob("*.safetensors"):
        out.update(load_file(str(f)))
    for prefix in list(truth)[::37]:
        np.testing.assert_array_equal(out[f"{prefix}.B"].numpy(), seed_pack(np.ascontiguousarray(truth[prefix].codes.T)))
    assert torch.equal(out[f"{stacked}.qweight"], tensors[f"{stacked}.qweight"])
    assert verify_checkpoint(tmp_path / "out", tmp_path / "src").ok
    unpack_checkpoint(tmp_path / "out", tmp_path / "back")
    back = {}
    for f in (tmp_path / "back").glob("*.safetensors"):
        back.update(load_file(str(f)))
    assert back.keys() == tensors.keys()
    assert all(torch.equal(back[k].view(torch.uint8), tensors[k].contiguous().view(torch.uint8)) for k in tensors)
