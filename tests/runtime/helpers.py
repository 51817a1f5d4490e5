"""Test-side builders: dense transformers models whose weights come from the SOURCE files through the
test decoders (tests/formats/producer_decoders.py), never through the package."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tests.formats import producer_decoders as dec
from tests._support import checkpoints as gptq_synth

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "producers"
DECODERS = {
    "gptqmodel_sym": dec.decode_gptq,
    "gptqmodel_asym": dec.decode_gptq,
    "gptqmodel_actorder": dec.decode_gptq,
    "transformers_gptq_v2": dec.decode_gptq,
    "autoawq_gemm": dec.decode_awq,
    "ct_sym": dec.decode_compressed_tensors,
    "ct_asym": dec.decode_compressed_tensors,
    "llmc_w4a16": dec.decode_compressed_tensors,
    "llmc_w4a16_asym": dec.decode_compressed_tensors,
    "quanto_qint4_fp16": dec.decode_quanto,
    "quanto_qint4_bf16": dec.decode_quanto,
}


def available_fixtures() -> list[str]:
    return [name for name in DECODERS if (FIXTURES / name / "config.json").is_file()]


def dense_model(src: Path, decode, dtype: torch.dtype):
    """A plain transformers model (no quantization) with the source's dense tensors and, for each quantized
    layer, the float32 weights the test decoder computes from the source files, cast to `dtype`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = json.loads((src / "config.json").read_text())
    cfg.pop("quantization_config", None)
    config = AutoConfig.for_model(**cfg)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    tensors = load_file(str(src / "model.safetensors"))
    wanted = model.state_dict()
    state = {name: t for name, t in tensors.items() if name in wanted}
    for prefix, d in decode(src).items():
        state[f"{prefix}.weight"] = torch.from_numpy(d.weight).to(dtype)
    missing = set(wanted) - set(state)
    assert not missing - {k for k in missing if "rotary" in k}, f"dense model lacks {sorted(missing)[:3]}"
    model.load_state_dict(state, strict=False)
    return model.eval()


def tokens(vocab: int, *, batch: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=g)


def _save_gptq_checkpoint(root: Path, cfg: dict, tensors: dict[str, torch.Tensor], *, group_size: int,
                          sym: bool) -> dict:
    """Write `root/config.json` (fp16, a GPTQ v1 quantization_config without act-order) and one shard."""
    cfg = {**cfg, "dtype": "float16", "quantization_config": {
        "quant_method": "gptq", "bits": 4, "group_size": group_size, "desc_act": False, "sym": sym,
        "checkpoint_format": "gptq"}}
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})
    return cfg


def write_llama_gptq_with_odd_layers(root: Path, *, seed: int = 0) -> None:
    """A GPTQ v1 Llama whose k/v projections have N=96 and o_proj K=192 (not Marlin-eligible, copied by
    pack); q/gate/up/down are eligible. Written with the test-side AutoGPTQ packer."""
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=96, vocab_size=300, max_position_embeddings=64)
    rng = np.random.default_rng(seed)
    shapes = {"self_attn.q_proj": (192, 256), "self_attn.k_proj": (96, 256), "self_attn.v_proj": (96, 256),
              "self_attn.o_proj": (256, 192), "mlp.gate_proj": (512, 256), "mlp.up_proj": (512, 256),
              "mlp.down_proj": (256, 512)}
    t: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": torch.from_numpy(rng.standard_normal((300, 256)).astype(np.float32)).half(),
        "model.norm.weight": torch.ones(256, dtype=torch.float16),
        "lm_head.weight": torch.from_numpy(rng.standard_normal((300, 256)).astype(np.float32) * 0.05).half(),
    }
    for block in range(2):
        for name, (n, k) in shapes.items():
            layer = gptq_synth.make_layer(rng, n, k, 64, sym=False, act_order=False, scale_dtype=torch.float16)
            t.update(gptq_synth.layer_tensors(f"model.layers.{block}.{name}", layer, v2=False))
        t[f"model.layers.{block}.input_layernorm.weight"] = torch.ones(256, dtype=torch.float16)
        t[f"model.layers.{block}.post_attention_layernorm.weight"] = torch.ones(256, dtype=torch.float16)
    _save_gptq_checkpoint(root, config.to_dict(), t, group_size=64, sym=False)


