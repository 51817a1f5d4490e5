"""Defensive reading and streaming writing of single safetensors files.

The header is parsed and checked in full before any data is read (safetensors' own loader trusts
more of it than we want to), tensors are read lazily with positioned reads, and files are written
header first, then tensor by tensor, so no whole shard is ever held in memory.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterable

from ..dtypes import DTYPE_SIZES
from ..errors import CheckpointError
from ..stage_timers import stage, timed_iter
from .direct_file import SequentialFile, pwrite_all
from .host_buffers import take_buffer
from .hashed import BlocksAhead, Hashed, tensor_bytes
from .json_file import parse_json

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["Hashed", "TensorInfo", "SafetensorsHeader", "read_header", "read_header_bytes", "parse_header",
           "read_bytes", "tensor_from_bytes", "array_from_bytes", "NUMPY_DTYPES", "ShardWriter", "header_bytes"]

MAX_HEADER_BYTES = 100_000_000
"""safetensors' own limit on the JSON header."""
U64_MAX = 2**64 - 1
"""safetensors' sizes, shapes and offsets are 64-bit unsigned (usize) and checked for overflow."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors file: dtype name, shape, and absolute byte range in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    tensors: dict[str, TensorInfo]
    """In file order (by offset)."""
    metadata: dict[str, str] | None
    raw: bytes = b""
    """The header as stored: the 8-byte length and the JSON text (key order, spacing, padding) it announces."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} out of range")
    return value


class _NegativeZero(int):
    """`-0` in the header: serde_json reads it as a float, so no size or offset may be one."""


def _plain_int(text: str) -> int:
    return _NegativeZero(0) if text == "-0" else int(text)


_HEADER_JSON = dict(object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite_float,
                    parse_int=_plain_int)
"""JSON as safetensors' own parser (serde_json) reads it: no NaN/Infinity, no number out of range,
no -0 as a size, no duplicate keys (serde_json keeps the last; an ambiguous header is refused here)."""


def _has_lone_surrogate(value: Any) -> bool:
    """True when a string of the parsed header is not valid Unicode (serde_json refuses `"\\ud800"`)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_u64(value: Any) -> bool:
    return _is_int(value) and not isinstance(value, _NegativeZero) and 0 <= value <= U64_MAX


def _open_regular(path: Path) -> tuple[BinaryIO, int]:
    """An open regular file and its size; a FIFO or device is refused without blocking on it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise CheckpointError(f"{path}: not a regular file")
    return os.fdopen(fd, "rb"), st.st_size


def _read_header_bytes(path: Path) -> tuple[bytes, int]:
    f, size = _open_regular(path)
    try:
        with f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header length)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: header claims {header_len} bytes (limit {MAX_HEADER_BYTES})")
            if 8 + header_len > size:
                raise CheckpointError(f"{path}: header length {header_len} runs past the end of the file ({size} bytes)")
            raw = f.read(header_len)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(raw) != header_len:
        raise CheckpointError(f"{path}: file truncated while reading the header")
    return prefix + raw, size


