"""Tensor-at-a-time safetensors reading and writing, so a merge never holds a whole shard.

The safetensors library maps or loads whole files; here each tensor is read with a plain
``readinto`` (no memory map whose pages would stay resident) and written as soon as it is
ready, because offsets are known from the shapes before any data exists. The layout is the
documented one: an 8-byte little-endian header length, a JSON header, then the raw bytes.
It stands below export (merge, GGUF, verification) and training (a base's damaged headers are
named before loading) alike, and imports neither.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from io import BufferedIOBase
from pathlib import Path
from typing import Iterable

DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
          "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
_ALIGN = 8
MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit


class DamagedFile(ValueError):
    """A safetensors file whose header lies or that is cut short; the message names the file."""


def _damaged(path: Path, what: str) -> DamagedFile:
    return DamagedFile(f"{path}: the safetensors file is damaged ({what}); restore it from its source "
                       "(download or copy it again)")


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: str  # safetensors spelling: F32, BF16, ...
    shape: tuple[int, ...]
    file: Path
    start: int  # absolute offset of the data in ``file``
    nbytes: int


def read_header(path: Path) -> list[TensorMeta]:
    """The tensors of one safetensors file, in file order, without reading their data."""
    path = Path(path)
    total = path.stat().st_size
    with open(path, "rb") as fh:
        first = fh.read(8)
        if len(first) < 8:
            raise _damaged(path, f"{total} bytes, shorter than a header")
        (size,) = struct.unpack("<Q", first)
        if size > min(MAX_HEADER_BYTES, total - 8):
            raise _damaged(path, f"the header claims {size} bytes, the file has {total}")
        try:
            header = json.loads(fh.read(size))
        except (ValueError, RecursionError):
            raise _damaged(path, "the header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _damaged(path, "the header is not a JSON object")
    base = 8 + size
    out = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = (int(x) for x in info["data_offsets"])
            meta = TensorMeta(name, str(info["dtype"]), tuple(int(d) for d in info["shape"]), path, base + start,
                              end - start)
        except (KeyError, TypeError, ValueError):
            raise _damaged(path, f"the header entry of tensor {name} is malformed") from None
        if meta.dtype not in _SIZES or start < 0 or end < start or _nbytes(meta.dtype, meta.shape) != end - start:
            raise _damaged(path, f"tensor {name}: its dtype, shape and byte range do not agree")
        if base + end > total:
            raise _damaged(path, f"tensor {name} ends at byte {base + end}, the file has {total} (cut short?)")
        out.append(meta)
    return sorted(out, key=lambda m: m.start)


def model_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder, in index order (single file or sharded)."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [folder / f for f in dict.fromkeys(sorted(set(weight_map.values())))]
    single = folder / "model.safetensors"
    return [single] if single.is_file() else []


def model_tensors(folder: Path) -> list[TensorMeta]:
    return [m for f in model_files(folder) for m in read_header(f)]


def read_tensor(meta: TensorMeta, fh: BufferedIOBase | None = None):
    """One tensor as a torch tensor that owns its memory."""
    import torch

    buf = bytearray(meta.nbytes)
    if fh is None:
        with open(meta.file, "rb") as own:
            own.seek(meta.start)
            own.readinto(buf)
    else:
        fh.seek(meta.start)
        fh.readinto(buf)
    dtype = getattr(torch, DTYPES[meta.dtype])
    if meta.nbytes == 0:
        return torch.empty(meta.shape, dtype=dtype)
    return torch.frombuffer(buf, dtype=dtype).reshape(meta.shape)


def read_file_rows(path: Path, start: int, row_bytes: int, rows: Iterable[int]) -> bytearray:
    """Rows ``rows`` (indices, any order) of the row-major array at byte ``start`` of ``path``, one read each,
    without a memory map: a sample costs its rows only (a mapped file maps the kernel's whole page-cache
    block around each row touched: the whole tensor, for a freshly written file)."""
    rows = [int(r) for r in rows]
    buf = bytearray(row_bytes * len(rows))
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        for i, r in enumerate(rows):
            fh.seek(start + r * row_bytes)
            if fh.readinto(view[i * row_bytes:(i + 1) * row_bytes]) != row_bytes:
                raise ValueError(f"{path}: the data at byte {start} is cut short (row {r})")
    return buf


def read_rows(meta: TensorMeta, rows):
    """Rows ``rows`` (indices, any order) of a 2-D tensor as a torch tensor (``read_file_rows``)."""
    import torch

    buf = read_file_rows(meta.file, meta.start, meta.nbytes // meta.shape[0], rows)
    return torch.frombuffer(buf, dtype=getattr(torch, DTYPES[meta.dtype])).reshape(-1, *meta.shape[1:])


def dtype_code(tensor) -> str:
    """The safetensors spelling of a torch tensor's dtype."""
    name = str(tensor.dtype).removeprefix("torch.")
    for code, torch_name in DTYPES.items():
        if torch_name == name:
            return code
    raise ValueError(f"dtype {name} cannot be stored in safetensors")


class StreamingWriter:
    """Writes one safetensors file tensor by tensor, in the order the plan gives."""

    def __init__(self, path: Path, plan: Iterable[tuple[str, str, tuple[int, ...]]], metadata: dict | None = None):
        header: dict = {"__metadata__": metadata or {"format": "pt"}}
        offset = 0
        self.order: list[tuple[str, int]] = []
        for name, dtype, shape in plan:
            n = _nbytes(dtype, shape)
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
            self.order.append((name, n))
            offset += n
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % _ALIGN)
        self.fh = open(path, "wb")
        self.fh.write(struct.pack("<Q", len(raw)) + raw)
        self.next = 0

    def write(self, name: str, tensor) -> None:
        expected, n = self.order[self.next]
        if name != expected:
            raise ValueError(f"tensor {name} written out of order (expected {expected})")
        data = tensor.contiguous().view(-1).view(dtype=__import__("torch").uint8).numpy()
        if data.nbytes != n:
            raise ValueError(f"tensor {name}: {data.nbytes} bytes, planned {n}")
        self.fh.write(memoryview(data))
        self.next += 1

    def close(self) -> None:
        import os

        if self.next != len(self.order):
            self.fh.close()
            raise ValueError(f"{self.fh.name}: {len(self.order) - self.next} tensors were never written")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()


_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    n = _SIZES[dtype]
    for d in shape:
        n *= d
    return n
