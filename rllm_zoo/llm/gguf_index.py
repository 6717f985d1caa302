"""A lean GGUF index: scalar metadata and tensor locations, without materialising arrays.

``gguf.GGUFReader`` builds Python objects for every metadata array (a 49k-token vocabulary
and its merges take seconds and over 100 MB); reading one layer needs none of that. This
index walks the header once, skips arrays by their lengths, and maps only the bytes of
the tensors asked for. Dequantisation is gguf's own (``gguf.quants.dequantize``).
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["GGUFIndex", "GGUFTensorInfo"]

_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (GGUF stores dimensions fastest-first)
    qtype: int
    offset: int  # absolute byte offset in the file
    nbytes: int


class GGUFIndex:
    """Scalar metadata (``fields``) and tensor table (``tensors``) of a GGUF file.

    Raises ``ValueError`` for files that are not GGUF or are truncated.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        self.path = Path(path)
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        m = self._map
        if len(m) < 24 or m[:4] != b"GGUF":
            raise ValueError("bad magic (not a GGUF file)")
        self.version, n_tensors, n_kv = struct.unpack_from("<IQQ", m, 4)
        if self.version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {self.version} (2 and 3 are read)")
        pos = 24
        self.fields: dict[str, object] = {}
        for _ in range(n_kv):
            key, pos = self._string(pos)
            (vtype,) = struct.unpack_from("<I", m, pos)
            value, pos = self._value(vtype, pos + 4)
            self.fields[key] = value
        infos = []
        for _ in range(n_tensors):
            name, pos = self._string(pos)
            (n_dims,) = struct.unpack_from("<I", m, pos)
            dims = struct.unpack_from(f"<{n_dims}Q", m, pos + 4)
            qtype, offset = struct.unpack_from("<IQ", m, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            infos.append((name, tuple(int(d) for d in reversed(dims)), int(qtype), int(offset)))
        align = int(self.fields.get("general.alignment", 32))
        data_start = (pos + align - 1) // align * align
        self.tensors: dict[str, GGUFTensorInfo] = {}
        for name, shape, qtype, offset in infos:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
            n = int(np.prod(shape)) if shape else 1
            nbytes = n // block * type_size
            start = data_start + offset
            if start + nbytes > len(m):
                raise ValueError(f"tensor {name} runs past the end of the file (truncated download?)")
            self.tensors[name] = GGUFTensorInfo(name, shape, qtype, start, nbytes)

    def _string(self, pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", self._map, pos)
        end = pos + 8 + n
        if end > len(self._map):
            raise ValueError("metadata runs past the end of the file (truncated download?)")
        return self._map[pos + 8 : end].decode("utf-8", errors="replace"), end

    def _value(self, vtype: int, pos: int) -> tuple[object, int]:
        if vtype in _SCALARS:
            fmt = _SCALARS[vtype]
            return struct.unpack_from(fmt, self._map, pos)[0], pos + struct.calcsize(fmt)
        if vtype == _STRING:
            return self._string(pos)
        if vtype == _ARRAY:
            etype, count = struct.unpack_from("<IQ", self._map, pos)
            pos += 12
            if etype in _SCALARS:  # fixed-size elements: skip in one step
                return f"<array of {count}>", pos + count * struct.calcsize(_SCALARS[etype])
            for _ in range(count):  # strings / nested arrays: walk their lengths only
                _, pos = self._value(etype, pos)
            return f"<array of {count}>", pos
        raise ValueError(f"unknown GGUF metadata type {vtype}")

    def raw(self, name: str) -> np.ndarray:
        """The tensor's stored bytes/values, shaped as ``gguf.quants.dequantize`` expects."""
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        t = self.tensors[name]
        qtype = GGMLQuantizationType(t.qtype)
        block, type_size = GGML_QUANT_SIZES[qtype]
        plain = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}
        if qtype in plain:
            return np.frombuffer(
                self._map, dtype=plain[qtype], count=t.nbytes // type_size, offset=t.offset
            ).reshape(t.shape)
        data = np.frombuffer(self._map, dtype=np.uint8, count=t.nbytes, offset=t.offset)
        return data.reshape(*t.shape[:-1], t.shape[-1] // block * type_size)

    def dequantize(self, name: str) -> np.ndarray:
        """The tensor as float32, in its logical shape."""
        from gguf.constants import GGMLQuantizationType
        from gguf.quants import dequantize

        t = self.tensors[name]
        raw = self.raw(name)
        if raw.dtype != np.uint8:  # F32 / F16: a plain copy
            return np.array(raw, dtype=np.float32)
        qtype = GGMLQuantizationType(t.qtype)
        rows = raw.reshape(-1, raw.shape[-1])
        out = np.empty((rows.shape[0], t.shape[-1]), dtype=np.float32)
        # row chunks keep dequantisation's temporaries small next to the output
        step = max(1, (1 << 20) // max(1, rows.shape[1]))
        for i in range(0, rows.shape[0], step):
            out[i : i + step] = dequantize(rows[i : i + step], qtype)
        return out.reshape(t.shape)
