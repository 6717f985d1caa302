"""One layer of a Hub-hosted safetensors LLM, fetched with HTTP range requests and cached.

A 7B LLM is ~13.5 GB in bf16; one of its decoder layers is ~0.4 GB. :class:`HubRangeCheckpoint`
fetches only that layer:

1. ``config.json`` and ``model.safetensors.index.json`` are downloaded (small files, through
   ``hf_hub_download``); the index says which shard holds each tensor. A repo with a single
   ``model.safetensors`` and no index works too.
2. For each shard holding the layer, the safetensors header is read with two range requests (the
   8-byte header length, then the JSON header): it gives each tensor's dtype, shape and byte range.
3. The byte ranges of the layer's tensors are fetched, merged into few requests (small gaps are read
   through), split into pieces of at most ``chunk_size`` fetched by a few threads.

Every request targets one commit (the revision is resolved first), so all bytes come from the same
immutable snapshot; it goes through ``huggingface_hub``'s HTTP client (``HF_ENDPOINT``, token, user
agent, ``HF_HUB_OFFLINE``). Transient failures (5xx, 408, 429, dropped or reset connections, timeouts)
are retried with exponential backoff, resuming each range at the first byte not yet received. A server
that does not answer ranges (no ``206``) makes it fall back to downloading the whole shards that hold
the layer (``fetch``), into the Hugging Face cache.

The fetched tensors go to a content-addressed cache (:class:`LayerCache`, ``$RLLM_ZOO_CACHE/hub-layers``,
default ``~/.cache/rllm_zoo/hub-layers``): per (repo, commit, layer tensor names) one small safetensors
file plus a JSON manifest recording each tensor's dtype, shape, source range and the sha256 of its
bytes. Entries are written to temporary files and renamed (the manifest last), and verified against the
manifest before every use: a truncated or corrupt entry is deleted and fetched again. The commit's
``config.json``, the shard index and the headers are cached next to them, and branch/tag names are
mapped to the commit they resolved to (``refs/``), so a second call makes no request at all, online
(for ``RLLM_ZOO_HUB_REF_TTL`` seconds, default one day, after a branch or tag was last resolved; a
commit sha never expires) or with ``HF_HUB_OFFLINE=1`` (any age).

Usage (normally through :func:`rllm_zoo.load_llm_block`, which does all of this for ``"org/model"``)::

    from rllm_zoo.llm.hub_ranges import open_hub_model

    model = open_hub_model("huggyllama/llama-7b", revision="main")
    print(model.commit, model.folder / "config.json")
    names = [n for n in model.checkpoint.keys() if n.startswith("model.layers.31.")]
    tensors = model.checkpoint.read(names)  # ~0.4 GB over the network the first time, nothing later
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import torch

from .checkpoint import SAFE_INDEX, SAFE_SINGLE, CheckpointError, SafetensorsCheckpoint, _read_index
from .gguf_source import cache_dir

__all__ = [
    "DEFAULT_RETRY",
    "HubFetchError",
    "HubModel",
    "HubRangeCheckpoint",
    "LayerCache",
    "LayerNotCachedError",
    "RangesNotSupportedError",
    "RetryPolicy",
    "SafetensorsHeader",
    "TensorSlice",
    "coalesce_ranges",
    "open_hub_model",
    "parse_safetensors_header",
]

logger = logging.getLogger(__name__)

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
#: Environment variable: seconds a branch/tag -> commit mapping is trusted online without asking the Hub.
REF_TTL_ENV = "RLLM_ZOO_HUB_REF_TTL"
DEFAULT_REF_TTL = 24 * 3600.0
#: Largest safetensors JSON header accepted (the format's own limit is 100 MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_MANIFEST_FORMAT = "rllm_zoo-hub-layer/1"

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

#: ``fetch(filename, revision) -> local path``: downloads one whole file of the repo (the fallback).
FetchFn = Callable[[str, str], Path]


class HubFetchError(OSError):
    """Fetching byte ranges from the Hub failed for good (after retries) or returned inconsistent data."""


class LayerNotCachedError(CheckpointError):
    """``HF_HUB_OFFLINE=1`` and the wanted tensors are in neither rllm_zoo's layer cache nor the HF cache."""