def read_header_bytes(path: str | os.PathLike[str]) -> bytes:
    """The first bytes of a safetensors file: its 8-byte header length and the JSON header it announces,
    exactly as stored. Raises: CheckpointError naming the file when the length is absurd or runs past the end."""
    return _read_header_bytes(Path(path))[0]


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Parse and check a safetensors header by the rules of safetensors' own reader (what it refuses
    is refused here); every tensor's range must match its dtype and shape.

    Raises: CheckpointError naming the file (and tensor) for any inconsistency.
    """
    path = Path(path)
    raw, size = _read_header_bytes(path)
    return parse_header(raw, size, path)


def parse_header(raw: bytes, size: int, path: Path) -> SafetensorsHeader:
    """Check the header bytes `raw` (8-byte length + JSON) of a file of `size` bytes as `read_header` does:
    tensors back to back from the end of the header to the end of the file, each range matching its dtype
    and shape, no gaps and nothing after the last. Raises: CheckpointError naming `path` (and the tensor)."""
    if len(raw) < 8 or struct.unpack("<Q", raw[:8])[0] != len(raw) - 8:
        raise CheckpointError(f"{path}: header length does not match the header")
    try:
        text = raw[8:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: corrupt safetensors header (not UTF-8 at byte {e.start})") from None
    header = parse_json(text, f"{path}: corrupt safetensors header", **_HEADER_JSON)
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    if "\\u" in text and _has_lone_surrogate(header):
        raise CheckpointError(f"{path}: corrupt safetensors header (a string holds a lone surrogate escape)")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise CheckpointError(f"{path}: __metadata__ must map strings to strings")
    data_start = len(raw)
    data_len = size - data_start
    tensors = [_tensor_info(path, name, entry, data_start, data_len) for name, entry in header.items()]
    tensors.sort(key=lambda t: (t.start, t.end))
    expected = data_start
    for t in tensors:
        if t.start != expected:
            kind = "overlaps the previous tensor" if t.start < expected else "leaves a gap before it"
            raise CheckpointError(f"{path}: tensor {t.name}: data range {kind}")
        expected = t.end
    if expected != size:
        raise CheckpointError(f"{path}: {size - expected} bytes after the last tensor (file is padded or corrupt)")
    return SafetensorsHeader(path=path, tensors={t.name: t for t in tensors}, metadata=metadata, raw=bytes(raw))


def element_count(shape: list[int]) -> int | None:
    """The number of elements, or None where safetensors' reader overflows (a running product of the
    dimensions, in order, past 2**64 - 1: `[2**40, 2**40, 0]` overflows, `[0, 2**40, 2**40]` does not)."""
    count = 1
    for dim in shape:
        count *= dim
        if count > U64_MAX:
            return None
    return count


def _tensor_info(path: Path, name: str, entry: Any, data_start: int, data_len: int) -> TensorInfo:
    where = f"{path}: tensor {name}"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where}: malformed header entry")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        raise CheckpointError(f"{where}: unknown dtype {repr(dtype)}")
    if not isinstance(shape, list) or not all(_is_u64(d) for d in shape):
        raise CheckpointError(f"{where}: malformed shape {repr(shape)[:200]}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_u64(o) for o in offsets)):
        raise CheckpointError(f"{where}: malformed data_offsets {repr(offsets)[:200]}")
    count = element_count(shape)
    if count is None or count * DTYPE_SIZES[dtype] * 8 > U64_MAX:
        raise CheckpointError(f"{where}: shape {shape} overflows a 64-bit size (safetensors refuses it)")
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise CheckpointError(f"{where}: data_offsets {offsets} outside the data section ({data_len} bytes)")
    expected = count * DTYPE_SIZES[dtype]
    if end - begin != expected:
        raise CheckpointError(f"{where}: {end - begin} bytes for {dtype} {shape}, which needs {expected}")
    return TensorInfo(name, dtype, tuple(shape), data_start + begin, data_start + end)


def read_bytes(f: BinaryIO, info: TensorInfo, *, into: bytearray | memoryview | None = None) -> bytearray | memoryview:
    """The raw bytes of one tensor, from an open file, with positioned reads (safe across threads);
    read `into` a caller's buffer of exactly that size when given (e.g. pinned host memory), else into one from
    the process's pool of reused buffers (`host_buffers`: fresh pages are what reading cost most on a VM)."""
    with stage("read tensors", info.nbytes):
        buf = take_buffer(info.nbytes) if into is None else into
        view = memoryview(buf).cast("B")
        done = 0
        while done < info.nbytes:
            got = os.preadv(f.fileno(), [view[done : done + (1 << 30)]], info.start + done)
            if got <= 0:
                raise CheckpointError(f"{getattr(f, 'name', '?')}: tensor {info.name}: file truncated while reading")
            done += got
    return buf


def tensor_from_bytes(raw: bytearray, info: TensorInfo) -> torch.Tensor:
    """A CPU tensor over `raw` (no copy) with the dtype and shape of `info`."""
    import torch

    from ..dtypes import TORCH_DTYPES

    dtype = TORCH_DTYPES[info.dtype]
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=dtype)
    return torch.frombuffer(raw, dtype=dtype).reshape(info.shape)


NUMPY_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
                "U8": "u1", "BOOL": "?", "U16": "<u2", "U32": "<u4", "U64": "<u8", "C64": "<c8"}
"""The numpy dtype of each safetensors dtype numpy has (not BF16 or the float8 types)."""


def array_from_bytes(raw: bytearray, info: TensorInfo) -> np.ndarray:
    """A numpy array over `raw` (no copy) with the dtype and shape of `info`; CheckpointError for a dtype
    numpy lacks (bfloat16, float8)."""
    import numpy as np

    if info.dtype not in NUMPY_DTYPES:
        raise CheckpointError(f"tensor {info.name}: dtype {info.dtype} cannot be read as a numpy array")
    return np.frombuffer(raw, dtype=NUMPY_DTYPES[info.dtype]).reshape(info.shape)


