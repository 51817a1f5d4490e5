"""Per-expert Marlin layers for transformers' fused MoE experts modules.

transformers 5 keeps a sparse-MoE block's experts as two 3-D parameters, `gate_up_proj` `[E, 2I, H]` and
`down_proj` `[E, H, I]` (Mixtral, Qwen2/3-MoE, DeepSeek, ... `forward(hidden_states, top_k_index,
top_k_weights)`), and merges per-expert `experts.{e}.gate_proj.weight` keys into them on load. Int4
checkpoints are per expert, and so is pack's output (`experts.{e}.gate_proj.B`, ...), which that merge
does not touch. `MarlinExperts` replaces such a module with one `MarlinLinear` per expert and projection,
named like the checkpoint, and computes what the fused module computes.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .linear import MarlinLinear
from .spec import LayerSpec

__all__ = ["MarlinExperts", "is_fused_experts", "EXPERT_NAMES"]

EXPERT_NAMES = {"gate_up_down": ("gate_proj", "up_proj", "down_proj"), "w1_w3_w2": ("w1", "w3", "w2")}
"""Per-expert projection names (gate, up, down) used by checkpoints: Qwen/DeepSeek style, Mixtral style."""


def is_fused_experts(module: nn.Module) -> bool:
    """True for a transformers experts module with 3-D `gate_up_proj` [E, 2I, H] and `down_proj` [E, H, I]."""
    gu, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
    if not isinstance(gu, nn.Parameter) or not isinstance(down, nn.Parameter) or gu.dim() != 3 or down.dim() != 3:
        return False
    e, two_i, h = gu.shape
    return tuple(down.shape) == (e, h, two_i // 2) and hasattr(module, "act_fn") and getattr(module, "gate_up_proj_bias", None) is None


class _Expert(nn.Module):
    def __init__(self, names: tuple[str, str, str], layers: tuple[MarlinLinear, MarlinLinear, MarlinLinear]):
        super().__init__()
        self.names = names
        for name, layer in zip(names, layers):
            self.add_module(name, layer)

    def forward(self, x: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        gate, up, down = (getattr(self, n) for n in self.names)
        return down(act(gate(x)) * up(x))


class MarlinExperts(nn.ModuleList):
    """Drop-in for a fused experts module: `forward(hidden_states, top_k_index, top_k_weights)`."""

    def __init__(self, fused: nn.Module, names: tuple[str, str, str], spec_of: Callable[[str], LayerSpec],
                 prefix: str) -> None:
        e, two_i, h = fused.gate_up_proj.shape
        i = two_i // 2
        dtype = fused.gate_up_proj.dtype
        experts = []
        for idx in range(e):
            p = f"{prefix}.{idx}"
            layers = (MarlinLinear(h, i, spec_of(f"{p}.{names[0]}"), device="meta", dtype=dtype),
                      MarlinLinear(h, i, spec_of(f"{p}.{names[1]}"), device="meta", dtype=dtype),
                      MarlinLinear(i, h, spec_of(f"{p}.{names[2]}"), device="meta", dtype=dtype))
            experts.append(_Expert(names, layers))
        super().__init__(experts)
        self.num_experts = e
        self.act_fn = fused.act_fn

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        final = torch.zeros_like(hidden_states)
        with torch.no_grad():
            mask = torch.nn.functional.one_hot(top_k_index, num_classes=self.num_experts + 1).permute(2, 1, 0)
            hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
        for idx in hit.flatten().tolist():
            if idx == self.num_experts:
                continue
            top_k_pos, token_idx = torch.where(mask[idx])
            out = self[idx](hidden_states[token_idx], self.act_fn)
            out = out * top_k_weights[token_idx, top_k_pos, None]
            final.index_add_(0, token_idx, out.to(final.dtype))
        return final
