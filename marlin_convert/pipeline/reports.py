"""What pack, unpack, verify and inspect return: report objects with a stable JSON form."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .inspect_groups import layer_groups, totals

SCHEMA_VERSION = 1
"""Version of every report's JSON form (`schema_version`); bumped when a field changes meaning or goes away."""

__all__ = ["SCHEMA_VERSION", "PackReport", "UnpackReport", "VerifyReport", "InspectReport", "check_row"]


class _Report:
    """A report dataclass whose JSON form is its fields plus `schema_version`."""

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}  # type: ignore[call-overload]


@dataclass
class PackReport(_Report):
    source: str
    output: str
    format: str
    device: str
    layers_converted: int
    tensors_copied: int
    skipped: dict[str, str]
    warnings: list[str]
    shards: list[str]
    bytes_in: int
    bytes_out: int
    seconds: float


@dataclass
class UnpackReport(_Report):
    source: str
    output: str
    format: str
    layers_restored: int
    tensors_copied: int
    shards: list[str]
    bytes_out: int
    seconds: float


@dataclass
class VerifyReport:
    output: str
    source: str | None
    format: str
    checks: list[dict[str, str]] = field(default_factory=list)
    """One entry per layer or tensor group: name, status ("PASS"/"FAIL"), detail."""

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c["status"] == "PASS" for c in self.checks)

    @property
    def failures(self) -> list[dict[str, str]]:
        return [c for c in self.checks if c["status"] != "PASS"]

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self), "ok": self.ok}


def check_row(name: str, ok: bool, detail: str) -> dict[str, str]:
    """One entry of `VerifyReport.checks`."""
    return {"name": name, "status": "PASS" if ok else "FAIL", "detail": detail}


@dataclass
class InspectReport:
    path: str
    format: str
    warnings: list[str]
    layers: list[dict[str, Any]]
    """Per quantized layer: prefix, n, k, group_size, sym, act_order, zero_points, eligible, reason."""
    tensors: list[dict[str, Any]]
    """Per tensor: name, dtype, shape, nbytes, action ("pack" / "copy"; for an output "packed" / "copied"), layer, reason."""
    converted_from: dict[str, Any] | None = None
    """For a marlin-convert output: source format, tool version, source bytes and tensor count; else None."""

    @property
    def groups(self) -> list[dict[str, Any]]:
        """Layers grouped by name pattern (`model.layers.*.mlp.down_proj`) and quantization."""
        return layer_groups(self.layers, self.tensors)

    @property
    def totals(self) -> dict[str, int]:
        return totals(self.layers, self.tensors)

    def to_json(self) -> dict[str, Any]:
        # what `asdict` gives, without its generic deep copy (a second per 100,000 tensors): the rows hold
        # plain values, and the one list in them (a tensor's shape) is copied
        return {"schema_version": SCHEMA_VERSION, "path": self.path, "format": self.format,
                "warnings": list(self.warnings), "layers": [dict(row) for row in self.layers],
                "tensors": [{**row, "shape": list(row["shape"])} for row in self.tensors],
                "converted_from": None if self.converted_from is None else dict(self.converted_from),
                "groups": self.groups, "totals": self.totals}
