"""Writes synthetic GPTQ checkpoints the way AutoGPTQ packs them (numpy loops, official safetensors
writer), sharing no code with the package under test."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


@dataclass
class GptqLayerTruth:
    codes: np.ndarray  # uint8 [K, N]
    zeros: np.ndarray  # true zeros uint8 [G, N]
    scales: torch.Tensor  # [G, N]
    g_idx: np.ndarray  # int32 [K]


def pack_rows(q: np.ndarray) -> np.ndarray:
    """AutoGPTQ qweight: 8 consecutive K rows per int32, lowest row in the lowest nibble."""
    k, n = q.shape
    out = np.zeros((k // 8, n), dtype=np.uint32)
    for i in range(8):
        out |= q[i::8, :].astype(np.uint32) << (4 * i)
    return out.view(np.int32)


def pack_cols(z: np.ndarray) -> np.ndarray:
    """AutoGPTQ qzeros: 8 consecutive N columns per int32."""
    g, n = z.shape
    pad = (-n) % 8
    z = np.pad(z, ((0, 0), (0, pad)))
    out = np.zeros((g, z.shape[1] // 8), dtype=np.uint32)
    for i in range(8):
        out |= (z[:, i::8].astype(np.uint32) & 0xF) << (4 * i)
    return out.view(np.int32)


def make_layer(rng: np.random.Generator, n: int, k: int, group_size: int, *, sym: bool, act_order: bool,
               scale_dtype: torch.dtype) -> GptqLayerTruth:
    groups = 1 if group_size == -1 else -(-k // group_size)
    codes = rng.integers(0, 16, size=(k, n), dtype=np.uint8)
    zeros = np.full((groups, n), 8, np.uint8) if sym else rng.integers(1, 16, size=(groups, n), dtype=np.uint8)
    scales = torch.from_numpy(rng.uniform(1e-3, 2e-2, size=(groups, n)).astype(np.float32)).to(scale_dtype)
    g_idx = (np.arange(k) // (k if group_size == -1 else group_size)).astype(np.int32)
    if act_order:
        g_idx = g_idx[rng.permutation(k)]
    return GptqLayerTruth(codes, zeros, scales, g_idx)


def layer_tensors(prefix: str, t: GptqLayerTruth, *, v2: bool, with_g_idx: bool = True,
                  bias: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    stored = t.zeros if v2 else (t.zeros.astype(np.int16) - 1) % 16
    out = {
        f"{prefix}.qweight": torch.from_numpy(pack_rows(t.codes)),
        f"{prefix}.qzeros": torch.from_numpy(pack_cols(stored.astype(np.uint8))),
        f"{prefix}.scales": t.scales,
    }
    if with_g_idx:
        out[f"{prefix}.g_idx"] = torch.from_numpy(t.g_idx.copy())
    if bias is not None:
        out[f"{prefix}.bias"] = bias
    return out


def gptq_config(group_size: int, *, sym: bool, desc_act: bool, v2: bool) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 256,
        "quantization_config": {
            "quant_method": "gptq",
            "bits": 4,
            "group_size": group_size,
            "desc_act": desc_act,
            "sym": sym,
            "checkpoint_format": "gptq_v2" if v2 else "gptq",
        },
    }


def write_checkpoint(root: Path, tensors: dict[str, torch.Tensor], config: dict, *, shards: int = 1,
                     extra_files: dict[str, str] | None = None) -> dict[str, GptqLayerTruth]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config, indent=2))
    for name, text in (extra_files or {}).items():
        (root / name).write_text(text)
    names = sorted(tensors)
    if shards == 1:
        save_file({n: tensors[n].contiguous() for n in names}, str(root / "model.safetensors"), metadata={"format": "pt"})
        return {}
    weight_map = {}
    chunks = np.array_split(np.arange(len(names)), shards)
    for i, idx in enumerate(chunks):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {names[j]: tensors[names[j]].contiguous() for j in idx}
        save_file(part, str(root / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return {}


def make_gptq_checkpoint(root: Path, *, seed: int = 0, group_size: int = 128, sym: bool = True, act_order: bool = False,
                         v2: bool = False, scale_dtype: torch.dtype = torch.float16, bias: bool = False, shards: int = 1,
                         ineligible: bool = False, config_v2: bool | None = None, with_g_idx: bool = True,
                         ) -> dict[str, GptqLayerTruth]:
    """A two-block toy model; returns the ground truth of each quantized layer by prefix."""
    rng = np.random.default_rng(seed)
    shapes = {"self_attn.q_proj": (256, 256), "self_attn.o_proj": (256, 256), "mlp.up_proj": (512, 256), "mlp.down_proj": (256, 512)}
    tensors: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": torch.from_numpy(rng.standard_normal((100, 256)).astype(np.float32)).to(torch.bfloat16),
        "model.norm.weight": torch.ones(256, dtype=torch.float16),
        "lm_head.weight": torch.from_numpy(rng.standard_normal((100, 256)).astype(np.float32)).to(torch.float16),
    }
    truth = {}
    for block in range(2):
        for name, (n, k) in shapes.items():
            prefix = f"model.layers.{block}.{name}"
            t = make_layer(rng, n, k, group_size, sym=sym, act_order=act_order, scale_dtype=scale_dtype)
            b = torch.from_numpy(rng.standard_normal(n).astype(np.float32)).to(torch.float16) if bias else None
            tensors.update(layer_tensors(prefix, t, v2=v2, with_g_idx=with_g_idx, bias=b))
            truth[prefix] = t
        tensors[f"model.layers.{block}.input_layernorm.weight"] = torch.ones(256, dtype=torch.float16)
    if ineligible:
        prefix = "model.layers.0.mlp.odd_proj"  # N = 96: not a multiple of 64
        t = make_layer(rng, 96, 256, group_size, sym=sym, act_order=False, scale_dtype=scale_dtype)
        tensors.update(layer_tensors(prefix, t, v2=v2, with_g_idx=with_g_idx))
        truth[prefix] = t
    cfg = gptq_config(group_size, sym=sym, desc_act=act_order, v2=v2 if config_v2 is None else config_v2)
    write_checkpoint(root, tensors, cfg, shards=shards,
                     extra_files={"tokenizer_config.json": '{"model_max_length": 64}\n', "generation_config.json": "{}\n"})
    return truth
