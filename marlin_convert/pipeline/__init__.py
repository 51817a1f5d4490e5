"""pack / unpack / verify / inspect as streams of layers: read a layer, convert, write.

No printing here: progress arrives through a `Reporter` and results come back as report objects.
One module per command (`pack`, `unpack`, `verify`, `inspect`); `plan` chooses what each output tensor
is, `_layers` reads and converts one layer, `_stream` runs layers ahead on a thread pool. Each command's
module is imported when it is first used, so `inspect` (headers and planning) runs without torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from .reports import SCHEMA_VERSION, InspectReport, PackReport, UnpackReport, VerifyReport

if TYPE_CHECKING:
    from .inspect import inspect_checkpoint
    from .options import default_jobs, resolve_device
    from .pack import pack_checkpoint
    from .progress import Reporter
    from .unpack import unpack_checkpoint
    from .verify import verify_checkpoint

_LAZY = {"inspect_checkpoint": "inspect", "default_jobs": "options", "resolve_device": "options",
         "pack_checkpoint": "pack", "Reporter": "progress", "unpack_checkpoint": "unpack", "verify_checkpoint": "verify"}
"""Each command's module, imported on first use (PEP 562): `inspect` needs no torch, the others do."""

__all__ = [
    "SCHEMA_VERSION",
    "Reporter",
    "PackReport",
    "UnpackReport",
    "VerifyReport",
    "InspectReport",
    "pack_checkpoint",
    "unpack_checkpoint",
    "verify_checkpoint",
    "inspect_checkpoint",
    "resolve_device",
    "default_jobs",
]


__getattr__ = lazy_exports(__name__, _LAZY)
