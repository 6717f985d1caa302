"""safetensors headers: where each tensor of a file lies, and planning the byte ranges to read.

A safetensors file starts with the 8-byte length of its JSON header, then the header, which gives each
tensor's dtype, shape and byte range in the data area that follows. For each shard holding a layer, that
header is all that is needed to know which bytes to fetch (on the Hub it is read with two range requests,
see :mod:`rllm_zoo.llm.http_ranges`); :func:`coalesce_ranges` merges the byte ranges of the layer's tensors
into few requests (small gaps are read through).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError

__all__ = [
    "MAX_HEADER_BYTES",
    "SafetensorsHeader",
    "TensorSlice",
    "coalesce_ranges",
    "parse_safetensors_header",
]

#: Largest safetensors JSON header accepted (the format's own limit is 100 MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024

#: safetensors dtype codes -> torch dtypes (the ones this torch knows).
_ST_DTYPES: dict[str, torch.dtype] = {
    code: dt
    for code, dt in {
        "F64": torch.float64,
        "F32": torch.float32,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "I64": torch.int64,
        "I32": torch.int32,
        "I16": torch.int16,
        "I8": torch.int8,
        "U8": torch.uint8,
        "BOOL": torch.bool,
        "U16": getattr(torch, "uint16", None),
        "U32": getattr(torch, "uint32", None),
        "U64": getattr(torch, "uint64", None),
        "F8_E4M3": getattr(torch, "float8_e4m3fn", None),
        "F8_E5M2": getattr(torch, "float8_e5m2", None),
    }.items()
    if dt is not None
}


@dataclass(frozen=True)
class TensorSlice:
    """Where one tensor lies in a safetensors file: absolute byte range ``[start, end)``."""

    name: str
    dtype: str  # safetensors code, e.g. "BF16"
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class SafetensorsHeader:
    """A parsed safetensors header: tensors by name, where the data area starts, and the file size."""

    tensors: dict[str, TensorSlice]
    data_start: int
    size: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "data_start": self.data_start,
            "size": self.size,
            "metadata": self.metadata,
            "tensors": {
                n: [t.dtype, list(t.shape), t.start - self.data_start, t.end - self.data_start]
                for n, t in self.tensors.items()
            },
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SafetensorsHeader:
        start = int(d["data_start"])
        tensors = {
            n: TensorSlice(n, str(v[0]), tuple(int(x) for x in v[1]), start + int(v[2]), start + int(v[3]))
            for n, v in d["tensors"].items()
        }
        return cls(tensors, start, d.get("size"), dict(d.get("metadata") or {}))


def parse_safetensors_header(
    raw: bytes, *, size: int | None = None, where: str = "file"
) -> SafetensorsHeader:
    """Parse the JSON header of a safetensors file (``raw`` excludes the 8-byte length prefix).

    Checks every tensor's dtype, shape and byte range (inside the file when ``size`` is known).

    Example:
        >>> hdr = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
        >>> parse_safetensors_header(hdr).tensors["w"].start == 8 + len(hdr)  # data follows the header
        True
    """
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"{where} has an unreadable safetensors header ({e}); it is not safetensors"
        ) from e
    if not isinstance(doc, dict):
        raise CheckpointError(f"{where} has a safetensors header that is not a JSON object")
    data_start = 8 + len(raw)
    metadata = doc.pop("__metadata__", None) or {}
    tensors: dict[str, TensorSlice] = {}
    for name, info in doc.items():
        try:
            dtype = str(info["dtype"])
            shape = tuple(int(x) for x in info["shape"])
            lo, hi = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: malformed header entry for tensor {name!r} ({e})") from e
        if lo < 0 or hi < lo or (size is not None and data_start + hi > size):
            raise CheckpointError(
                f"{where}: tensor {name!r} has byte range [{lo}, {hi}) outside the file; it is truncated or corrupt"
            )
        tensors[name] = TensorSlice(name, dtype, shape, data_start + lo, data_start + hi)
    return SafetensorsHeader(tensors, data_start, size, {str(k): str(v) for k, v in dict(metadata).items()})


def _read_local_header(path: Path) -> SafetensorsHeader:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is shorter than a safetensors header; re-download it")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(f"{path} declares a {n}-byte header; it is not a valid safetensors file")
        return parse_safetensors_header(f.read(n), size=size, where=str(path))


def coalesce_ranges(
    spans: Iterable[tuple[int, int]], max_gap: int = 1 << 20, max_waste: float = 0.05
) -> list[tuple[int, int]]:
    """Merge half-open byte ranges whose gaps are small into fewer, larger ranges.

    Two neighbours merge when the gap between them is at most ``max_gap`` bytes and the bytes read
    for nothing stay at most ``max_waste`` of the merged range's useful bytes.

    Example:
        >>> coalesce_ranges([(0, 100), (100, 200), (210, 300), (5000, 5100)], max_gap=64)
        [(0, 300), (5000, 5100)]
    """
    out: list[list[int]] = []  # [start, end, useful bytes]
    for lo, hi in sorted(spans):
        if hi <= lo:
            continue
        if out:
            cur = out[-1]
            gap = lo - cur[1]
            if gap <= 0:
                cur[2] += max(0, hi - cur[1])
                cur[1] = max(cur[1], hi)
                continue
            waste = cur[1] - cur[0] - cur[2] + gap
            if gap <= max_gap and waste <= max_waste * (cur[2] + hi - lo):
                cur[1], cur[2] = hi, cur[2] + hi - lo
                continue
        out.append([lo, hi, hi - lo])
    return [(a, b) for a, b, _ in out]


def _torch_dtype(code: str, name: str) -> torch.dtype:
    dt = _ST_DTYPES.get(code)
    if dt is None:
        raise CheckpointError(
            f"tensor {name!r} has safetensors dtype {code}, which this torch ({torch.__version__}) cannot hold; "
            "upgrade torch"
        )
    return dt
