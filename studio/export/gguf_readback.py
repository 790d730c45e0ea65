"""A written GGUF read back for the checks: its key/value fields and its tensors, memory-mapped.

The verification (``studio.export.verify``) and the LoRA GGUF check read every exported GGUF
through ``gguf_reader``; the writer (``gguf_writer``) never reads one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.safetensors_io import read_file_rows


@dataclass
class GgufTensor:
    """One tensor of a GGUF file as read back: ``data`` is a read-only view of the file's bytes, shaped
    like the ``gguf`` package's reader shapes it (float types by element, quantised types as rows of bytes)."""

    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    shape: tuple  # GGUF order (innermost first)
    data: Any  # numpy array
    offset: int  # where the data starts in the file
    path: Path  # the file

    def read_rows(self, rows: Any) -> Any:
        """Rows ``rows`` of ``data`` (first axis), read from the file (``safetensors_io.read_file_rows``)
        instead of through the memory map."""
        import numpy as np


        buf = read_file_rows(self.path, self.offset, self.data.nbytes // self.data.shape[0], rows)
        return np.frombuffer(buf, dtype=self.data.dtype).reshape(-1, *self.data.shape[1:])


@dataclass
class GgufFile:
    """What the checks read back from a written GGUF: its key/value fields and its tensors."""

    fields: dict[str, Any]
    tensors: list[GgufTensor]


# GGUF value types (the gguf package's GGUFValueType numbering) -> numpy dtype, little-endian as written
_SCALARS = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8",
            12: "<f8"}
_STRING, _ARRAY = 8, 9


def gguf_reader(path: Path) -> GgufFile:
    """Read a GGUF's fields and tensor table in one pass over its header; tensor data stays memory-mapped.

    The gguf package's ``GGUFReader`` builds a numpy view for every part of every field, which takes
    seconds for a 50k-token vocabulary (most of an export's verification); this reads the same format
    (GGUF v2/v3, little-endian) with numpy slices for numeric arrays and one loop for string arrays.
    A test checks that it returns exactly what ``GGUFReader`` returns. Strings are decoded; numeric
    arrays are numpy arrays; scalars are Python numbers.
    """
    import struct

    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape

    mm = np.memmap(str(path), dtype=np.uint8, mode="r")
    buf = mm.data  # the mapped file as a memoryview (memoryview(mm) in numpy's typed form)
    pos = 0

    def take(fmt: str):
        nonlocal pos
        out = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return out[0]

    def string() -> str:
        nonlocal pos
        n = take("<Q")
        pos += n
        return bytes(buf[pos - n:pos]).decode("utf-8")

    def value(kind: int):
        nonlocal pos
        if kind == _STRING:
            return string()
        if kind == _ARRAY:
            sub, count = take("<I"), take("<Q")
            if sub == _STRING:
                return [string() for _ in range(count)]
            if sub == _ARRAY:
                return [value(_ARRAY) for _ in range(count)]
            dt = np.dtype(_SCALARS[sub])
            arr = np.frombuffer(buf, dtype=dt, count=count, offset=pos)
            pos += count * dt.itemsize
            return arr.astype(bool) if sub == 7 else arr
        if kind not in _SCALARS:
            raise ValueError(f"{path}: unknown GGUF value type {kind} at byte {pos}")
        dt = np.dtype(_SCALARS[kind])
        pos += dt.itemsize
        item = np.frombuffer(buf, dtype=dt, count=1, offset=pos - dt.itemsize)[0].item()
        return bool(item) if kind == 7 else item

    if bytes(buf[:4]) != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file (no GGUF magic)")
    pos = 4
    version = take("<I")
    if version not in (2, 3):
        raise ValueError(f"{path}: GGUF version {version} is not read here (2 and 3 are)")
    n_tensors, n_kv = take("<Q"), take("<Q")
    fields: dict[str, Any] = {}
    for _ in range(n_kv):
        key = string()
        fields[key] = value(take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = tuple(take("<Q") for _ in range(take("<I")))
        infos.append((name, GGMLQuantizationType(take("<I")), dims, take("<Q")))
    align = int(fields.get("general.alignment", 32))
    start = (pos + align - 1) // align * align
    q = GGMLQuantizationType
    floats = {q.F32: np.float32, q.F16: np.float16, q.F64: np.float64, q.I8: np.int8, q.I16: np.int16,
              q.I32: np.int32, q.I64: np.int64}  # typed as the gguf package types them; the rest as bytes
    tensors = []
    for name, kind, dims, offset in infos:
        n = int(np.prod(dims)) if dims else 1
        block, size = GGML_QUANT_SIZES[kind]
        shape = tuple(reversed(dims))
        if kind in floats:
            dt, count = floats[kind], n
        else:
            dt, count, shape = np.uint8, n * size // block, quant_shape_to_byte_shape(shape, kind)
        data = np.frombuffer(buf, dtype=dt, count=count, offset=start + offset).reshape(shape)
        tensors.append(GgufTensor(name, kind, dims, data, start + offset, Path(path)))
    return GgufFile(fields, tensors)
