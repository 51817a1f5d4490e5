"""The Marlin output layout of one layer (DESIGN §5): `B`, `s`, and `z` / `perm` / `g_idx` / `shift` when needed."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Union

from ..errors import ShapeError
from ..layout import TILE
from .base import TensorSpec
from .record import LayerPlan, QuantizedLinear

if TYPE_CHECKING:
    import torch

    from .codes import RowBlocks

__all__ = ["marlin_specs", "to_marlin", "from_marlin", "act_order_perm"]


def act_order_perm(g_idx: torch.Tensor) -> torch.Tensor:
    """Stable argsort of g_idx as int32: the row order Marlin's act-order path expects."""
    import torch

    return torch.sort(g_idx.to(torch.int64), stable=True).indices.to(torch.int32)


def marlin_specs(plan: LayerPlan) -> dict[str, TensorSpec]:
    """Output tensor suffixes with dtype and shape, known from the plan before any data is read."""
    n, k, g = plan.n, plan.k, plan.num_groups
    specs = {
        "B": TensorSpec("I32", (k // TILE, 2 * n)),
        "s": TensorSpec(plan.scale_dtype_name, (g, n)),
    }
    if plan.has_zeros:
        specs["z"] = TensorSpec("I32", (g, n // 8))
    if plan.has_shift:
        specs["shift"] = TensorSpec(plan.scale_dtype_name, (g, n))
    if plan.has_perm:
        specs["perm"] = TensorSpec("I32", (k,))
        specs["g_idx"] = TensorSpec("I32", (k,))
    return specs


def _packed_blocks(rec: QuantizedLinear, perm: torch.Tensor | None) -> Iterator[torch.Tensor]:
    """Rows of `B`, a slice of k at a time (one slice for codes already on a GPU)."""
    from .codes import chunk_bounds

    codes = rec.codes
    bounds = [(0, rec.k)] if codes.device.type != "cpu" else chunk_bounds(rec.k, rec.n, align=128)
    for start, stop in bounds:
        yield codes.marlin_rows(start, stop, perm)


def to_marlin(rec: QuantizedLinear, *, stream: bool = False) -> dict[str, Union[torch.Tensor, RowBlocks]]:
    """Canonical record -> Marlin tensors keyed by suffix; with `stream`, `B` comes as row blocks."""
    import torch

    from ..layout import pack_zeros, permute_scales
    from .codes import assemble

    out: dict[str, Union[torch.Tensor, RowBlocks]] = {}
    perm = None
    if rec.g_idx is not None:
        perm = act_order_perm(rec.g_idx.cpu())
        out["perm"] = perm
        out["g_idx"] = rec.g_idx.to(torch.int32)
    out["B"] = assemble(_packed_blocks(rec, perm), stream=stream)
    out["s"] = permute_scales(rec.scales, group_size=rec.group_size, k=rec.k)
    if rec.zeros is not None:
        out["z"] = pack_zeros(rec.zeros)
    if rec.shift is not None:
        out["shift"] = permute_scales(rec.shift, group_size=rec.group_size, k=rec.k)
    return {name: out[name] for name in ("B", "s", "z", "shift", "perm", "g_idx") if name in out}


def from_marlin(tensors: Mapping[str, torch.Tensor], plan: LayerPlan,
                b_ready: Callable[[int], None] | None = None) -> QuantizedLinear:
    """Marlin tensors keyed by suffix -> the canonical record (exact inverse of `to_marlin`); `b_ready`: see
    `MarlinCodes` (a `B` still being read)."""
    import torch

    from ..layout import unpack_zeros, unpermute_scales
    from .codes import MarlinCodes

    n, k, gs = plan.n, plan.k, plan.group_size
    perm = g_idx = None
    if "perm" in tensors:
        perm = tensors["perm"].to(torch.int64)
        if perm.shape != (k,) or not torch.equal(torch.sort(perm).values.cpu(), torch.arange(k)):
            raise ShapeError(f"{plan.prefix}.perm is not a permutation of {k} rows")
        g_idx = tensors["g_idx"]
    codes = MarlinCodes(tensors["B"], n=n, k=k, perm=perm, ready=b_ready)
    return QuantizedLinear(
        codes=codes,
        scales=unpermute_scales(tensors["s"], group_size=gs, k=k),
        zeros=unpack_zeros(tensors["z"]) if "z" in tensors else None,
        shift=unpermute_scales(tensors["shift"], group_size=gs, k=k) if "shift" in tensors else None,
        g_idx=g_idx,
        group_size=gs,
        extra=dict(plan.extra),
    )
