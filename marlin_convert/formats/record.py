"""The canonical record every source format decodes into (DESIGN §3)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..dtypes import DTYPE_SIZES

if TYPE_CHECKING:
    import torch

    from .codes import Codes

__all__ = ["QuantizedLinear", "LayerPlan", "trivial_g_idx", "dequantize"]


@dataclass(frozen=True)
class QuantizedLinear:
    """One int4 linear layer, independent of its on-disk format.

    `W[n, k] = (codes[n, k] - zero) * scales[group(k), n]` with zero = 8 when `zeros` is None,
    or `scales * codes - shift` when `shift` is set (optimum-quanto).
    """

    codes: Codes
    """`[n, k]` codes, values 0..15, as a lazy view (`codes.full()` gives the uint8 tensor)."""
    scales: torch.Tensor
    """float16 / bfloat16 `[g, n]`, dtype as in the source."""
    zeros: torch.Tensor | None
    """uint8 `[g, n]` unsigned true zero points, or None (symmetric: implied 8)."""
    shift: torch.Tensor | None
    """float `[g, n]` (optimum-quanto only), or None."""
    g_idx: torch.Tensor | None
    """int32 `[k]` group of each input row, or None when it is `k // group_size`."""
    group_size: int
    """32, 64, 128 or -1 (one group spanning k)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable facts the source format needs to re-encode its bytes exactly."""

    @property
    def n(self) -> int:
        return self.codes.n

    @property
    def k(self) -> int:
        return self.codes.k

    @property
    def num_groups(self) -> int:
        return int(self.scales.shape[0])

    @classmethod
    def of_plan(cls, plan: LayerPlan, codes: Codes, scales: torch.Tensor, *, zeros: torch.Tensor | None = None,
                shift: torch.Tensor | None = None, g_idx: torch.Tensor | None = None) -> QuantizedLinear:
        """The record of a planned layer: group size and extra facts come from the plan."""
        return cls(codes, scales, zeros, shift, g_idx, plan.group_size, dict(plan.extra))

    def zeros_or_implied(self) -> torch.Tensor:
        """uint8 `[g, n]` true zero points: `zeros`, or 8 everywhere for a symmetric layer."""
        if self.zeros is not None:
            return self.zeros
        import torch

        return torch.full((self.num_groups, self.n), 8, dtype=torch.uint8)


class _ScaleDtype:
    """`LayerPlan.scale_dtype`: a torch dtype to whoever reads it, but held as its safetensors name ("F16"),
    so that planning imports no torch. Set it to a torch dtype or a name; float16 by default."""

    def __get__(self, plan: LayerPlan | None, owner: type | None = None) -> Any:
        if plan is None:
            return "F16"  # the dataclass default
        from ..dtypes import TORCH_DTYPES

        return TORCH_DTYPES[plan.scale_dtype_name]

    def __set__(self, plan: LayerPlan, value: Any) -> None:
        if not isinstance(value, str):
            from ..dtypes import DTYPE_NAMES

            value = DTYPE_NAMES[value]
        elif value not in DTYPE_SIZES:
            raise KeyError(value)
        plan.__dict__["scale_dtype_name"] = value


@dataclass
class LayerPlan:
    """What a format found for one quantized layer before reading its big tensors.

    `sources` maps a format role (e.g. "qweight") to the tensor name in the checkpoint. When
    `reason` is set the layer is not converted and its tensors are copied verbatim.
    """

    prefix: str
    format: str
    sources: dict[str, str]
    n: int = 0
    k: int = 0
    group_size: int = -1
    num_groups: int = 1
    scale_dtype: torch.dtype = _ScaleDtype()  # type: ignore[assignment]
    has_zeros: bool = False
    has_shift: bool = False
    has_perm: bool = False
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def eligible(self) -> bool:
        return self.reason is None

    @property
    def scale_dtype_name(self) -> str:
        """`scale_dtype` as its safetensors name ("F16", "BF16"), read without importing torch."""
        return self.__dict__["scale_dtype_name"]


def trivial_g_idx(k: int, group_size: int) -> torch.Tensor:
    """The g_idx of a layer without act-order: `k // group_size` (all zeros when one group spans k)."""
    import torch

    if group_size <= 0:
        return torch.zeros(k, dtype=torch.int32)
    return (torch.arange(k, dtype=torch.int32) // group_size).to(torch.int32)


def dequantize(rec: QuantizedLinear) -> torch.Tensor:
    """Float32 `[n, k]` weights of a record, with the same float ops for every format."""
    import torch

    g_idx = rec.g_idx if rec.g_idx is not None else trivial_g_idx(rec.k, rec.group_size)
    g_idx = g_idx.to(torch.int64)
    scales = rec.scales.float().t().index_select(1, g_idx)  # [n, k]
    codes = rec.codes.full().float()
    if rec.shift is not None:
        return scales * codes - rec.shift.float().t().index_select(1, g_idx)
    zeros = rec.zeros.float().t().index_select(1, g_idx) if rec.zeros is not None else 8.0
    return (codes - zeros) * scales
