"""Run converted checkpoints: `MarlinLinear` and its backends (a layer above `layout/`, beside `pipeline`).

    >>> import marlin_convert                       # registers "marlin" with transformers
    >>> from transformers import AutoModelForCausalLM
    >>> model = AutoModelForCausalLM.from_pretrained("ckpt-marlin", device_map="cuda", dtype=torch.float16)  # doctest: +SKIP

Backends (`runtime.backends`, in this order): "quanto" (optimum-quanto's Marlin GEMM, CUDA, float16
activations), "triton" (our Triton Marlin GEMM, `runtime.triton_gemm`: CUDA, float16/bfloat16, every group size)
and "reference" (dequantize from the Marlin tensors, then `F.linear`; any device; bit-equal to the dense model
built from the source's dequantized weights in the same dtype).
"""
from __future__ import annotations

from .backends import BACKENDS, DEFAULT_ORDER, Backend, order, set_order
from .dequant import dequantize_marlin
from .linear import MarlinLinear
from .spec import LayerSpec, describe_layers, layer_spec

__all__ = ["MarlinLinear", "LayerSpec", "describe_layers", "layer_spec", "dequantize_marlin", "Backend", "BACKENDS",
           "DEFAULT_ORDER", "order", "set_order"]