class RangesNotSupportedError(HubFetchError):
    """The server answered a range request with the whole file (no ``206``): use whole-file downloads."""


# ---------------------------------------------------------------------------------------------------------------
# safetensors headers and byte-range planning


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
        >>> parse_safetensors_header(hdr).tensors["w"].start
        28
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


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient failures: ``max_retries`` tries without progress, waits doubling up to ``max_wait``."""

    max_retries: int = 5
    base_wait: float = 1.0
    max_wait: float = 8.0

    def wait(self, failures: int) -> float:
        return min(self.max_wait, self.base_wait * 2 ** max(0, failures - 1))


DEFAULT_RETRY = RetryPolicy()


# ---------------------------------------------------------------------------------------------------------------
# HTTP: ranged GETs through huggingface_hub's session


class _Transient(Exception):
    """A failure worth retrying (5xx, short body...)."""


def _transport_errors(session: Any) -> tuple[type[BaseException], ...]:
    """The exceptions of the session's HTTP library that mean a dropped, reset or timed-out connection."""
    root = type(session).__module__.split(".")[0]
    if root == "requests":  # huggingface_hub < 1.0
        import requests

        return (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
    import importlib

    mod = importlib.import_module(root)  # httpx / httpx2
    return (mod.TransportError,)


@contextmanager
def _stream_get(session: Any, url: str, headers: dict[str, str], timeout: float | None) -> Iterator[Any]:
    """A streamed GET on an httpx-style or requests-style session; yields the response."""
    if hasattr(session, "stream"):
        with session.stream("GET", url, headers=headers, timeout=timeout) as r:
            yield r
    else:  # requests.Session
        r = session.get(url, headers=headers, timeout=timeout, stream=True)
        try:
            yield r
        finally:
            r.close()


def _iter_body(r: Any) -> Iterator[bytes]:
    """The body as it arrives (no re-buffering: on a dropped connection every byte received is kept)."""
    return r.iter_bytes() if hasattr(r, "iter_bytes") else r.iter_content(1 << 16)


def _norm_etag(value: str | None) -> str | None:
    if not value:
        return None
    return value.removeprefix("W/").strip('"')


class _RemoteFile:
    """One file of one commit on the Hub, read by byte ranges."""

    def __init__(
        self,
        repo_id: str,
        filename: str,
        commit: str,
        token: str | bool | None,
        retry: RetryPolicy,
        user_agent: str = "",
    ) -> None:
        from huggingface_hub import constants, hf_hub_url
        from huggingface_hub.utils import build_hf_headers

        self.repo_id, self.filename, self.commit = repo_id, filename, commit
        self.url = hf_hub_url(repo_id, filename, revision=commit)
        self.headers = build_hf_headers(token=token, library_name="rllm_zoo", user_agent=user_agent or None)
        self.timeout = float(constants.HF_HUB_DOWNLOAD_TIMEOUT)
        self.retry = retry
        self.size: int | None = None
        self.etag: str | None = None
        self._lock = threading.Lock()

    def _check_response(self, r: Any, want_start: int, want_end: int) -> int:
        """Validate a 206 answer; return the last byte it covers."""
        from huggingface_hub.utils import hf_raise_for_status

        status = int(r.status_code)
        if status == 200:
            raise RangesNotSupportedError(
                f"{self.url} answered a range request with the whole file (HTTP 200, "
                f"Accept-Ranges: {r.headers.get('Accept-Ranges', 'absent')})"
            )
        if status in _RETRY_STATUS:
            raise _Transient(f"HTTP {status}")
        if status >= 400:
            if hasattr(r, "read"):  # load the error body: hf_raise_for_status puts it in the message
                r.read()
            else:
                _ = r.content
            hf_raise_for_status(r)
        if status != 206:
            raise HubFetchError(f"unexpected HTTP {status} for a range request to {self.url}")
        m = _CONTENT_RANGE_RE.match(r.headers.get("Content-Range", ""))
        if m is None:
            raise RangesNotSupportedError(f"{self.url} sent 206 without a usable Content-Range")
        first, last, total = int(m.group(1)), int(m.group(2)), m.group(3)
        if first != want_start or last > want_end or last < first:
            raise HubFetchError(
                f"{self.url} sent bytes {first}-{last} for a request of bytes {want_start}-{want_end}"
            )
        repo_commit = r.headers.get("X-Repo-Commit")
        etag = _norm_etag(r.headers.get("X-Linked-Etag") or r.headers.get("ETag"))
        with self._lock:
            if total != "*":
                if self.size is not None and int(total) != self.size:
                    raise HubFetchError(
                        f"{self.filename} changed size on the server while being read ({self.size} -> {total})"
                    )
                self.size = int(total)
            if etag:
                if self.etag is not None and etag != self.etag:
                    raise HubFetchError(
                        f"{self.filename} changed on the server while being read (ETag {self.etag} -> {etag})"
                    )
                self.etag = etag
        if repo_commit and repo_commit != self.commit:
            raise HubFetchError(f"asked {self.url} for commit {self.commit} but got {repo_commit}")
        return last

    def get(self, start: int, end: int, sink: Callable[[int, bytes], None]) -> None:
        """Fetch bytes ``[start, end]`` (inclusive), calling ``sink(position, piece)`` as they arrive.

        Transient failures are retried with backoff; a retry asks only for the bytes not yet received.
        """
        from huggingface_hub.utils import get_session

        session = get_session()
        transport = _transport_errors(session)
        pos, failures = start, 0
        while pos <= end:
            before = pos
            try:
                headers = {**self.headers, "Range": f"bytes={pos}-{end}"}
                with _stream_get(session, self.url, headers, self.timeout) as r:
                    last = self._check_response(r, pos, end)
                    for piece in _iter_body(r):
                        piece = piece[: last + 1 - pos]
                        if piece:
                            sink(pos, piece)
                            pos += len(piece)
                    if pos <= last:
                        raise _Transient(f"body ended at byte {pos} of {last + 1}")
            except (_Transient, *transport) as e:
                failures = 0 if pos > before else failures + 1
                if failures > self.retry.max_retries:
                    raise HubFetchError(
                        f"fetching bytes {start}-{end} of {self.filename} ({self.repo_id}@{self.commit[:12]}) "
                        f"failed {failures} times in a row, last with {type(e).__name__}: {e}. Check the network "
                        "or HF_ENDPOINT and call again: nothing partial was kept."
                    ) from e
                wait = self.retry.wait(max(failures, 1))
                logger.info("retrying %s bytes %d-%d in %.1fs after %s", self.filename, pos, end, wait, e)
                time.sleep(wait)

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end]`` (inclusive) as one ``bytes`` (for small reads: headers)."""
        buf = bytearray(end - start + 1)

        def sink(p: int, piece: bytes) -> None:
            buf[p - start : p - start + len(piece)] = piece

        self.get(start, end, sink)
        return bytes(buf)

    def header(self) -> SafetensorsHeader:
        """The safetensors header, read with two range requests (length, then JSON)."""
        (n,) = struct.unpack("<Q", self.read(0, 7))
        limit = MAX_HEADER_BYTES if self.size is None else min(MAX_HEADER_BYTES, self.size - 8)
        if n == 0 or n > limit:
            raise CheckpointError(
                f"{self.filename} in {self.repo_id}@{self.commit[:12]} declares a {n}-byte safetensors header; "
                "it is not a valid safetensors file"
            )
        raw = self.read(8, 8 + n - 1)
        return parse_safetensors_header(raw, size=self.size, where=f"{self.repo_id}/{self.filename}")


# ---------------------------------------------------------------------------------------------------------------
# the cache


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


def _describe(names: list[str]) -> str:
    """``model.layers.3.* (9 tensors)``: a short name for a set of tensors."""
    if not names:
        return "no tensors"
    lo, hi = min(names), max(names)  # the common prefix of all names is that of these two
    n = next((i for i, (a, b) in enumerate(zip(lo, hi)) if a != b), min(len(lo), len(hi)))
    prefix = lo[:n]
    prefix = prefix[: prefix.rfind(".") + 1] if "." in prefix else prefix
    return f"{prefix}* ({len(names)} tensors)" if len(names) > 1 else names[0]


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


def _torch_dtype(code: str, name: str) -> torch.dtype:
    dt = _ST_DTYPES.get(code)
    if dt is None:
        raise CheckpointError(
            f"tensor {name!r} has safetensors dtype {code}, which this torch ({torch.__version__}) cannot hold; "
            "upgrade torch"
        )
    return dt


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


# ---------------------------------------------------------------------------------------------------------------
# the checkpoint


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hf_cached(repo_id: str, filename: str, commit: str) -> Path | None:
    """The file's path in the Hugging Face cache for ``commit``, if it is there (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=commit)
    return Path(found) if isinstance(found, str) else None


