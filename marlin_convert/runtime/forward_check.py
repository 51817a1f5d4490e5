"""`verify SRC OUT --forward`: the model-level proof. The same token batch runs through the model built
dense from the source (each quantized layer dequantized by the package's source-format decoder) and
through the converted checkpoint loaded with transformers (`MarlinLinear`, whatever backend serves it);
the relative error of the hidden states after each group of decoder layers and of the logits is reported.

Bounds: where every layer runs the reference backend (CPU, or `MARLIN_CONVERT_BACKENDS=reference`) the
converted model computes exactly what the dense one does, so the bound is 0 (bit-equal). Through the
fp16 Marlin GEMM each layer's output differs from dense fp16 by fp16 rounding of the dequantized weights
and of the kernel's partial sums (about 5e-4 relative per GEMM, see `gemm_check`), which a deep model
compounds; `MARLIN_BOUND = 2e-2` on the logits and hidden states leaves room for that and stays far below
what a wrong tile, scale or zero point gives (order 1).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..errors import MarlinConvertError

__all__ = ["MARLIN_BOUND", "EXACT_BOUND", "forward_checks", "dense_from_source"]

MARLIN_BOUND = 2e-2
EXACT_BOUND = 0.0
_GROUPS = 4


def _transformers() -> Any:
    try:
        import transformers
    except ModuleNotFoundError:
        raise MarlinConvertError("verify --forward needs transformers: pip install 'marlin-convert[transformers]'") from None
    return transformers


def dense_from_source(src: Path, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """The source model as plain transformers modules: dense tensors copied, quantized layers dequantized."""
    from ..checkpoint import open_checkpoint
    from ..formats import MARKER_FILES, Format, FormatContext, dequantize, detect_format, trivial_g_idx

    tf = _transformers()
    with open_checkpoint(src, marker_files=MARKER_FILES) as ckpt:
        cfg = dict(ckpt.config)
        cfg.pop("quantization_config", None)
        config = tf.AutoConfig.for_model(**cfg)
        with torch.device(device):  # real buffers (rotary tables) come from the model's own init
            model = tf.AutoModelForCausalLM.from_config(config, dtype=dtype)
        ctx = FormatContext(config=ckpt.config, json_files=ckpt.json_files, tensors=ckpt.specs())
        fmt: type[Format] = detect_format(ctx)
        plan = fmt.plan(ctx, ckpt.read)
        wanted = model.state_dict()
        state: dict[str, torch.Tensor] = {}
        for layer in plan.layers:
            if not layer.n:
                continue
            rec = fmt.decode(layer, {role: ckpt.read(name).to(device) for role, name in layer.sources.items()})
            g_idx = rec.g_idx if rec.g_idx is not None else trivial_g_idx(rec.k, rec.group_size)
            rec = dataclasses.replace(rec, g_idx=g_idx.to(device))
            state[f"{layer.prefix}.weight"] = dequantize(rec).to(dtype)  # on `device`: same float ops anywhere
        for name in ckpt.specs():
            if name in wanted and name not in state:
                state[name] = ckpt.read(name).to(wanted[name].dtype)
    missing = [k for k in wanted if k not in state and not k.endswith("inv_freq")]
    model.load_state_dict(state, strict=False)
    if missing:
        tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
        if set(missing) - tied:
            raise MarlinConvertError(f"{src}: the dense model needs {sorted(set(missing) - tied)[0]}, which the source lacks")
        model.tie_weights()
    return model.to(device).eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(torch.finfo(torch.float64).tiny))


def forward_checks(src: Path, out: Path, device: torch.device, *, batch: int = 2, length: int = 32,
                   seed: int = 0) -> list[dict[str, str]]:
    """One check per group of decoder layers (hidden states) and one for the logits."""
    from .. import _transformers_hook
    from . import backends

    tf = _transformers()
    _transformers_hook.install()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    dense = dense_from_source(Path(src), dtype, device)
    converted = tf.AutoModelForCausalLM.from_pretrained(str(out), dtype=dtype).to(device).eval()
    exact = device.type == "cpu" or backends.order()[0] == "reference"
    bound = EXACT_BOUND if exact else MARLIN_BOUND
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, dense.config.vocab_size, (batch, length), generator=gen).to(device)
    with torch.no_grad():
        a = converted(ids, output_hidden_states=True)
        b = dense(ids, output_hidden_states=True)
    checks = []
    hidden = list(zip(a.hidden_states[1:], b.hidden_states[1:]))
    per = max(1, -(-len(hidden) // _GROUPS))
    for start in range(0, len(hidden), per):
        stop = min(start + per, len(hidden))
        err = max(_rel(x, y) for x, y in hidden[start:stop])
        checks.append(_check(f"forward: layers {start}-{stop - 1} hidden states", err, bound))
    checks.append(_check("forward: logits", _rel(a.logits, b.logits), bound))
    return checks


def _check(name: str, err: float, bound: float) -> dict[str, str]:
    ok = err <= bound
    how = "bit-equal" if bound == 0 and ok else f"rel err {err:.2e} ({'within' if ok else 'ABOVE'} {bound:.0e})"
    return {"name": name, "status": "PASS" if ok else "FAIL", "detail": how}
