"""Lazy, per-tensor access to checkpoint files on disk.

Each reader lists tensor names without reading tensor data, and reads only the
tensors it is asked for: safetensors through per-tensor ``safe_open`` reads routed by
the shard index, PyTorch ``.bin`` files through a memory-mapped ``weights_only``
load, GGUF files through gguf's memory-mapped reader (see ``gguf_source``).
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import pickle
import sys
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

__all__ = [
    "CheckpointError",
    "SafetensorsCheckpoint",
    "TorchBinCheckpoint",
    "find_checkpoint",
]

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt or of a refused kind."""


def _read_index(path: Path) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{path} is not a valid shard index (expected JSON with a 'weight_map'): {e}. "
            "Re-download or re-save the checkpoint."
        ) from e
    return dict(weight_map)


class _Checkpoint:
    """Common part: a name -> file map and grouped reads."""

    folder: Path
    weight_map: dict[str, str]
    #: optional ``fetch(filename)`` that downloads a missing file into ``folder``
    fetch = None

    def keys(self) -> list[str]:
        return list(self.weight_map)

    def files_for(self, names: Iterable[str]) -> list[str]:
        """The distinct files (relative names) holding ``names``."""
        return sorted({self.weight_map[n] for n in names})

    def _check_files(self, files: Iterable[str]) -> None:
        for fname in files:
            if not (self.folder / fname).is_file() and self.fetch is not None:
                self.fetch(fname)
            if not (self.folder / fname).is_file():
                raise CheckpointError(
                    f"shard {fname!r} listed in the index of {self.folder} is missing; "
                    "download the complete checkpoint (or at least this shard) and try again"
                )

    def iter_tensors(self, names: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:  # pragma: no cover
        """Yield ``(name, tensor)`` for ``names``, one tensor in memory at a time."""
        raise NotImplementedError

    def read(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """All of ``names`` as a dict (convenience over :meth:`iter_tensors`)."""
        return dict(self.iter_tensors(names))


class SafetensorsCheckpoint(_Checkpoint):
    """A folder with ``model.safetensors`` or sharded safetensors and their index.

    Example:
        >>> ckpt = SafetensorsCheckpoint("path/to/model")           # doctest: +SKIP
        >>> ckpt.read([n for n in ckpt.keys() if ".layers.3." in n])  # doctest: +SKIP
    """

    def __init__(self, folder: str | os.PathLike, weight_map: dict[str, str] | None = None) -> None:
        self.folder = Path(folder)
        if weight_map is not None:
            self.weight_map = weight_map
        elif (self.folder / SAFE_INDEX).is_file():
            self.weight_map = _read_index(self.folder / SAFE_INDEX)
        elif (self.folder / SAFE_SINGLE).is_file():
            self.weight_map = {k: SAFE_SINGLE for k in self._header(SAFE_SINGLE)}
        else:
            raise CheckpointError(f"no {SAFE_INDEX} or {SAFE_SINGLE} in {self.folder}")

    def _header(self, fname: str) -> list[str]:
        from safetensors import SafetensorError, safe_open

        path = self.folder / fname
        try:
            with safe_open(path, framework="pt") as f:
                return list(f.keys())
        except (SafetensorError, OSError) as e:
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({e}); it may be truncated or corrupt: "
                "re-download or re-save it"
            ) from e

    def iter_tensors(self, names: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield each tensor from its own short-lived memory map.

        safetensors keeps one map per open file, and every page a read touches stays
        resident until that map closes; opening the shard per tensor releases each
        tensor's pages as soon as the caller drops it, so peak memory stays near the
        layer's own size.
        """
        from safetensors import SafetensorError, safe_open

        by_file: dict[str, list[str]] = {}
        for n in names:
            by_file.setdefault(self.weight_map[n], []).append(n)
        self._check_files(by_file)
        for fname, fnames in by_file.items():
            path = self.folder / fname
            for n in fnames:
                try:
                    with safe_open(path, framework="pt") as f:
                        if n not in f.keys():
                            raise CheckpointError(
                                f"tensor {n!r} is listed in the index but absent from {path}; "
                                "the shard does not belong to this index: re-download the checkpoint"
                            )
                        t = f.get_tensor(n)
                except (SafetensorError, OSError, RuntimeError) as e:
                    raise CheckpointError(
                        f"cannot read tensor {n!r} from {path} ({e}); the file may be truncated "
                        "or corrupt: re-download it"
                    ) from e
                yield n, t
                del t


def _release_file_pages(t: torch.Tensor, file_backed: bool) -> None:
    """Drop the resident pages under a memory-mapped tensor (they stay readable from the file).

    Only for read-only, file-backed maps (``torch.load(mmap=True)``); a no-op elsewhere.
    """
    if not file_backed or not sys.platform.startswith("linux"):
        return
    storage = t.untyped_storage()
    page = mmap.PAGESIZE
    start = storage.data_ptr()
    lo = (start + page - 1) // page * page  # only whole pages inside this storage
    hi = (start + storage.nbytes()) // page * page
    if hi > lo:
        ctypes.CDLL(None, use_errno=True).madvise(
            ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), 4
        )  # MADV_DONTNEED


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    """Load a .bin state dict with ``weights_only=True`` (memory-mapped when possible)."""
    try:
        mmap = zipfile.is_zipfile(path)
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refused to load {path}: it holds more than plain tensors, and rllm_zoo never unpickles "
            "arbitrary objects. Convert the checkpoint to safetensors (model.save_pretrained(..., "
            "safe_serialization=True)) and load that folder instead."
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(
            f"cannot read {path} ({e}); it may be truncated or corrupt: re-download it"
        ) from e
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(
            f"{path} is not a flat state dict of tensors; save it with torch.save(model.state_dict())"
        )
    return sd


class TorchBinCheckpoint(_Checkpoint):
    """A folder with ``pytorch_model.bin`` or sharded ``.bin`` files and their index.

    Files are read with ``torch.load(weights_only=True, mmap=True)``: anything that is
    not plain tensors is refused, and only the touched tensors' pages are read.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.mmapped = False
        if (self.folder / BIN_INDEX).is_file():
            self.weight_map = _read_index(self.folder / BIN_INDEX)
            self.mmapped = all(zipfile.is_zipfile(self.folder / f) for f in set(self.weight_map.values()))
        elif (self.folder / BIN_SINGLE).is_file():
            self.weight_map = {k: BIN_SINGLE for k in _load_bin(self.folder / BIN_SINGLE)}
            self.mmapped = zipfile.is_zipfile(self.folder / BIN_SINGLE)
        else:
            raise CheckpointError(f"no {BIN_INDEX} or {BIN_SINGLE} in {self.folder}")

    def iter_tensors(self, names: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        names = list(names)
        files = self.files_for(names)
        self._check_files(files)
        for fname in files:
            sd = _load_bin(self.folder / fname)
            for n in names:
                if self.weight_map[n] == fname:
                    if n not in sd:
                        raise CheckpointError(f"tensor {n!r} is listed in the index but absent from {fname}")
                    t = sd[n]
                    yield n, t
                    # the caller has copied it: give its file-backed pages back
                    _release_file_pages(t, self.mmapped)
            del sd


def find_checkpoint(folder: str | os.PathLike) -> _Checkpoint:
    """The weights reader for a local model folder (safetensors preferred over .bin)."""
    folder = Path(folder)
    if (folder / SAFE_INDEX).is_file() or (folder / SAFE_SINGLE).is_file():
        return SafetensorsCheckpoint(folder)
    if (folder / BIN_INDEX).is_file() or (folder / BIN_SINGLE).is_file():
        return TorchBinCheckpoint(folder)
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise CheckpointError(
        f"no weights found in {folder}: expected {SAFE_SINGLE}, {SAFE_INDEX}, {BIN_SINGLE} or {BIN_INDEX} "
        f"(found: {', '.join(present) or 'nothing'})"
    )