def write_random_llama_gptq(root: Path, *, layers: int, hidden: int, intermediate: int, heads: int, kv_heads: int,
                            vocab: int, seed: int = 0, scale: float = 2e-3) -> None:
    """A random GPTQ (v1, symmetric, group 128) Llama: random int32 qweight words (any word is 8 valid codes),
    scales around `scale`, dense embeddings and lm_head. Built with torch on the CPU, seeded."""
    from transformers import LlamaConfig

    g = torch.Generator().manual_seed(seed)
    hd = hidden // heads
    shapes = {"self_attn.q_proj": (heads * hd, hidden), "self_attn.k_proj": (kv_heads * hd, hidden),
              "self_attn.v_proj": (kv_heads * hd, hidden), "self_attn.o_proj": (hidden, heads * hd),
              "mlp.gate_proj": (intermediate, hidden), "mlp.up_proj": (intermediate, hidden),
              "mlp.down_proj": (hidden, intermediate)}
    t = {"model.embed_tokens.weight": torch.randn(vocab, hidden, generator=g).half(),
         "model.norm.weight": torch.ones(hidden, dtype=torch.float16),
         "lm_head.weight": (torch.randn(vocab, hidden, generator=g) * 0.2).half()}
    for block in range(layers):
        for name, (n, k) in shapes.items():
            p = f"model.layers.{block}.{name}"
            t[f"{p}.qweight"] = torch.randint(-2**31, 2**31 - 1, (k // 8, n), generator=g, dtype=torch.int64).to(torch.int32)
            t[f"{p}.qzeros"] = torch.full((k // 128, n // 8), 0x77777777, dtype=torch.int32)  # v1: stored 7 = zero 8
            t[f"{p}.scales"] = (scale * (0.5 + torch.rand(k // 128, n, generator=g))).half()
        t[f"model.layers.{block}.input_layernorm.weight"] = torch.ones(hidden, dtype=torch.float16)
        t[f"model.layers.{block}.post_attention_layernorm.weight"] = torch.ones(hidden, dtype=torch.float16)
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
                      max_position_embeddings=256).to_dict()
    _save_gptq_checkpoint(root, cfg, t, group_size=128, sym=True)


def write_qwen3_moe_gptq(root: Path, *, seed: int = 0, experts: int = 4) -> dict:
    """A GPTQ (v1, asymmetric, group 128) Qwen3-MoE with per-expert projections, as MoE int4 checkpoints
    store them (`mlp.experts.{e}.gate_proj.qweight`, ...); the router, norms, embeddings and lm_head dense.
    Returns the config dict."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(hidden_size=256, intermediate_size=256, moe_intermediate_size=128, num_experts=experts,
                            num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            head_dim=64, vocab_size=300, max_position_embeddings=64, norm_topk_prob=True)
    torch.manual_seed(seed)
    dense = Qwen3MoeForCausalLM(config).half()
    rng = np.random.default_rng(seed)
    t = {k: v.contiguous() for k, v in dense.state_dict().items()
         if not k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"))
         and ".experts." not in k and "rotary" not in k}
    shapes = {"self_attn.q_proj": (256, 256), "self_attn.k_proj": (128, 256), "self_attn.v_proj": (128, 256),
              "self_attn.o_proj": (256, 256)}
    for e in range(experts):
        shapes.update({f"mlp.experts.{e}.gate_proj": (128, 256), f"mlp.experts.{e}.up_proj": (128, 256),
                       f"mlp.experts.{e}.down_proj": (256, 128)})
    for block in range(2):
        for name, (n, k) in shapes.items():
            layer = gptq_synth.make_layer(rng, n, k, 128, sym=False, act_order=False, scale_dtype=torch.float16)
            t.update(gptq_synth.layer_tensors(f"model.layers.{block}.{name}", layer, v2=False))
    return _save_gptq_checkpoint(root, config.to_dict(), t, group_size=128, sym=False)


def dense_qwen3_moe(src: Path, dtype: torch.dtype):
    """The dense Qwen3-MoE of `write_qwen3_moe_gptq`: fused experts from the test decoder's weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = json.loads((src / "config.json").read_text())
    cfg.pop("quantization_config")
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=dtype)
    tensors = load_file(str(src / "model.safetensors"))
    state = {k: v for k, v in tensors.items() if k in model.state_dict()}
    w = {p: torch.from_numpy(d.weight) for p, d in dec.decode_gptq(src).items()}
    for block in range(cfg["num_hidden_layers"]):
        m = f"model.layers.{block}.mlp.experts"
        e = range(model.config.num_experts)
        state[f"{m}.gate_up_proj"] = torch.stack([torch.cat([w[f"{m}.{i}.gate_proj"], w[f"{m}.{i}.up_proj"]]) for i in e]).to(dtype)
        state[f"{m}.down_proj"] = torch.stack([w[f"{m}.{i}.down_proj"] for i in e]).to(dtype)
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            state[f"model.layers.{block}.self_attn.{p}.weight"] = w[f"model.layers.{block}.self_attn.{p}"].to(dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not [k for k in missing if "rotary" not in k] and not unexpected, (missing, unexpected)
    return model.eval()