def header_bytes(entries: Iterable[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str] | None) -> bytes:
    """The 8-byte length and JSON header for tensors written back to back in the given order."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape in entries:
        nbytes = math.prod(shape) * DTYPE_SIZES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


class ShardWriter:
    """Writes one safetensors file whose header is fixed up front; each tensor goes to its place in the file.

    By default the header is built from `entries` (back to back, in that order) and tensors must come in
    that order. With `header` (the exact bytes of a source file's header: 8-byte length and JSON), that
    header is written as it is and each tensor goes to the offset it names: in file order when `entries`
    are in file order, else whatever order they come in, so the file is rebuilt byte for byte with no more
    than one tensor in hand. Written in file order, the file bypasses the page cache where it can
    (`direct_file.SequentialFile`), unless `direct` is False. Each tensor's sha256 is computed
    as it is written or comes with it (`Hashed`, `BlocksAhead`). `close()` fails unless every tensor arrived.
    """

    def __init__(self, path: Path, entries: list[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str] | None,
                 *, header: bytes | None = None, direct: bool | None = None):
        self.path = path
        self._written: set[str] = set()
        self._entries = entries
        self._planned = {n: (d, tuple(sh)) for n, d, sh in entries}
        self._next = 0
        self.sha256: dict[str, str] = {}
        raw = header_bytes(entries, metadata) if header is None else header
        size = len(raw) + sum(math.prod(shape) * DTYPE_SIZES[dtype] for _, dtype, shape in entries)
        layout = parse_header(raw, size, path)
        if {n: (t.dtype, t.shape) for n, t in layout.tensors.items()} != self._planned:
            raise CheckpointError(f"{path}: the recorded header does not list the tensors to write")
        self._start = {n: t.start for n, t in layout.tensors.items()}
        starts = [self._start[n] for n, _, _ in entries]
        self._any_order = starts != sorted(starts)  # a recorded header whose tensors come in another order
        self._position = len(raw)  # where the next in-order tensor starts
        self._sequential: SequentialFile | None = None
        try:
            if self._any_order:
                self._file: Any = open(path, "wb")
            else:
                self._file = self._sequential = SequentialFile(path, direct=direct)
            self._pwrite(raw, 0)
        except OSError as e:
            raise CheckpointError(f"{path}: cannot write ({e.strerror or e})") from None

    def _pwrite(self, data: Any, offset: int) -> None:
        if self._sequential is not None:  # in order: offset is where the last write ended
            self._sequential.write(data)
            return
        pwrite_all(self._file.fileno(), memoryview(data).cast("B"), offset)

    def write(self, name: str, data: torch.Tensor | bytes | bytearray | Iterable[torch.Tensor]) -> None:
        """Write the next tensor: a tensor, its raw bytes, or its consecutive row blocks (streamed)."""
        import torch

        from ..dtypes import TORCH_DTYPES

        if self._any_order:
            if name not in self._planned or name in self._written:
                raise RuntimeError(f"internal: {name} is not (or no longer) planned for {self.path}")
            dtype, shape = self._planned[name]
        else:
            exp_name, dtype, shape = self._entries[self._next]
            if name != exp_name or self._start[name] != self._position:
                raise RuntimeError(f"internal: wrote {name} where {exp_name} was planned")
            self._position += math.prod(shape) * DTYPE_SIZES[dtype]
        known_digest = None
        blocks = data if isinstance(data, BlocksAhead) else None
        if isinstance(data, Hashed):
            data, known_digest = data.tensor, data.sha256
        whole = isinstance(data, (torch.Tensor, bytes, bytearray, memoryview))
        if isinstance(data, torch.Tensor) and (data.dtype != TORCH_DTYPES[dtype] or tuple(data.shape) != tuple(shape)):
            raise RuntimeError(f"internal: {name} is {data.dtype} {tuple(data.shape)}, planned {dtype} {shape}")
        digest = hashlib.sha256()
        written = 0
        start = self._start[name]
        for part in ([data] if whole else data if blocks else timed_iter("layout (streamed blocks)", data)):
            if isinstance(part, torch.Tensor):
                if part.dtype != TORCH_DTYPES[dtype]:
                    raise RuntimeError(f"internal: {name} block is {part.dtype}, planned {dtype}")
                raw = tensor_bytes(part)
            else:
                raw = memoryview(part)
            if known_digest is None:
                with stage("sha256 while writing", len(raw)):
                    digest.update(raw)
            if written + len(raw) > math.prod(shape) * DTYPE_SIZES[dtype]:
                raise RuntimeError(f"internal: {name} has more bytes than planned {dtype} {shape}")
            try:
                with stage("write", len(raw)):
                    self._pwrite(raw, start + written)
            except OSError as e:
                raise CheckpointError(f"{self.path}: cannot write tensor {name} ({e.strerror or e})") from None
            written += len(raw)
        if written != math.prod(shape) * DTYPE_SIZES[dtype]:
            raise RuntimeError(f"internal: {name} has {written} bytes, planned {dtype} {shape}")
        self._written.add(name)
        self.sha256[name] = known_digest or digest.hexdigest()
        self._next += 1

    def finish(self) -> None:
        """Check that every planned tensor was written and hand the bytes to the OS."""
        if self._next != len(self._entries):
            self._file.close()
            raise RuntimeError(f"internal: {self.path} closed after {self._next} of {len(self._entries)} tensors")
        try:
            if self._sequential is not None:
                with stage("write", 0):
                    self._sequential.finish()
            else:
                self._file.flush()
        except OSError as e:
            self._file.close()
            raise CheckpointError(f"{self.path}: cannot write ({e.strerror or e})") from None

    def close(self) -> None:
        """`finish`, then wait until the file is on disk (fsync) and close it."""
        try:
            if not self._file.closed:
                self.finish()
            with stage("fsync"):
                os.fsync(self._file.fileno())
        except OSError as e:
            raise CheckpointError(f"{self.path}: cannot write ({e.strerror or e})") from None
        finally:
            self._file.close()

    def abort(self) -> None:
        self._file.close()
