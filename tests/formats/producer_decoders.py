"""Test-side decoders of each producer's files, following each producer's documented formula
(FORMATS.md), in numpy, sharing no code with the package. Each returns, per quantized layer, the
unsigned codes `[N, K]`, the g_idx, and the float32 dequantized weights `[N, K]`."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors.torch import load_file

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


@dataclass
class Decoded:
    codes: np.ndarray  # uint8 [N, K], the unsigned stored code
    g_idx: np.ndarray  # int64 [K]
    weight: np.ndarray  # float32 [N, K]
    group_size: int


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.float().numpy()


def _nibbles_rows(words: np.ndarray) -> np.ndarray:
    """[r, c] int32 -> [8r, c]: row 8r+i = nibble i (GPTQ qweight, packed along dim 0)."""
    w = words.astype(np.int64) & 0xFFFFFFFF
    out = np.zeros((w.shape[0] * 8, w.shape[1]), np.uint8)
    for i in range(8):
        out[i::8] = (w >> (4 * i)) & 0xF
    return out


def _nibbles_cols(words: np.ndarray, order=range(8)) -> np.ndarray:
    """[r, c] int32 -> [r, 8c]: column 8c + order[i] = nibble i."""
    w = words.astype(np.int64) & 0xFFFFFFFF
    out = np.zeros((w.shape[0], w.shape[1] * 8), np.uint8)
    for i, col in enumerate(order):
        out[:, col::8] = (w >> (4 * i)) & 0xF
    return out


def _config(root: Path) -> dict:
    return json.loads((root / "config.json").read_text())


def _layers(root: Path, suffix: str) -> Iterator[tuple[str, str, dict[str, torch.Tensor]]]:
    """(tensor name, layer prefix, all tensors) for each tensor of model.safetensors ending in `suffix`."""
    t = load_file(str(root / "model.safetensors"))
    for name in t:
        if name.endswith(suffix):
            yield name, name[: -len(suffix)], t


def decode_gptq(root: Path, skip: frozenset[str] = frozenset()) -> dict[str, Decoded]:
    """GPTQ layers, except the `skip` prefixes (layers a `dynamic` rule keeps at another bit width)."""
    qc = _config(root)["quantization_config"]
    v2 = qc.get("checkpoint_format", qc.get("format")) == "gptq_v2"
    out = {}
    for name, p, t in _layers(root, ".qweight"):
        if p in skip:
            continue
        q = _nibbles_rows(t[name].numpy())  # [K, N]
        k, n = q.shape
        gs = qc["group_size"] if qc["group_size"] != -1 else k
        zeros = _nibbles_cols(t[p + ".qzeros"].numpy())[:, :n].astype(np.float32)
        if not v2:
            zeros = zeros + 1  # AutoGPTQ v1: stored zero - 1
        g_idx = t[p + ".g_idx"].numpy().astype(np.int64) if p + ".g_idx" in t else np.arange(k) // gs
        s = _f32(t[p + ".scales"])
        w = s[g_idx, :] * (q.astype(np.float32) - zeros[g_idx, :])  # [K, N]
        out[p] = Decoded(np.ascontiguousarray(q.T), g_idx, np.ascontiguousarray(w.T), qc["group_size"])
    return out


def decode_awq(root: Path) -> dict[str, Decoded]:
    qc = _config(root)["quantization_config"]
    out = {}
    for name, p, t in _layers(root, ".qweight"):
        q = _nibbles_cols(t[name].numpy(), AWQ_ORDER)  # [K, N]
        k, n = q.shape
        gs = qc["group_size"]
        z = _nibbles_cols(t[p + ".qzeros"].numpy(), AWQ_ORDER).astype(np.float32)
        g_idx = np.arange(k) // gs
        w = (q.astype(np.float32) - z[g_idx]) * _f32(t[p + ".scales"])[g_idx]
        out[p] = Decoded(np.ascontiguousarray(q.T), g_idx, np.ascontiguousarray(w.T), gs)
    return out


def decode_compressed_tensors(root: Path) -> dict[str, Decoded]:
    qc = _config(root)["quantization_config"]
    args = next(iter(qc["config_groups"].values()))["weights"]
    out = {}
    for name, p, t in _layers(root, ".weight_packed"):
        n, k = t[p + ".weight_shape"].tolist()
        u = _nibbles_cols(t[name].numpy())[:, :k]  # [N, K], q + 8
        q = u.astype(np.float32) - 8
        gs = args["group_size"] if args["strategy"] == "group" else k
        g_idx = np.arange(k) // gs
        zq = np.zeros((n, k // gs), np.float32)
        if p + ".weight_zero_point" in t:
            zq = _nibbles_rows(t[p + ".weight_zero_point"].numpy())[:n].astype(np.float32) - 8  # [N, G]
        s = _f32(t[p + ".weight_scale"])  # [N, G]
        w = (q - zq[:, g_idx]) * s[:, g_idx]
        out[p] = Decoded(u, g_idx, w, gs if args["strategy"] == "group" else -1)
    return out


def decode_quanto(root: Path) -> dict[str, Decoded]:
    cfg = _config(root)
    out = {}
    shapes = {"q_proj": (cfg["num_attention_heads"] * cfg["head_dim"], cfg["hidden_size"]),
              "k_proj": (cfg["num_key_value_heads"] * cfg["head_dim"], cfg["hidden_size"]),
              "v_proj": (cfg["num_key_value_heads"] * cfg["head_dim"], cfg["hidden_size"]),
              "o_proj": (cfg["hidden_size"], cfg["num_attention_heads"] * cfg["head_dim"]),
              "gate_proj": (cfg["intermediate_size"], cfg["hidden_size"]),
              "up_proj": (cfg["intermediate_size"], cfg["hidden_size"]),
              "down_proj": (cfg["hidden_size"], cfg["intermediate_size"])}
    for name, p, t in _layers(root, ".weight._data._data"):
        n, k = shapes[p.rsplit(".", 1)[1]]
        d = t[name].numpy()
        rows = np.concatenate([d & 0xF, d >> 4], axis=0)  # quanto PackedTensor: halves along dim 0
        gs = rows.shape[1]
        q = rows.reshape(n, k)
        s = _f32(t[p + ".weight._scale"]).reshape(n, k // gs)
        shift = _f32(t[p + ".weight._shift"]).reshape(n, k // gs)
        g_idx = np.arange(k) // gs
        w = s[:, g_idx] * q.astype(np.float32) - shift[:, g_idx]
        out[p] = Decoded(np.ascontiguousarray(q), g_idx, w, gs)
    return out


AUTOROUND_PACKINGS = {
    # packing_format -> (word layout, added to the stored zero), from auto-round 0.16.1's
    # auto_round_extension/torch/qlinear_torch_zp.py (stores zero - 1, forward adds 1),
    # qlinear_torch.py (stores the zero) and export_to_awq/utils.py (AutoAWQ's GEMM layout)
    "auto_round:auto_gptq": ("gptq", 1),
    "auto_round": ("gptq", 0),
    "auto_round:gptqmodel": ("gptq", 0),
    "auto_round:auto_awq": ("awq", 0),
}


def autoround_layer_bits(qc: dict, prefix: str) -> int:
    """A layer's bit width: its exact `extra_config` entry, else the top level (the fixtures use exact names)."""
    return (qc.get("extra_config") or {}).get(prefix, {}).get("bits", qc["bits"])


