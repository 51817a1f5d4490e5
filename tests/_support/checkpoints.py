"""Synthetic checkpoints: GPTQ layers packed the way AutoGPTQ packs them (numpy loops), written by the
official safetensors writer, sharing no code with the package under test. The tests use the small toy
model of `make_gptq_checkpoint`; the benchmarks write big ones through `ShardedCheckpointWriter`."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .words import pack_cols, pack_rows


@dataclass
class GptqLayerTruth:
    codes: np.ndarray  # uint8 [K, N]
    zeros: np.ndarray  # true zeros uint8 [G, N]
    scales: torch.Tensor  # [G, N]
    g_idx: np.ndarray  # int32 [K]


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


def gptq_config(group_size: int, *, sym: bool, desc_act: bool, v2: bool, hidden_size: int = 256) -> dict:
    """A Llama config.json with a GPTQ int4 quantization_config."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden_size,
        "quantization_config": {
            "quant_method": "gptq",
            "bits": 4,
            "group_size": group_size,
            "desc_act": desc_act,
            "sym": sym,
            "checkpoint_format": "gptq_v2" if v2 else "gptq",
        },
    }


class ShardedCheckpointWriter:
    """Writes a checkpoint directory shard by shard (so a big one never sits whole in memory): each
    `add_shard` writes one safetensors file now; `close` names the files `model-0000i-of-0000n` (or
    `model.safetensors` when there is one) and writes config.json and, for several shards, the index."""

    def __init__(self, root: Path, config: dict, *, extra_files: dict[str, str] | None = None):
        self.root, self.config = root, config
        root.mkdir(parents=True, exist_ok=True)
        for name, text in (extra_files or {}).items():
            (root / name).write_text(text)
        self._shards: list[list[str]] = []
        self.total_size = 0
        self.largest = 0

    def add_shard(self, tensors: dict[str, torch.Tensor]) -> None:
        save_file({n: t.contiguous() for n, t in tensors.items()}, str(self._part(len(self._shards))), metadata={"format": "pt"})
        self._shards.append(list(tensors))
        sizes = [t.numel() * t.element_size() for t in tensors.values()]
        self.total_size += sum(sizes)
        self.largest = max([self.largest, *sizes])

    def _part(self, i: int) -> Path:
        return self.root / f"part-{i:05d}.safetensors.tmp"

    def close(self) -> list[str]:
        """Final shard names, in order."""
        count = len(self._shards)
        names = ["model.safetensors"] if count == 1 else [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        for i, name in enumerate(names):
            self._part(i).rename(self.root / name)
        (self.root / "config.json").write_text(json.dumps(self.config, indent=2))
        if count > 1:
            weight_map = {t: name for name, tensors in zip(names, self._shards) for t in tensors}
            index = {"metadata": {"total_size": self.total_size}, "weight_map": weight_map}
            (self.root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        return names


def write_checkpoint(root: Path, tensors: dict[str, torch.Tensor], config: dict, *, shards: int = 1,
                     extra_files: dict[str, str] | None = None) -> None:
    """All `tensors`, in name order, split into `shards` files of about as many tensors each."""
    writer = ShardedCheckpointWriter(root, config, extra_files=extra_files)
    names = sorted(tensors)
    for idx in np.array_split(np.arange(len(names)), shards):
        writer.add_shard({names[j]: tensors[names[j]] for j in idx})
    writer.close()


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
