"""`MarlinLinear`: a linear layer that holds its Marlin tensors exactly as they are on disk."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import backends
from .spec import LayerSpec

__all__ = ["MarlinLinear", "TENSOR_NAMES"]

TENSOR_NAMES = ("B", "s", "z", "shift", "perm", "g_idx")
"""Suffixes of a converted layer's tensors (DESIGN §5), besides `bias`."""

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def _groups(k: int, group_size: int) -> int:
    return 1 if group_size <= 0 else -(-k // group_size)


class MarlinLinear(nn.Module):
    """`y = x @ W.T + bias` where W lives in the Marlin int4 tensors `B`, `s` (and `z` / `shift` / `perm` /
    `g_idx`), registered as buffers with the shapes and dtypes of the checkpoint, so loading copies them as
    they are and never repacks. `forward` runs the first backend of `runtime.backends` that can serve the
    layer for the input's device and dtype.

    Args:
        in_features, out_features: k and n.
        spec: group size, zero-point kind, act-order and scale dtype of this layer (`runtime.spec`).
        bias: whether the layer has a bias (kept as a float Parameter, like `nn.Linear`).
        device, dtype: where the buffers are made (the meta device while transformers builds the model) and
            the bias dtype.
    """

    def __init__(self, in_features: int, out_features: int, spec: LayerSpec, *, bias: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.spec = in_features, out_features, spec
        k, n, g = in_features, out_features, _groups(in_features, spec.group_size)
        sdt = _DTYPES[spec.scale_dtype]
        self.register_buffer("B", torch.empty((k // 16, 2 * n), dtype=torch.int32, device=device))
        self.register_buffer("s", torch.empty((g, n), dtype=sdt, device=device))
        if spec.zero_point == "int":
            self.register_buffer("z", torch.empty((g, n // 8), dtype=torch.int32, device=device))
        if spec.zero_point == "float":
            self.register_buffer("shift", torch.empty((g, n), dtype=sdt, device=device))
        if spec.act_order:
            self.register_buffer("perm", torch.empty((k,), dtype=torch.int32, device=device))
            self.register_buffer("g_idx", torch.empty((k,), dtype=torch.int32, device=device))
        if bias:
            self.bias = nn.Parameter(torch.empty(n, dtype=dtype, device=device), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self._prepared: dict[tuple[Any, ...], object] = {}
        """Per (backend, device, dtype, ...): what that backend derived once from the tensors (e.g. kernel zero
        points, launch plans)."""
        self._chosen: dict[tuple[torch.device, torch.dtype, int, bool, int], object] = {}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The Marlin tensors present, by suffix."""
        return {name: getattr(self, name) for name in TENSOR_NAMES if name in self._buffers}

    def extra_repr(self) -> str:
        s = self.spec
        return (f"in_features={self.in_features}, out_features={self.out_features}, group_size={s.group_size}, "
                f"zero_point={s.zero_point}, act_order={s.act_order}, bias={self.bias is not None}")

    def _apply(self, fn, recurse=True):  # .to() / .cuda(): derived per-device state is stale
        self._prepared.clear()
        self._chosen.clear()
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eager = x.is_cuda and not torch.cuda.is_current_stream_capturing()  # the backend rule differs (backends)
        band = backends.row_band(backends.rows_of(self, x))  # and on x's rows
        key = (x.device, x.dtype, backends.generation(), eager, band)
        backend = self._chosen.get(key)
        if backend is None:
            backend = self._chosen[key] = backends.select(self, x, eager=eager)
        return backend.forward(self, x)  # type: ignore[attr-defined]
