"""The format interface and its registry (after compressed-tensors' RegistryMixin)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from ..errors import UnknownFormatError
from ..tensor_spec import TensorSpec
from .record import LayerPlan, QuantizedLinear

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["FormatName", "TensorSpec", "FormatContext", "FormatPlan", "Format", "TensorReader", "normalize_name"]


class FormatName(str, Enum):
    """Registered source formats; the value is also the CLI spelling."""

    GPTQ = "gptq"
    AWQ = "awq"
    COMPRESSED_TENSORS = "compressed_tensors"
    QUANTO = "quanto"
    AUTO_ROUND = "auto_round"


def normalize_name(name: str) -> str:
    """`Compressed-Tensors` and `compressed tensors` both become `compressed_tensors`."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


@dataclass
class FormatContext:
    """What a format may look at: parsed JSON files and tensor headers, never the files themselves."""

    config: dict[str, Any]
    json_files: dict[str, Any]
    tensors: Mapping[str, TensorSpec]

    @property
    def quantization_config(self) -> dict[str, Any] | None:
        qc = self.config.get("quantization_config")
        return qc if isinstance(qc, dict) else None

    def quantization_config_of(self, method: str) -> dict[str, Any] | None:
        """config.json's `quantization_config` when its `quant_method` is `method` (any case), else None."""
        qc = self.quantization_config
        return qc if qc is not None and str(qc.get("quant_method", "")).lower() == method else None


@dataclass
class FormatPlan:
    """A format's view of a whole checkpoint: its quantized layers, warnings, and the output config summary."""

    layers: list[LayerPlan]
    warnings: list[str] = field(default_factory=list)
    source_quantization_config: dict[str, Any] | None = None


TensorReader = Callable[[str], "torch.Tensor | np.ndarray"]
"""Reads one tensor by name (used by `plan` for small tensors such as zero points and g_idx): a CPU torch
tensor or a numpy array; `plan` looks at it through `numpy.asarray`, so planning itself needs no torch."""


class Format:
    """Base of every source format. Subclasses hold only classmethods and are never instantiated."""

    name: ClassVar[str]
    quant_method: ClassVar[str | None] = None
    """config.json's `quantization_config.quant_method` that alone marks this format (see `source_config`)."""
    marker_files: ClassVar[tuple[str, ...]] = ()
    """JSON files besides config.json that say a checkpoint is in this format (read for `FormatContext.json_files`)."""
    _registry: ClassVar[dict[str, type[Format]]] = {}

    @classmethod
    def register(cls, name: FormatName) -> Callable[[type[Format]], type[Format]]:
        def wrap(sub: type[Format]) -> type[Format]:
            key = normalize_name(name.value)
            if key in Format._registry and Format._registry[key] is not sub:
                raise RuntimeError(f"format {key!r} is already registered by {Format._registry[key].__name__}")
            sub.name = key
            Format._registry[key] = sub
            return sub

        return wrap

    @classmethod
    def all_marker_files(cls) -> tuple[str, ...]:
        """Every registered format's marker files, in registration order."""
        return tuple(dict.fromkeys(f for fmt in Format._registry.values() for f in fmt.marker_files))

    @classmethod
    def get(cls, name: str) -> type[Format]:
        key = normalize_name(name)
        try:
            return Format._registry[key]
        except KeyError:
            known = ", ".join(sorted(Format._registry))
            raise UnknownFormatError(f"unknown format {name!r} (known: {known})") from None

    @classmethod
    def source_config(cls, ctx: FormatContext) -> dict[str, Any] | None:
        """This format's settings in the checkpoint (its config.json section or marker file), or None when
        the checkpoint is not written in this format. By default: the `quantization_config` whose
        `quant_method` is the class's `quant_method`."""
        if cls.quant_method is None:
            raise NotImplementedError
        return ctx.quantization_config_of(cls.quant_method)

    @classmethod
    def detected_config(cls, ctx: FormatContext) -> dict[str, Any]:
        """`source_config` of a checkpoint already detected as this format (never None)."""
        found = cls.source_config(ctx)
        assert found is not None, f"{cls.name}: plan() called on a checkpoint of another format"
        return found

    @classmethod
    def detect(cls, ctx: FormatContext) -> bool:
        """True when this checkpoint is written in this format (config markers only)."""
        return cls.source_config(ctx) is not None

    @classmethod
    def plan(cls, ctx: FormatContext, read: TensorReader) -> FormatPlan:
        """Find the quantized layers, check their tensors, and say which can be converted and why not.

        Raises: CheckpointError for malformed layers (missing or mis-shaped tensors),
        UnknownFormatError for configurations outside int4.
        """
        raise NotImplementedError

    @classmethod
    def decode(cls, plan: LayerPlan, tensors: Mapping[str, torch.Tensor]) -> QuantizedLinear:
        """Source tensors of one layer (keyed by role) -> the canonical record."""
        raise NotImplementedError

    @classmethod
    def row_sliced(cls, plan: LayerPlan) -> frozenset[str]:
        """Roles whose tensor `decode`, and `to_marlin(stream=True)` of its record on the CPU, read only by row
        ranges of dim 0 (`t[a:b]`), plus `shape`, `dtype` and `device`: such a tensor may come as a
        `checkpoint.StoredRows` that reads each range when asked. None by default."""
        return frozenset()

    @classmethod
    def encode(cls, rec: QuantizedLinear, plan: LayerPlan, *, stream: bool = False) -> dict[str, Any]:
        """The canonical record -> the layer's source tensors (keyed by role), byte-identical to what was decoded.

        With `stream`, the big packed tensor may come as an iterator of row blocks (see `codes.RowBlocks`).
        """
        raise NotImplementedError
