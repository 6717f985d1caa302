"""rllm_zoo's content-addressed cache of Hub layers fetched by byte ranges, and of their commits' metadata.

The fetched tensors go to a content-addressed cache (:class:`LayerCache`, ``$RLLM_ZOO_CACHE/hub-layers``,
default ``~/.cache/rllm_zoo/hub-layers``): per (repo, commit, layer tensor names) one small safetensors
file plus a JSON manifest recording each tensor's dtype, shape, source range and the sha256 of its
bytes. Entries are written to temporary files and renamed (the manifest last), and verified against the
manifest before every use: a truncated or corrupt entry is deleted and fetched again. The commit's
``config.json``, the shard index and the headers are cached next to them, and branch/tag names are
mapped to the commit they resolved to (``refs/``), so a second call makes no request at all, online
(for ``RLLM_ZOO_HUB_REF_TTL`` seconds, default one day, after a branch or tag was last resolved; a
commit sha never expires) or with ``HF_HUB_OFFLINE=1`` (any age).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import torch

from .checkpoint import CheckpointError
from .gguf_source import cache_dir
from .http_ranges import HubFetchError
from .safetensors_header import SafetensorsHeader, TensorSlice, _torch_dtype

__all__ = [
    "DEFAULT_REF_TTL",
    "REF_TTL_ENV",
    "CachedSnapshot",
    "LayerCache",
]

logger = logging.getLogger(__name__)

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
#: Environment variable: seconds a branch/tag -> commit mapping is trusted online without asking the Hub.
REF_TTL_ENV = "RLLM_ZOO_HUB_REF_TTL"
DEFAULT_REF_TTL = 24 * 3600.0
_MANIFEST_FORMAT = "rllm_zoo-hub-layer/1"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _ref_ttl() -> float:
    raw = os.environ.get(REF_TTL_ENV, "")
    try:
        return float(raw) if raw.strip() else DEFAULT_REF_TTL
    except ValueError:
        logger.warning("ignoring %s=%r (not a number of seconds)", REF_TTL_ENV, raw)
        return DEFAULT_REF_TTL


@dataclass(frozen=True)
class CachedSnapshot:
    """What the layer cache knows of one commit: a folder with ``config.json``, and the shard index."""

    commit: str
    folder: Path
    weight_map: dict[str, str] | None  # None: a single model.safetensors (or not recorded)
    has_weights: bool


class LayerCache:
    """rllm_zoo's cache of Hub layers (``$RLLM_ZOO_CACHE/hub-layers``, default ``~/.cache/rllm_zoo/hub-layers``).

    Layout, per repo (``models--org--name``)::

        refs/<revision>                      commit a branch/tag resolved to (mtime: when)
        snapshots/<commit>/config.json       the model config (and README.md when it was cached)
        snapshots/<commit>/weights.json      the shard index ({"weight_map": ...} or null)
        snapshots/<commit>/headers/<file>.json   parsed safetensors headers
        layers/<key>.safetensors, <key>.json     one fetched layer and its manifest

    ``key`` is the sha256 of (repo, commit, sorted tensor names).

    Example:
        >>> cache = LayerCache("/tmp/rz-cache")                        # doctest: +SKIP
        >>> cache.lookup_ref("org/model", "main", max_age=None)        # doctest: +SKIP
        '0123456789abcdef0123456789abcdef01234567'
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir() / "hub-layers"

    def repo_dir(self, repo_id: str) -> Path:
        return self.root / ("models--" + repo_id.replace("/", "--"))

    # -- refs ------------------------------------------------------------------------------------------------
    def _ref_path(self, repo_id: str, revision: str) -> Path:
        return self.repo_dir(repo_id) / "refs" / quote(revision, safe="")

    def remember_ref(self, repo_id: str, revision: str, commit: str) -> None:
        """Record that ``revision`` (a branch or tag) pointed to ``commit`` now."""
        if revision != commit:
            _atomic_write(self._ref_path(repo_id, revision), commit.encode())

    def lookup_ref(self, repo_id: str, revision: str, max_age: float | None) -> str | None:
        """The commit ``revision`` resolved to, if recorded less than ``max_age`` seconds ago (None: any age)."""
        if _COMMIT_RE.match(revision):
            return revision
        path = self._ref_path(repo_id, revision)
        try:
            commit = path.read_text().strip()
            age = time.time() - path.stat().st_mtime
        except OSError:
            return None
        if not _COMMIT_RE.match(commit) or (max_age is not None and age > max_age):
            return None
        return commit

    # -- per-commit metadata ------------------------------------------------------------------------------------
    def snapshot_dir(self, repo_id: str, commit: str) -> Path:
        return self.repo_dir(repo_id) / "snapshots" / commit

    def save_snapshot(
        self, repo_id: str, commit: str, folder: Path, weight_map: dict[str, str] | None, *, weights: bool
    ) -> None:
        """Copy ``config.json`` (and ``README.md``) from ``folder``; record the shard index if ``weights``."""
        snap = self.snapshot_dir(repo_id, commit)
        for name in ("README.md", "config.json"):
            src = folder / name
            if src.is_file() and not (snap / name).is_file():
                _atomic_write(snap / name, src.read_bytes())
        if weights:
            _atomic_write(snap / "weights.json", json.dumps({"weight_map": weight_map}).encode())

    def find_snapshot(
        self, repo_id: str, revision: str | None, *, need_weights: bool, offline: bool
    ) -> CachedSnapshot | None:
        """The cached metadata of ``revision`` (no network), or None when anything needed is missing."""
        commit = self.lookup_ref(repo_id, revision or "main", max_age=None if offline else _ref_ttl())
        if commit is None:
            return None
        snap = self.snapshot_dir(repo_id, commit)
        if not (snap / "config.json").is_file():
            return None
        weight_map, has = None, False
        try:
            weight_map = json.loads((snap / "weights.json").read_text())["weight_map"]
            has = True
        except (OSError, ValueError, KeyError, TypeError):
            if need_weights:
                return None
        return CachedSnapshot(commit, snap, weight_map, has)

    def _header_path(self, repo_id: str, commit: str, filename: str) -> Path:
        return self.snapshot_dir(repo_id, commit) / "headers" / (quote(filename, safe="") + ".json")

    def save_header(self, repo_id: str, commit: str, filename: str, header: SafetensorsHeader) -> None:
        _atomic_write(self._header_path(repo_id, commit, filename), json.dumps(header.to_json()).encode())

    def load_header(self, repo_id: str, commit: str, filename: str) -> SafetensorsHeader | None:
        try:
            return SafetensorsHeader.from_json(
                json.loads(self._header_path(repo_id, commit, filename).read_text())
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None

    # -- layer entries --------------------------------------------------------------------------------------------
    @staticmethod
    def entry_key(repo_id: str, commit: str, names: Iterable[str]) -> str:
        h = hashlib.sha256(f"{repo_id}\n{commit}\n".encode())
        for n in sorted(set(names)):
            h.update(n.encode() + b"\n")
        return h.hexdigest()[:40]

    def entry_paths(self, repo_id: str, commit: str, names: Iterable[str]) -> tuple[Path, Path]:
        """``(data.safetensors, manifest.json)`` of the entry for these tensor names."""
        key = self.entry_key(repo_id, commit, names)
        d = self.repo_dir(repo_id) / "layers"
        return d / f"{key}.safetensors", d / f"{key}.json"

    def open_entry(self, repo_id: str, commit: str, names: list[str]) -> _LayerEntry | None:
        """The verified entry for ``names``, or None (a damaged entry is deleted and reported)."""
        data, manifest = self.entry_paths(repo_id, commit, names)
        if not manifest.is_file():
            return None
        try:
            entry = _LayerEntry.load(data, manifest)
            if entry.manifest.get("repo_id") != repo_id or entry.manifest.get("commit") != commit:
                raise CheckpointError("manifest is for another repo or commit")
            if sorted(entry.manifest["tensors"]) != sorted(set(names)):
                raise CheckpointError("manifest lists other tensors")
            entry.verify()
        except (CheckpointError, OSError, ValueError, KeyError, TypeError) as e:
            logger.warning(
                "rllm_zoo layer cache entry %s is damaged (%s): deleting it, it will be fetched again",
                data,
                e,
            )
            manifest.unlink(missing_ok=True)
            data.unlink(missing_ok=True)
            return None
        return entry


class _LayerEntry:
    """A cached layer: a safetensors file written by :class:`_EntryWriter` and its manifest."""

    def __init__(self, data: Path, manifest: dict[str, Any]) -> None:
        self.data = data
        self.manifest = manifest

    @classmethod
    def load(cls, data: Path, manifest_path: Path) -> _LayerEntry:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != _MANIFEST_FORMAT:
            raise CheckpointError(f"unknown manifest format {manifest.get('format')!r}")
        size = data.stat().st_size
        if size != int(manifest["file_size"]):
            raise CheckpointError(f"data file has {size} bytes, manifest says {manifest['file_size']}")
        return cls(data, manifest)

    def _ranges(self) -> Iterator[tuple[str, int, int]]:
        start = int(self.manifest["data_start"])
        for name, t in self.manifest["tensors"].items():
            lo, hi = t["offsets"]
            yield name, start + int(lo), start + int(hi)

    def verify(self) -> None:
        """Recompute every tensor's sha256 from the file; raise :class:`CheckpointError` on a mismatch."""
        with open(self.data, "rb", buffering=0) as f:
            for name, lo, hi in self._ranges():
                h = hashlib.sha256()
                f.seek(lo)
                left = hi - lo
                while left:
                    block = f.read(min(left, 8 << 20))
                    if not block:
                        raise CheckpointError(f"data file ends inside tensor {name!r}")
                    h.update(block)
                    left -= len(block)
                if h.hexdigest() != self.manifest["tensors"][name]["sha256"]:
                    raise CheckpointError(f"sha256 of tensor {name!r} does not match the manifest")

    def iter_tensors(self, names: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Each tensor read into its own (owned, writable) memory."""
        start = int(self.manifest["data_start"])
        with open(self.data, "rb", buffering=0) as f:
            for name in names:
                t = self.manifest["tensors"][name]
                lo, hi = (int(x) for x in t["offsets"])
                buf = torch.empty(hi - lo, dtype=torch.uint8)
                f.seek(start + lo)
                view = memoryview(buf.numpy())
                got = 0
                while got < hi - lo:
                    n = f.readinto(view[got:])
                    if not n:
                        raise CheckpointError(
                            f"{self.data} ends inside tensor {name!r}; it will be refetched"
                        )
                    got += n
                yield name, buf.view(_torch_dtype(t["dtype"], name)).reshape(t["shape"])


class _EntryWriter:
    """Writes one layer entry: a pre-sized temporary safetensors file filled at known offsets, then renamed."""

    def __init__(self, data: Path, manifest: Path, slices: list[tuple[str, TensorSlice]]) -> None:
        self.data_path, self.manifest_path = data, manifest
        # tensor name -> (source file, slice, offset in the data area); data laid out in source order
        self.layout: list[tuple[str, TensorSlice, int]] = []
        offset = 0
        header: dict[str, Any] = {}
        for fname, s in slices:
            _torch_dtype(s.dtype, s.name)
            self.layout.append((fname, s, offset))
            header[s.name] = {
                "dtype": s.dtype,
                "shape": list(s.shape),
                "data_offsets": [offset, offset + s.nbytes],
            }
            offset += s.nbytes
        header["__metadata__"] = {"format": "pt", "producer": "rllm_zoo.hub_ranges"}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.prefix = struct.pack("<Q", len(raw)) + raw
        self.data_start = len(self.prefix)
        self.file_size = self.data_start + offset
        data.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale_temps(data.parent)
        free = shutil.disk_usage(data.parent).free
        if free < self.file_size + (64 << 20):
            raise HubFetchError(
                f"not enough disk space for the layer cache in {data.parent} (needs {self.file_size / 2**20:.0f} MiB, "
                f"{free / 2**20:.0f} MiB free): free some space or point RLLM_ZOO_CACHE elsewhere"
            )
        self.tmp = data.with_name(f"{data.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        os.pwrite(self.fd, self.prefix, 0)
        os.ftruncate(self.fd, self.file_size)

    def write(self, dest: int, data: bytes | memoryview) -> None:
        """Write ``data`` at ``dest`` (an offset in the data area)."""
        view = memoryview(data)
        at = self.data_start + dest
        while view:
            n = os.pwrite(self.fd, view, at)
            view, at = view[n:], at + n

    def commit(self, repo_id: str, commit: str, fetched_bytes: int) -> _LayerEntry:
        """Hash, fsync, write the manifest, rename: the entry becomes visible complete or not at all."""
        tensors: dict[str, Any] = {}
        for fname, s, off in self.layout:
            h = hashlib.sha256()
            pos, end = self.data_start + off, self.data_start + off + s.nbytes
            while pos < end:
                block = os.pread(self.fd, min(end - pos, 8 << 20), pos)
                if not block:
                    raise HubFetchError(f"temporary layer file {self.tmp} is shorter than expected")
                h.update(block)
                pos += len(block)
            tensors[s.name] = {
                "dtype": s.dtype,
                "shape": list(s.shape),
                "offsets": [off, off + s.nbytes],
                "sha256": h.hexdigest(),
                "source": {"file": fname, "range": [s.start, s.end]},
            }
        os.fsync(self.fd)
        manifest = {
            "format": _MANIFEST_FORMAT,
            "repo_id": repo_id,
            "commit": commit,
            "names": sorted(tensors),
            "file": self.data_path.name,
            "file_size": self.file_size,
            "data_start": self.data_start,
            "fetched_bytes": fetched_bytes,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tensors": tensors,
        }
        os.close(self.fd)
        self.fd = -1
        os.replace(self.tmp, self.data_path)
        _atomic_write(self.manifest_path, json.dumps(manifest, indent=1).encode())
        return _LayerEntry(self.data_path, manifest)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.tmp.unlink(missing_ok=True)


def _sweep_stale_temps(folder: Path, max_age: float = 24 * 3600.0) -> None:
    """Remove temporary files left by killed processes (older than ``max_age``)."""
    now = time.time()
    for p in folder.glob("*.tmp"):
        try:
            if now - p.stat().st_mtime > max_age:
                p.unlink()
        except OSError:
            pass
