"""The output's model card (README.md); the source's own card is set aside by `output_files`."""
from __future__ import annotations

import json
from typing import Any

__all__ = ["CARD_NAME", "model_card"]

CARD_NAME = "README.md"


def model_card(*, source: str, source_format: str, version: str, converted: int, unconverted: list[str],
               quantization_config: dict[str, Any], source_card: str | None) -> str:
    """README.md of a converted checkpoint: how it was made and how to run it."""
    qc = {k: v for k, v in quantization_config.items() if k in ("quant_method", "bits", "group_size", "sym", "desc_act")}
    kept = f"\nThe source's own model card is kept as `{source_card}`.\n" if source_card else ""
    left = (f"{len(unconverted)} quantized or linear modules stayed dense or in their source format "
            f"(listed in `config.json` `quantization_config.modules_to_not_convert`).\n") if unconverted else ""
    return f"""---
library_name: transformers
tags:
- marlin
- int4
- marlin-convert
---

# Marlin int4 checkpoint

Converted from `{source}` ({source_format}) by marlin-convert {version}: {converted} linear layers repacked
losslessly into the Marlin int4 layout (`B`, `s`, and `z` / `shift` / `perm` / `g_idx` where needed).
{left}{kept}
`quantization_config`: `{json.dumps(qc)}`

## Load it

```python
import torch
import marlin_convert  # first: registers the "marlin" quantization method with transformers
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained("<this directory>", device_map="cuda", dtype=torch.float16)
```

On a CUDA GPU the layers run a Marlin GEMM straight from these tensors: optimum-quanto's for float16
(`pip install 'marlin-convert[transformers,gpu-verify]'`), else marlin-convert's Triton kernel (float16 and
bfloat16, no compiler); on the CPU they dequantize and run exactly. `marlin-convert unpack` restores the source checkpoint byte for byte; `marlin-convert verify
SOURCE THIS --forward` compares the logits of both models.
"""
