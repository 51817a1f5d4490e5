"""Planning output shards and writing them tensor by tensor (streaming, headers computed up front)."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Hashable

from ..dtypes import DTYPE_SIZES
from ..tensor_spec import TensorSpec
from .safetensors_file import ShardWriter
from .source import SINGLE_NAME

if TYPE_CHECKING:
    import torch

__all__ = ["OutEntry", "ShardPlan", "plan_shards", "order_in_shard", "write_shards", "index_json", "write_json", "write_text"]


@dataclass(frozen=True)
class OutEntry:
    """One tensor to write: its name, its dtype and shape, and a key telling the producer how to make it."""

    name: str
    spec: TensorSpec
    key: Hashable

    @property
    def dtype(self) -> str:
        return self.spec.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.spec.shape

    @property
    def nbytes(self) -> int:
        return self.spec.nbytes


@dataclass
class ShardPlan:
    name: str
    entries: list[OutEntry]
    metadata: dict[str, str] | None
    header: bytes | None = None
    """The exact header bytes to write (a source shard's, on unpack); tensors then go where it says."""

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries)


def order_in_shard(entries: list[OutEntry]) -> list[OutEntry]:
    """Keep plan order for tensors whose size is a multiple of 8 bytes, then the rest by element size
    (largest first), so every tensor starts aligned to its element size, as safetensors' writer ensures."""
    whole = [e for e in entries if e.nbytes % 8 == 0]
    rest = sorted((e for e in entries if e.nbytes % 8), key=lambda e: -DTYPE_SIZES[e.dtype])
    return whole + rest


def plan_shards(entries: list[OutEntry], *, max_bytes: int | None, metadata: dict[str, str] | None) -> list[ShardPlan]:
    """Cut entries, in order, into shards of at most `max_bytes` (a tensor larger than that gets its own)."""
    groups: list[list[OutEntry]] = [[]]
    size = 0
    for entry in entries:
        if max_bytes is not None and groups[-1] and size + entry.nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += entry.nbytes
    if len(groups) == 1:
        return [ShardPlan(SINGLE_NAME, order_in_shard(groups[0]), metadata)]
    total = len(groups)
    return [
        ShardPlan(f"model-{i + 1:05d}-of-{total:05d}.safetensors", order_in_shard(g), metadata)
        for i, g in enumerate(groups)
    ]


def write_shards(
    directory: Path,
    shards: list[ShardPlan],
    produce: Callable[[OutEntry], torch.Tensor | bytes | bytearray],
    *,
    written: Callable[[ShardPlan, dict[str, str]], None] | None = None,
    direct: bool | None = None,
) -> dict[str, str]:
    """Write every shard, asking `produce` for each tensor in order; return each tensor's sha256.
    `written(shard, digests)` is called as each shard is complete, with its tensors' sha256 (e.g. to check
    them before the next shard is written). `direct=False` writes through the page cache (see `direct_file`;
    default: O_DIRECT where it works).

    A finished shard is flushed to disk (fsync) on a background thread while the next one is
    written; all are on disk when this returns.
    """
    digests: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="marlin-convert-fsync") as syncer:
        pending = []
        for shard in shards:
            writer = ShardWriter(directory / shard.name, [(e.name, e.dtype, e.shape) for e in shard.entries], shard.metadata,
                                 header=shard.header, direct=direct)
            try:
                for entry in shard.entries:
                    writer.write(entry.name, produce(entry))
                writer.finish()
            except BaseException:
                writer.abort()
                raise
            pending.append(syncer.submit(writer.close))
            if written is not None:
                written(shard, writer.sha256)
            digests.update(writer.sha256)
        for done in pending:
            done.result()
    return digests


def index_json(shards: list[ShardPlan]) -> dict[str, Any]:
    """A `model.safetensors.index.json` for several shards."""
    weight_map = {e.name: s.name for s in shards for e in s.entries}
    return {"metadata": {"total_size": sum(s.nbytes for s in shards)}, "weight_map": dict(sorted(weight_map.items()))}


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write a small UTF-8 file; a failed write (disk full, file too large) names the file."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None

