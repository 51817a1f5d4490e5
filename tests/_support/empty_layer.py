"""A GPTQ checkpoint with one layer of zero rows or columns (and a plain tensor), for the round-trip refusals."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

__all__ = ["write_empty_layer_checkpoint"]


def write_empty_layer_checkpoint(root: Path, *, k: int, n: int) -> None:
    """GPTQ layer `l` with K=`k`, N=`n` (either may be 0), group size 128, symmetric, no act-order."""
    root.mkdir(parents=True, exist_ok=True)
    groups = k // 128
    tensors = {"l.qweight": torch.zeros(k // 8, n, dtype=torch.int32), "l.scales": torch.ones(groups, n, dtype=torch.float16),
               "l.qzeros": torch.full((groups, n // 8), 0x77777777, dtype=torch.int32),
               "l.g_idx": torch.zeros(k, dtype=torch.int32), "norm.weight": torch.ones(8, dtype=torch.float16)}
    save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})
    qc = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": False}
    (root / "config.json").write_text(json.dumps({"quantization_config": qc}))
