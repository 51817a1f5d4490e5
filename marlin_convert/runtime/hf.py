"""transformers integration: the "marlin" quantization method, through transformers' public extension API
(`register_quantization_config`, `register_quantizer`, `HfQuantizer`).

Imported by `register()` only, which `import marlin_convert` arranges to run as soon as transformers'
quantizer registry (`transformers.quantizers.auto`) is imported, so `import marlin_convert` itself never
imports transformers. Before weights load, on the meta device, every `nn.Linear` of the model becomes a
`MarlinLinear` with the exact tensor shapes and dtypes of its layer, except the modules the config lists in
`modules_to_not_convert` (copied dense by `pack`) and the quantized layers `pack` could not convert, listed
in `dense_on_load`: those load their source tensors and become dense `nn.Linear` after loading. After
loading, any Marlin tensor the checkpoint did not provide is an error (transformers itself would only warn
and leave random values); a mis-shaped one already is (transformers' size-mismatch error).
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers.quantizers.auto import (
    AUTO_QUANTIZATION_CONFIG_MAPPING,
    AUTO_QUANTIZER_MAPPING,
    register_quantization_config,
    register_quantizer,
)
from transformers.quantizers.base import HfQuantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

from ..errors import CheckpointError
from .experts import EXPERT_NAMES, MarlinExperts, is_fused_experts
from .linear import MarlinLinear
from .spec import layer_spec

__all__ = ["METHOD", "MarlinConfig", "MarlinHfQuantizer", "register"]

METHOD = "marlin"
log = logging.getLogger("marlin_convert")


class MarlinConfig(QuantizationConfigMixin):
    """`quantization_config` of a marlin-convert output (see `runtime.spec` for the keys). Unknown keys are
    kept, so that `save_pretrained` writes back what was read."""

    def __init__(self, bits: int = 4, group_size: int = 128, sym: bool = True, desc_act: bool = False,
                 zero_point: str | None = None, scale_dtype: str = "float16",
                 layer_overrides: dict[str, dict[str, Any]] | None = None,
                 modules_to_not_convert: list[str] | None = None,
                 dense_on_load: dict[str, dict[str, Any]] | None = None, **kwargs: Any) -> None:
        kwargs.pop("quant_method", None)
        self.quant_method = METHOD
        self.bits, self.group_size, self.sym, self.desc_act = bits, group_size, sym, desc_act
        self.zero_point, self.scale_dtype = zero_point, scale_dtype
        self.layer_overrides = dict(layer_overrides or {})
        self.modules_to_not_convert = list(modules_to_not_convert or [])
        self.dense_on_load = dict(dense_on_load or {})
        for key, value in kwargs.items():
            setattr(self, key, value)
        if bits != 4:
            raise ValueError(f"quantization_config.bits = {bits}: marlin-convert checkpoints are 4-bit")

    def spec_source(self) -> dict[str, Any]:
        return {"group_size": self.group_size, "sym": self.sym, "desc_act": self.desc_act,
                "zero_point": self.zero_point, "scale_dtype": self.scale_dtype, "layer_overrides": self.layer_overrides}


class _SourceLayer(nn.Module):
    """Placeholder for a quantized layer `pack` left in its source format: holds those tensors (by their
    names under the layer) until the quantizer turns it into a dense `nn.Linear` after loading."""

    def __init__(self, entry: dict[str, Any], linear: nn.Linear):
        super().__init__()
        from ..dtypes import TORCH_DTYPES

        self.entry, self.weight_dtype = entry, linear.weight.dtype
        for suffix, meta in entry["tensors"].items():
            *path, leaf = suffix.split(".")
            owner: nn.Module = self
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            owner.register_buffer(leaf, torch.empty(meta["shape"], dtype=TORCH_DTYPES[meta["dtype"]], device="meta"))
        if linear.bias is not None and "bias" not in entry["tensors"]:
            self.bias = nn.Parameter(torch.empty_like(linear.bias, device="meta"), requires_grad=False)

    def to_dense(self) -> nn.Linear:
        from ..formats import Format, dequantize
        from ..layout import unpack_nibbles
        from ..formats.plan_json import plan_from_json

        plan = plan_from_json(self.entry["plan"])
        tensors = {role: self.get_buffer(suffix).cpu() for role, suffix in self.entry["roles"].items()}
        if plan.extra.get("zero_format") == "v1" and bool((unpack_nibbles(tensors["qzeros"]) == 0xF).any()):
            raise CheckpointError(f"{plan.prefix}.qzeros: GPTQ v1 zero point 16 cannot be dequantized here")
        rec = Format.get(self.entry["format"]).decode(plan, tensors)
        weight = dequantize(rec).to(self.weight_dtype)
        bias = getattr(self, "bias", None)
        dense = nn.Linear(rec.k, rec.n, bias=bias is not None, device=weight.device, dtype=self.weight_dtype)
        dense.weight = nn.Parameter(weight.to(self.get_buffer(next(iter(self.entry["roles"].values()))).device),
                                    requires_grad=False)
        if bias is not None:
            dense.bias = nn.Parameter(bias.data, requires_grad=False)
        return dense


_ST_DTYPES = {torch.int32: "I32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}


def _check_against_files(model: nn.Module, files: list[str]) -> None:
    """Every Marlin tensor of the model exists in the checkpoint with the expected shape and dtype."""
    from safetensors import safe_open

    found: dict[str, tuple[str, list[int]]] = {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            for key in f.keys():
                sl = f.get_slice(key)
                found[key] = (sl.get_dtype(), list(sl.get_shape()))
    if not found:
        return
    for name, module in model.named_modules():
        if not isinstance(module, MarlinLinear):
            continue
        for suffix, tensor in module.tensors().items():
            key, want = f"{name}.{suffix}", (_ST_DTYPES.get(tensor.dtype), list(tensor.shape))
            if key not in found:
                raise CheckpointError(f"{key}: missing from the checkpoint (a {module.spec.zero_point or 'symmetric'} "
                                      f"Marlin layer of {module.out_features}x{module.in_features} needs it)")
            if found[key] != want:
                raise CheckpointError(f"{key}: {found[key][0]} {found[key][1]} in the checkpoint, expected "
                                      f"{want[0]} {want[1]} for a {module.out_features}x{module.in_features} Marlin layer")


def _expert_names(files: Any) -> tuple[str, str, str]:
    """Per-expert projection names the checkpoint uses (Mixtral's w1/w3/w2, else gate/up/down_proj)."""
    from safetensors import safe_open

    for file in files or ():
        if str(file).endswith(".safetensors"):
            with safe_open(str(file), framework="pt") as f:
                if any(".experts." in k and k.endswith(".w1.B") for k in f.keys()):
                    return EXPERT_NAMES["w1_w3_w2"]
    return EXPERT_NAMES["gate_up_down"]


def _inside_marlin(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    return any(isinstance(model.get_submodule(".".join(parts[:i])), MarlinExperts) for i in range(1, len(parts)))


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _listed(name: str, names: set[str]) -> bool:
    """True when `name` or one of its parent modules is in `names`."""
    parts = name.split(".")
    return any(".".join(parts[:i]) in names for i in range(1, len(parts) + 1))


class MarlinHfQuantizer(HfQuantizer):
    """Loads marlin-convert outputs: swaps layers for `MarlinLinear` before loading, checks after."""

    requires_calibration = True

    def _process_model_before_weight_loading(self, model: nn.Module, **kwargs: Any) -> None:
        qc: MarlinConfig = self.quantization_config  # type: ignore[assignment]
        keep = set(qc.modules_to_not_convert)
        keep |= {k.removesuffix(".weight") for k in getattr(model, "all_tied_weights_keys", None) or {}}
        source = qc.spec_source()
        swapped = 0
        unloadable = getattr(qc, "unloadable_layers", None) or {}
        expert_names = _expert_names(kwargs.get("checkpoint_files"))
        for name, module in list(model.named_modules()):
            if is_fused_experts(module) and not _listed(name, keep):
                _set_module(model, name, MarlinExperts(module, expert_names, lambda p: layer_spec(source, p), name))
                swapped += 1
                continue
            if not isinstance(module, nn.Linear) or _inside_marlin(model, name):
                continue
            if name in unloadable:
                raise CheckpointError(f"{name}: this quantized layer was left in its source format by marlin-convert "
                                      f"({unloadable[name]}) and cannot be loaded")
            if name in qc.dense_on_load:
                _set_module(model, name, _SourceLayer(qc.dense_on_load[name], module))
            elif not _listed(name, keep):
                _set_module(model, name, MarlinLinear(module.in_features, module.out_features, layer_spec(source, name),
                                                      bias=module.bias is not None, device="meta",
                                                      dtype=module.weight.dtype))
                swapped += 1
        if swapped == 0:
            raise CheckpointError("quantization_config: no linear layer of this model is a Marlin layer")
        files = kwargs.get("checkpoint_files")
        if files:  # check before loading, naming the tensor (transformers' own size error does not)
            _check_against_files(model, [str(f) for f in files if str(f).endswith(".safetensors")])

    def _process_model_after_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        for name, module in list(model.named_modules()):
            if isinstance(module, (MarlinLinear, _SourceLayer)):
                for tname, tensor in list(module.named_buffers()) + list(module.named_parameters()):
                    if not getattr(tensor, "_is_hf_initialized", False) or tensor.is_meta:
                        raise CheckpointError(f"{name}.{tname}: missing from the checkpoint (or not loadable); "
                                              f"this Marlin layer cannot run without it")
            if isinstance(module, _SourceLayer):
                _set_module(model, name, module.to_dense())
        return model

    def _dequantize(self, model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
        from .backends import dense_weight

        for name, module in list(model.named_modules()):
            if isinstance(module, MarlinLinear):
                dt = dtype or (module.bias.dtype if module.bias is not None else torch.float16)
                dense = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                                  device=module.B.device, dtype=dt)
                dense.weight = nn.Parameter(dense_weight(module, dt), requires_grad=False)
                if module.bias is not None:
                    dense.bias = nn.Parameter(module.bias.data.to(dt), requires_grad=False)
                _set_module(model, name, dense)
        return model

    @property
    def is_trainable(self) -> bool:
        return False

    def is_serializable(self, safe_serialization: Any = None) -> bool:
        return True


def register() -> None:
    """Register "marlin" with transformers (idempotent). Leaves a foreign "marlin" registration alone."""
    quantizer = AUTO_QUANTIZER_MAPPING.get(METHOD)
    if quantizer is MarlinHfQuantizer:
        return
    if quantizer is not None or METHOD in AUTO_QUANTIZATION_CONFIG_MAPPING:
        log.warning("marlin_convert: transformers already has a %r quantization method; not replacing it", METHOD)
        return
    register_quantization_config(METHOD)(MarlinConfig)
    register_quantizer(METHOD)(MarlinHfQuantizer)