def decode_autoround(root: Path) -> dict[str, Decoded]:
    """The 4-bit layers of an auto-round `quant_method: "auto-round"` checkpoint."""
    qc = json.loads((root / "config.json").read_text())["quantization_config"]
    layout, zero_offset = AUTOROUND_PACKINGS[qc["packing_format"]]
    t = load_file(str(root / "model.safetensors"))
    out = {}
    for name in t:
        if not name.endswith(".qweight"):
            continue
        p = name[: -len(".qweight")]
        if autoround_layer_bits(qc, p) != 4:
            continue
        gs = (qc.get("extra_config") or {}).get(p, {}).get("group_size", qc["group_size"])
        if layout == "gptq":
            q = _nibbles_rows(t[name].numpy())  # [K, N]
            z = _nibbles_cols(t[p + ".qzeros"].numpy()).astype(np.float32) + zero_offset
        else:
            q = _nibbles_cols(t[name].numpy(), AWQ_ORDER)
            z = _nibbles_cols(t[p + ".qzeros"].numpy(), AWQ_ORDER).astype(np.float32)
        k = q.shape[0]
        g_idx = t[p + ".g_idx"].numpy().astype(np.int64) if p + ".g_idx" in t else np.arange(k) // (k if gs == -1 else gs)
        w = (q.astype(np.float32) - z[g_idx]) * _f32(t[p + ".scales"])[g_idx]
        out[p] = Decoded(np.ascontiguousarray(q.T), g_idx, np.ascontiguousarray(w.T), gs)
    return out