def _default_fetch(repo_id: str, token: str | bool | None) -> FetchFn:
    def fetch(filename: str, revision: str) -> Path:
        from huggingface_hub import hf_hub_download

        return Path(
            hf_hub_download(repo_id, filename, revision=revision, token=token, local_files_only=_offline())
        )

    return fetch


class HubRangeCheckpoint:
    """The safetensors weights of one Hub commit, read tensor by tensor through byte ranges.

    Same reading interface as :class:`~rllm_zoo.llm.checkpoint.SafetensorsCheckpoint` (``keys``,
    ``files_for``, ``iter_tensors``, ``read``). Where the tensors come from, first found wins:
    rllm_zoo's layer cache, shards already in the Hugging Face cache, HTTP range requests (which fill
    the layer cache), whole-shard downloads when the server ignores ranges.

    Args:
        repo_id: the model repo.
        commit: the 40-hex commit every byte is read from.
        weight_map: the shard index's ``weight_map``; ``None`` for a single ``model.safetensors``
            (its header then lists the tensors).
        token: Hub token (``None``: the saved one, ``False``: none).
        cache: the layer cache (default: :class:`LayerCache` under ``$RLLM_ZOO_CACHE``).
        fetch: ``fetch(filename, revision) -> Path`` downloading a whole file (default ``hf_hub_download``).
        retry: retry policy of the range requests.
        max_gap, chunk_size, max_workers: request planning: gaps up to ``max_gap`` bytes between
            wanted tensors are read through; requests are at most ``chunk_size`` bytes, ``max_workers``
            in flight.

    Example:
        >>> ckpt = HubRangeCheckpoint("org/model", commit, index["weight_map"])   # doctest: +SKIP
        >>> layer = ckpt.read([n for n in ckpt.keys() if ".layers.31." in n])     # doctest: +SKIP
    """

    #: the tensors yielded own their memory (``_fill_layer`` need not copy them)
    owns_tensors = True

    def __init__(
        self,
        repo_id: str,
        commit: str,
        weight_map: dict[str, str] | None,
        *,
        token: str | bool | None = None,
        cache: LayerCache | None = None,
        fetch: FetchFn | None = None,
        retry: RetryPolicy | None = None,
        max_gap: int = 1 << 20,
        chunk_size: int = 64 << 20,
        max_workers: int = 4,
    ) -> None:
        if not _COMMIT_RE.match(commit):
            raise ValueError(f"commit must be a 40-hex commit sha, got {commit!r}")
        self.repo_id, self.commit, self.token = repo_id, commit, token
        self.cache = cache or LayerCache()
        self.fetch = fetch or _default_fetch(repo_id, token)
        self.retry = retry or DEFAULT_RETRY
        self.max_gap, self.chunk_size, self.max_workers = max_gap, max(1, chunk_size), max(1, max_workers)
        self._weight_map = dict(weight_map) if weight_map is not None else None
        self._remote: dict[str, _RemoteFile] = {}
        self._lock = threading.Lock()
        self._headers: dict[str, SafetensorsHeader] = {}
        #: body bytes received by range requests (headers and tensors) by this object
        self.bytes_fetched = 0
        #: where the last ``iter_tensors`` read from: "cache", "hf-cache", "ranges" or "shards"
        self.last_source: str | None = None
        #: False once the server answered a range request with the whole file (then whole shards are downloaded)
        self.ranges_supported: bool | None = None

    def __repr__(self) -> str:
        return f"HubRangeCheckpoint({self.repo_id!r}, commit={self.commit[:12]!r})"

    # -- names -----------------------------------------------------------------------------------------------------
    @property
    def weight_map(self) -> dict[str, str]:
        if self._weight_map is None:
            self._weight_map = dict.fromkeys(self._header(SAFE_SINGLE).tensors, SAFE_SINGLE)
        return self._weight_map

    def keys(self) -> list[str]:
        return list(self.weight_map)

    def files_for(self, names: Iterable[str]) -> list[str]:
        """The distinct files (relative names) holding ``names``."""
        return sorted({self.weight_map[n] for n in names})

    def _remote_file(self, filename: str) -> _RemoteFile:
        with self._lock:  # one object per file: it checks that size and ETag stay the same across requests
            if filename not in self._remote:
                self._remote[filename] = _RemoteFile(
                    self.repo_id, filename, self.commit, self.token, self.retry
                )
            return self._remote[filename]

    def _header(self, filename: str, download: bool = True) -> SafetensorsHeader:
        """The header of ``filename``: memory, layer cache, HF cache, range requests, else a whole download.

        With ``download=False`` a server without range support raises :class:`RangesNotSupportedError`
        instead of downloading the whole file (the caller falls back for all files at once).
        """
        from huggingface_hub.errors import EntryNotFoundError

        if filename in self._headers:
            return self._headers[filename]
        header = self.cache.load_header(self.repo_id, self.commit, filename)
        if header is None:
            local = _hf_cached(self.repo_id, filename, self.commit)
            if local is not None:
                header = _read_local_header(local)
            elif _offline():
                raise self._offline_error([], what=f"the safetensors header of {filename}")
            else:
                remote = self._remote_file(filename)
                try:
                    if self.ranges_supported is False:
                        raise RangesNotSupportedError(f"{self.repo_id} is served without range support")
                    header = remote.header()
                    self.bytes_fetched += header.data_start
                except RangesNotSupportedError:
                    self.ranges_supported = False
                    if not download:
                        raise
                    header = _read_local_header(self.fetch(filename, self.commit))
                except EntryNotFoundError as e:
                    if filename == SAFE_SINGLE:
                        raise CheckpointError(
                            f"{self.repo_id!r} has neither {SAFE_INDEX} nor {SAFE_SINGLE} at commit "
                            f"{self.commit[:12]}; rllm_zoo reads Hub weights as safetensors only"
                        ) from e
                    raise CheckpointError(
                        f"shard {filename!r} listed in the index of {self.repo_id}@{self.commit[:12]} does not "
                        "exist in the repo; the index is broken"
                    ) from e
                self.cache.save_header(self.repo_id, self.commit, filename, header)
        self._headers[filename] = header
        return header

    # -- reading ----------------------------------------------------------------------------------------------------
    def _offline_error(self, names: list[str], what: str | None = None) -> LayerNotCachedError:
        what = what or f"tensors {_describe(names)}"
        return LayerNotCachedError(
            f"{what} of {self.repo_id}@{self.commit[:12]} are not in the rllm_zoo layer cache "
            f"({self.cache.repo_dir(self.repo_id)}) nor in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids "
            "downloading them. Run the same call once with network access (unset HF_HUB_OFFLINE) to cache this "
            "layer, or pass a local model folder."
        )

    def _local_folder(self, files: list[str]) -> Path | None:
        """The HF-cache snapshot folder if every file in ``files`` is there, else None."""
        folder = None
        for fname in files:
            path = _hf_cached(self.repo_id, fname, self.commit)
            if path is None:
                return None
            folder = path.parents[len(Path(fname).parts) - 1]
        return folder

    def _iter_local(self, folder: Path, names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
        wm = {n: self.weight_map[n] for n in names}
        for n, t in SafetensorsCheckpoint(folder, weight_map=wm).iter_tensors(names):
            yield n, t.clone()  # own the memory, release the file mapping

    def iter_tensors(self, names: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(name, tensor)`` for ``names``; the first call fetches and caches them (see class doc)."""
        names = list(dict.fromkeys(names))
        unknown = [n for n in names if n not in self.weight_map]
        if unknown:
            raise CheckpointError(
                f"{self.repo_id}@{self.commit[:12]} has no tensor {unknown[0]!r} ({len(unknown)} unknown names)"
            )
        entry = self.cache.open_entry(self.repo_id, self.commit, names)
        if entry is None:
            files = self.files_for(names)
            folder = self._local_folder(files)
            if folder is not None:
                self.last_source = "hf-cache"
                yield from self._iter_local(folder, names)
                return
            if _offline():
                raise self._offline_error(names)
            try:
                entry = self._fetch_entry(names)
                self.last_source = "ranges"
            except RangesNotSupportedError as e:
                self.ranges_supported = False
                logger.warning(
                    "%s; downloading the whole shard(s) holding the layer instead: %s", e, ", ".join(files)
                )
                for fname in files:
                    self.fetch(fname, self.commit)
                folder = self._local_folder(files)
                if folder is None:
                    raise HubFetchError(
                        f"downloaded {', '.join(files)} of {self.repo_id}@{self.commit[:12]} but cannot find them "
                        "in the Hugging Face cache"
                    ) from e
                self.last_source = "shards"
                yield from self._iter_local(folder, names)
                return
        else:
            self.last_source = "cache"
        yield from entry.iter_tensors(names)

    def read(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """All of ``names`` as a dict (convenience over :meth:`iter_tensors`)."""
        return dict(self.iter_tensors(names))

    def _fetch_entry(self, names: list[str]) -> _LayerEntry:
        """Fetch the byte ranges of ``names`` into a new layer-cache entry."""
        slices: list[tuple[str, TensorSlice]] = []
        for fname in self.files_for(names):
            header = self._header(fname, download=False)
            for n in names:
                if self.weight_map[n] != fname:
                    continue
                if n not in header.tensors:
                    raise CheckpointError(
                        f"tensor {n!r} is listed in the index of {self.repo_id}@{self.commit[:12]} but absent "
                        f"from {fname}; the shard does not belong to this index"
                    )
                slices.append((fname, header.tensors[n]))
        slices.sort(key=lambda fs: (fs[0], fs[1].start))
        data_path, manifest_path = self.cache.entry_paths(self.repo_id, self.commit, names)
        writer = _EntryWriter(data_path, manifest_path, slices)
        try:
            # plan: per file, merged ranges, split into chunks; each chunk knows the tensors it overlaps
            chunks: list[tuple[str, int, int, list[tuple[TensorSlice, int]]]] = []
            for fname in sorted({f for f, _ in slices}):
                mine = [(s, off) for f, s, off in writer.layout if f == fname and s.nbytes]
                for lo, hi in coalesce_ranges([(s.start, s.end) for s, _ in mine], max_gap=self.max_gap):
                    for c0 in range(lo, hi, self.chunk_size):
                        c1 = min(hi, c0 + self.chunk_size)
                        members = [(s, off) for s, off in mine if s.start < c1 and s.end > c0]
                        chunks.append((fname, c0, c1, members))
            total = sum(c1 - c0 for _, c0, c1, _ in chunks)
            with _progress(total, f"{self.repo_id} {_describe(names)}") as bar:
                lock = threading.Lock()

                def run(chunk: tuple[str, int, int, list[tuple[TensorSlice, int]]]) -> None:
                    fname, c0, c1, members = chunk

                    def sink(pos: int, piece: bytes) -> None:
                        view = memoryview(piece)
                        p_end = pos + len(piece)
                        for s, off in members:
                            a, b = max(pos, s.start), min(p_end, s.end)
                            if a < b:
                                writer.write(off + a - s.start, view[a - pos : b - pos])
                        with lock:
                            self.bytes_fetched += len(piece)
                            bar.update(len(piece))

                    self._remote_file(fname).get(c0, c1 - 1, sink)

                if len(chunks) <= 1 or self.max_workers == 1:
                    for c in chunks:
                        run(c)
                else:
                    with concurrent.futures.ThreadPoolExecutor(min(self.max_workers, len(chunks))) as pool:
                        futures = [pool.submit(run, c) for c in chunks]
                        try:
                            for fut in concurrent.futures.as_completed(futures):
                                fut.result()
                        except BaseException:
                            for fut in futures:
                                fut.cancel()
                            raise
            return writer.commit(self.repo_id, self.commit, total)
        except BaseException:
            writer.abort()
            raise


@contextmanager
def _progress(total: int, desc: str) -> Iterator[Any]:
    """A bytes progress bar; off when stderr is not a terminal or ``HF_HUB_DISABLE_PROGRESS_BARS=1``."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    # disable=None: tqdm turns itself off when not writing to a tty; huggingface_hub's subclass also
    # honours HF_HUB_DISABLE_PROGRESS_BARS / disable_progress_bars().
    bar = hf_tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc[:60], disable=None)
    try:
        yield bar
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------------------------
# resolving a Hub model


@dataclass
class HubModel:
    """A Hub model resolved to one commit: a folder with its ``config.json``, and its weights reader."""

    repo_id: str
    commit: str
    folder: Path
    checkpoint: HubRangeCheckpoint | None


def open_hub_model(
    repo_id: str,
    revision: str | None = None,
    *,
    token: str | bool | None = None,
    weights: bool = True,
    fetch: FetchFn | None = None,
    cache: LayerCache | None = None,
) -> HubModel:
    """Resolve ``repo_id@revision`` to a commit, its config and (with ``weights``) a :class:`HubRangeCheckpoint`.

    Without any request when the layer cache knows the revision (see the module doc); otherwise
    ``config.json`` and ``model.safetensors.index.json`` are fetched through ``fetch`` (default:
    ``hf_hub_download``, which resolves the revision) and recorded in the layer cache.

    Args:
        fetch: ``fetch(filename, revision) -> Path`` for whole files; it raises ``EntryNotFoundError``
            for a file the repo does not have. :func:`rllm_zoo.load_llm_block` passes one whose errors
            name the fix.

    Example:
        >>> m = open_hub_model("huggyllama/llama-7b", revision="main")                # doctest: +SKIP
        >>> m.commit, sorted(m.checkpoint.keys())[:1]                                  # doctest: +SKIP
    """
    from huggingface_hub.errors import EntryNotFoundError

    cache = cache or LayerCache()
    fetch = fetch or _default_fetch(repo_id, token)
    offline = _offline()

    def reader(commit: str, weight_map: dict[str, str] | None) -> HubRangeCheckpoint:
        return HubRangeCheckpoint(repo_id, commit, weight_map, token=token, cache=cache, fetch=fetch)

    snap = cache.find_snapshot(repo_id, revision, need_weights=weights, offline=offline)
    if snap is not None:
        return HubModel(
            repo_id, snap.commit, snap.folder, reader(snap.commit, snap.weight_map) if weights else None
        )

    folder = fetch("config.json", revision or "main").parent
    commit = folder.name
    if not _COMMIT_RE.match(commit):
        raise HubFetchError(f"the Hugging Face cache folder {folder} is not named by a commit sha")
    weight_map: dict[str, str] | None = None
    if weights:
        if offline:
            index = _hf_cached(repo_id, SAFE_INDEX, commit)
            if index is not None:
                weight_map = _read_index(index)
            elif _hf_cached(repo_id, SAFE_SINGLE, commit) is None:
                raise LayerNotCachedError(
                    f"{repo_id}@{commit[:12]}: neither {SAFE_INDEX} nor {SAFE_SINGLE} is in the Hugging Face "
                    f"cache or the rllm_zoo layer cache ({cache.repo_dir(repo_id)}), and HF_HUB_OFFLINE=1 forbids "
                    "downloading them. Run the same call once with network access (unset HF_HUB_OFFLINE), or pass "
                    "a local model folder."
                )
        else:
            try:
                weight_map = _read_index(fetch(SAFE_INDEX, commit))
            except EntryNotFoundError:
                weight_map = None  # a single model.safetensors: its header lists the tensors
    if not offline:
        cache.save_snapshot(repo_id, commit, folder, weight_map, weights=weights)
        cache.remember_ref(repo_id, revision or "main", commit)
    return HubModel(repo_id, commit, folder, reader(commit, weight_map) if weights else None)
