"""pack / unpack / verify / inspect as streams of layers: read a layer, convert, write.

No printing here: progress arrives through a `Reporter` and results come back as report objects.
One module per command (`pack`, `unpack`, `verify`, `inspect`); `plan` chooses what each output tensor
is, `_layers` reads and converts one layer, `_stream` runs layers ahead on a thread pool.
"""
from __future__ import annotations

from .inspect import inspect_checkpoint
from .options import default_jobs, resolve_device
from .pack import pack_checkpoint
from .progress import Reporter
from .reports import SCHEMA_VERSION, InspectReport, PackReport, UnpackReport, VerifyReport
from .unpack import unpack_checkpoint
from .verify import verify_checkpoint

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
