"""Files: safetensors shards, the index, config.json, the manifest, the shard plan and atomic writes.

This package knows no quantization format.
"""
from __future__ import annotations

from .atomic import TMP_MARKER, atomic_directory, check_output_path
from .manifest import MANIFEST_NAME, build_manifest, dump_manifest, load_manifest, open_output
from .safetensors_file import Hashed, SafetensorsHeader, TensorInfo, read_header
from .source import CONFIG_NAME, INDEX_NAME, SINGLE_NAME, Checkpoint, open_checkpoint
from .row_windows import RowView, RowWindows
from .stored_rows import StoredRows
from .writer import OutEntry, ShardPlan, index_json, order_in_shard, plan_shards, write_json, write_shards, write_text

__all__ = [
    "CONFIG_NAME",
    "INDEX_NAME",
    "MANIFEST_NAME",
    "SINGLE_NAME",
    "TMP_MARKER",
    "Checkpoint",
    "Hashed",
    "OutEntry",
    "RowView",
    "RowWindows",
    "SafetensorsHeader",
    "ShardPlan",
    "StoredRows",
    "TensorInfo",
    "atomic_directory",
    "build_manifest",
    "check_output_path",
    "dump_manifest",
    "index_json",
    "load_manifest",
    "open_checkpoint",
    "open_output",
    "order_in_shard",
    "plan_shards",
    "read_header",
    "write_json",
    "write_shards",
    "write_text",
]
