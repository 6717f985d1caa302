"""A local, in-memory server that speaks enough of the Hugging Face Hub HTTP API for ``huggingface_hub``.

Test helper only (not part of the package). Stdlib only: a :class:`http.server.ThreadingHTTPServer` runs in a
daemon thread on ``127.0.0.1`` (free port). The unmodified ``huggingface_hub`` client (``HfApi``,
``hf_hub_download``, ``snapshot_download``, ``HfFileSystem``) works against it once pointed at it (see
:func:`point_hub_client`, used by the ``local_hub`` fixture in ``tests/conftest.py``).

Usage::

    server = LocalHubServer().start()
    sha = server.add_files("user/repo", {"config.json": b"{}", "model.safetensors": weights}, tag="v1")
    # ... point the client at server.url (HF_ENDPOINT + patched constants), then use huggingface_hub ...
    server.inject("drop", match="/resolve/", method="GET", after_bytes=1000)  # next matching GET dies mid-body
    print(server.bytes_sent("model.safetensors"))
    server.stop()

What is implemented (JSON shapes and headers as the real Hub sends them, as far as the client reads them):

* ``POST /api/repos/create`` (409 + ``url`` when it exists), ``DELETE /api/repos/delete``, ``GET /api/whoami-v2``,
  ``POST /api/validate-yaml``.
* ``GET /api/{models,datasets,spaces}/{repo_id}[/revision/{rev}]`` (``sha``, ``siblings``; ``?blobs=true`` adds
  sizes, blob ids and LFS info), ``.../refs``, ``.../tree/{rev}[/{path}]`` (``recursive``, ``expand``),
  ``POST .../paths-info/{rev}``, ``GET .../commits/{rev}``, ``POST/DELETE .../tag/{rev}``,
  ``POST/DELETE .../branch/{name}``.
* Uploads: ``POST .../preupload/{rev}`` decides ``regular`` vs ``lfs`` (see :meth:`LocalHubServer.is_lfs`),
  the git-LFS batch API ``POST /{repo_id}.git/info/lfs/objects/batch`` with the ``basic`` transfer (``PUT`` upload
  + ``verify`` on this server), then the NDJSON ``POST .../commit/{rev}`` (``file``, ``lfsFile``, ``deletedFile``,
  ``deletedFolder``; ``create_pr=1``; ``parentCommit`` must be the branch head). Xet is never advertised.
* Downloads: ``HEAD``/``GET /[datasets/|spaces/]{repo_id}/resolve/{rev}/{path}`` answered directly with 200 (no
  redirect), ``X-Repo-Commit``, quoted ``ETag`` (git blob sha1 of regular files, sha256 of LFS files),
  ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, ``Content-Length``, ``Accept-Ranges: bytes``; single HTTP
  ranges (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) get 206 + ``Content-Range`` (416 when unsatisfiable).
* ``server.ranges_enabled = False`` makes ``/resolve`` ignore ``Range`` (always 200, no ``Accept-Ranges``), like a
  server or proxy without range support.
* ``add_files(..., file_backed=True)`` serves LFS files given as paths straight from disk (never read into memory):
  for multi-GB benchmarks. The files must not change while served.
* Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and
  ``X-Error-Message`` plus a JSON ``{"error": ...}`` body, so the client raises ``RepositoryNotFoundError``,
  ``RevisionNotFoundError`` and ``RemoteEntryNotFoundError``.

A revision is a branch (``main``, ``refs/heads/x``), a tag (``v1``, ``refs/tags/v1``), a PR ref (``refs/pr/1``), a
full 40-hex commit sha, or an unambiguous sha prefix of 7+ hex digits. Each commit is an immutable snapshot
(path -> blob). New repos start with one commit holding a ``.gitattributes`` file, like on the Hub.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "DEFAULT_LFS_SUFFIXES",
    "Blob",
    "Commit",
    "Fault",
    "FileData",
    "LocalHubServer",
    "RequestRecord",
    "client_env",
    "git_blob_sha1",
    "point_hub_client",
    "reset_hub_client",
    "set_hub_offline",
]

#: File suffixes stored with git-LFS, like the Hub's default ``.gitattributes`` (plus ``.gguf``).
DEFAULT_LFS_SUFFIXES: tuple[str, ...] = (
    ".safetensors",
    ".pt",
    ".pth",
    ".bin",
    ".gguf",
    ".ckpt",
    ".onnx",
    ".h5",
    ".msgpack",
    ".npy",
    ".npz",
    ".pkl",
    ".pickle",
    ".zip",
    ".gz",
    ".tar",
    ".tgz",
    ".xz",
    ".zst",
    ".parquet",
    ".arrow",
)
#: Files at least this large are LFS files whatever their name (the Hub's limit for regular git blobs).
DEFAULT_LFS_THRESHOLD = 10 * 1024 * 1024

REPO_TYPES = ("model", "dataset", "space")
_PLURAL_TO_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_SHORT_SHA_RE = re.compile(r"^[0-9a-f]{7,39}$")
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_API_SUBPATHS = {"revision", "refs", "tree", "paths-info", "commits", "preupload", "commit", "tag", "branch"}

FaultKind = Literal["status", "delay", "drop"]


def _utc_iso(dt: datetime) -> str:
    """The Hub's date format: ``2024-05-01T12:00:00.000Z``."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob holding ``data`` (what the Hub reports as ``oid``/``ETag`` of regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-LFS pointer file committed in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class FileData:
    """A byte range of a file on disk that behaves like ``bytes`` for the server (``len``, slicing, pieces).

    Lets :class:`Blob` serve multi-GB files without reading them into memory (``add_files(..., file_backed=True)``).
    """

    __slots__ = ("length", "path", "start")

    def __init__(self, path: str | os.PathLike[str], start: int = 0, length: int | None = None) -> None:
        self.path = Path(path)
        self.start = start
        self.length = self.path.stat().st_size - start if length is None else length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: slice) -> FileData:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("FileData supports plain slices only")
        lo, hi, _ = key.indices(self.length)
        return FileData(self.path, self.start + lo, max(0, hi - lo))

    def pieces(self, size: int) -> Iterable[bytes]:
        """The bytes, ``size`` at a time."""
        with open(self.path, "rb") as f:
            f.seek(self.start)
            left = self.length
            while left > 0:
                piece = f.read(min(size, left))
                if not piece:
                    raise OSError(f"{self.path} shrank while being served")
                left -= len(piece)
                yield piece

    def tobytes(self) -> bytes:
        return b"".join(self.pieces(1 << 24))

    def sha256(self) -> str:
        h = hashlib.sha256()
        for piece in self.pieces(1 << 24):
            h.update(piece)
        return h.hexdigest()


class Blob:
    """File content in a commit; ``lfs`` says whether it was committed as a git-LFS file.

    ``data`` is ``bytes``, or a :class:`FileData` for file-backed LFS blobs (``sha256`` may then be given to skip
    hashing the file).
    """

    __slots__ = ("data", "git_oid", "lfs", "pointer_size", "sha256")

    def __init__(self, data: bytes | FileData, lfs: bool, sha256: str | None = None) -> None:
        if isinstance(data, FileData) and not lfs:
            raise ValueError("file-backed blobs must be LFS files")
        self.data = data
        self.lfs = lfs
        if sha256 is None:
            sha256 = data.sha256() if isinstance(data, FileData) else hashlib.sha256(data).hexdigest()
        self.sha256 = sha256
        pointer = lfs_pointer(self.sha256, len(data))
        self.pointer_size = len(pointer)
        # For LFS files git stores (and the Hub reports) the oid of the pointer file.
        self.git_oid = git_blob_sha1(pointer) if lfs else git_blob_sha1(bytes(data))

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def etag(self) -> str:
        """The value of the ``ETag`` header on ``/resolve`` (sha256 for LFS files, git sha1 otherwise)."""
        return self.sha256 if self.lfs else self.git_oid

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Blob) and (self.git_oid, self.lfs) == (other.git_oid, other.lfs)

    def __hash__(self) -> int:
        return hash((self.git_oid, self.lfs))


@dataclass(frozen=True)
class Commit:
    """An immutable snapshot of a repo: ``files`` maps paths to blobs."""

    sha: str
    files: Mapping[str, Blob]
    parent: str | None
    title: str
    message: str
    date: datetime


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: datetime
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[int, str] = field(default_factory=dict)


@dataclass
class RequestRecord:
    """One request as the server saw it.

    ``status`` is the status line sent (0 if none was), ``body_bytes`` the response-body bytes handed to the socket
    (counted just before each 64 KiB write, so a response the client has received is always fully logged; a write
    that fails half-way may overstate by one piece), ``fault`` the kind of injected fault that hit it, if any.
    """

    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int
    fault: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


@dataclass
class Fault:
    """A fault armed by :meth:`LocalHubServer.inject`; ``remaining`` counts down (``None`` = until cleared)."""

    kind: FaultKind
    match: str = ""
    method: str | None = None
    remaining: int | None = 1
    status: int = 500
    error_code: str | None = None
    message: str = "Injected fault"
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    after_bytes: int | None = None
    reset: bool = False
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        return self.match in path or self.match in unquote(path)


class _HubError(Exception):
    """An error answer: status, ``X-Error-Code`` and message."""

    def __init__(self, status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class _Response:
    status: int
    body: bytes | FileData = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


def _json(data: Any, status: int = 200, content_type: str = "application/json") -> _Response:
    return _Response(status, json.dumps(data).encode(), content_type=content_type)


class LocalHubServer:
    """An in-memory Hub: repos, commits, branches, tags, LFS store, request log and fault injection.

    Example::

        with LocalHubServer() as server:
            server.add_files("me/tiny", {"weights.safetensors": b"..."}, message="add weights", tag="v1")
            server.url  # -> "http://127.0.0.1:<port>", the value of HF_ENDPOINT
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        username: str = "local-user",
        lfs_suffixes: Iterable[str] = DEFAULT_LFS_SUFFIXES,
        lfs_threshold: int = DEFAULT_LFS_THRESHOLD,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.lfs_suffixes = tuple(s.lower() for s in lfs_suffixes)
        self.lfs_threshold = lfs_threshold
        #: Client environment (``HF_ENDPOINT`` ...) while a test points the client here (set by ``local_hub``).
        self.env: dict[str, str] = {}
        #: ``HF_HOME`` of the current test (the hub cache is ``hf_home / "hub"``), or None.
        self.hf_home: Path | None = None
        #: Answer ``Range`` requests with 206 (set False to emulate a server without range support: 200, no
        #: ``Accept-Ranges``).
        self.ranges_enabled = True
        self._patcher: _Patcher | None = None
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lfs_store: dict[str, bytes] = {}
        self._log: list[RequestRecord] = []
        self._log_generation = 0
        self._faults: list[Fault] = []
        self._counter = itertools.count()
        self._stopping = threading.Event()
        self._httpd: _HubHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalHubServer:
        """Bind and serve in a daemon thread; returns ``self``."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HubHTTPServer((self.host, self.port), _HubRequestHandler)
        httpd.hub = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="local-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; pending delays are interrupted at once."""
        self._stopping.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalHubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The endpoint, e.g. ``http://127.0.0.1:54321`` (use as ``HF_ENDPOINT``)."""
        return f"http://{self.host}:{self.port}"

    endpoint = url

    # ------------------------------------------------------------------ LFS policy
    def is_lfs(self, path: str, size: int, sample: bytes = b"") -> bool:
        """Whether a file goes to LFS: known binary suffix, ``size >= lfs_threshold``, or a NUL byte in ``sample``."""
        return (
            path.lower().endswith(self.lfs_suffixes)
            or size >= self.lfs_threshold
            or (size > 0 and b"\0" in sample[:512])
        )

    def _gitattributes(self) -> bytes:
        lines = [f"*{s} filter=lfs diff=lfs merge=lfs -text" for s in self.lfs_suffixes]
        return ("\n".join(lines) + "\n").encode()

    # ------------------------------------------------------------------ direct seeding (no HTTP)
    def create_repo(
        self, repo_id: str, repo_type: str = "model", *, private: bool = False, exist_ok: bool = True
    ) -> None:
        """Create a repo with an initial commit holding ``.gitattributes`` on ``main``."""
        with self._lock:
            key = (repo_type, repo_id)
            if key in self._repos:
                if exist_ok:
                    return
                raise ValueError(f"{repo_type} repo {repo_id!r} exists")
            if repo_type not in REPO_TYPES:
                raise ValueError(f"bad repo_type {repo_type!r}")
            repo = _Repo(repo_type, repo_id, private, datetime.now(timezone.utc))
            self._repos[key] = repo
            commit = self._new_commit(
                repo, None, {".gitattributes": Blob(self._gitattributes(), False)}, "initial commit", ""
            )
            repo.branches["main"] = commit.sha

    def new_repo_id(self, name: str = "repo") -> str:
        """A repo id not used yet on this server, e.g. ``local-user/repo-3`` (the server lives for the session)."""
        return f"{self.username}/{name}-{next(self._counter)}"

    def delete_repo(self, repo_id: str, repo_type: str = "model") -> None:
        """Delete a repo (no error if missing)."""
        with self._lock:
            self._repos.pop((repo_type, repo_id), None)

    def add_files(
        self,
        repo_id: str,
        files: Mapping[str, bytes | str | os.PathLike[str]],
        *,
        message: str = "add files",
        description: str = "",
        repo_type: str = "model",
        branch: str = "main",
        tag: str | None = None,
        delete: Iterable[str] = (),
        lfs: bool | None = None,
        file_backed: bool = False,
        known_sha256: Mapping[str, str] | None = None,
    ) -> str:
        """Commit ``files`` (path -> bytes, text, or local file path) on ``branch``; returns the commit sha.

        Creates the repo (and the branch, from ``main``) if needed. ``lfs=None`` applies :meth:`is_lfs`;
        ``True``/``False`` forces the storage of every file of this commit. ``tag`` tags the new commit.
        With ``file_backed=True``, LFS files given as local paths are served from disk, never read into memory
        (hashed once, streaming, unless ``known_sha256`` gives their sha256); they must not change while served.
        """
        changes: dict[str, Blob | None] = {}
        for path, value in files.items():
            if file_backed and isinstance(value, os.PathLike):
                fd = FileData(value)
                with open(fd.path, "rb") as f:
                    sample = f.read(512)
                if self.is_lfs(path, len(fd), sample) if lfs is None else lfs:
                    changes[path.strip("/")] = Blob(fd, True, sha256=(known_sha256 or {}).get(path))
                    continue
            if isinstance(value, bytes):
                data = value
            elif isinstance(value, str):
                data = value.encode()
            else:
                data = Path(value).read_bytes()
            is_lfs = self.is_lfs(path, len(data), data[:512]) if lfs is None else lfs
            changes[path.strip("/")] = Blob(data, is_lfs)
        for path in delete:
            changes[path.strip("/")] = None
        with self._lock:
            self.create_repo(repo_id, repo_type)
            repo = self._repos[(repo_type, repo_id)]
            if branch not in repo.branches:
                repo.branches[branch] = repo.branches["main"]
            for blob in changes.values():
                if blob is not None and blob.lfs:
                    self._lfs_store[blob.sha256] = blob.data
            head = repo.commits[repo.branches[branch]]
            new_files = dict(head.files)
            for path, blob in changes.items():
                if blob is None:
                    new_files.pop(path, None)
                else:
                    new_files[path] = blob
            commit = self._new_commit(repo, head.sha, new_files, message, description)
            repo.branches[branch] = commit.sha
            if tag is not None:
                repo.tags[tag] = commit.sha
            return commit.sha

    def create_branch(
        self, repo_id: str, branch: str, revision: str = "main", repo_type: str = "model"
    ) -> str:
        """Create (or move) ``branch`` to ``revision``; returns its commit sha."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            sha = self._resolve(repo, revision)
            repo.branches[branch] = sha
            return sha

    def create_tag(self, repo_id: str, tag: str, revision: str = "main", repo_type: str = "model") -> str:
        """Create (or move) ``tag`` to ``revision``; returns its commit sha."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            sha = self._resolve(repo, revision)
            repo.tags[tag] = sha
            return sha

    def resolve_revision(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        """The commit sha a branch/tag/sha(-prefix) points to (``KeyError`` if unknown)."""
        with self._lock:
            try:
                return self._resolve(self._get_repo(repo_type, repo_id), revision)
            except _HubError as e:
                raise KeyError(e.message) from None

    def repo_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """A copy of the snapshot at ``revision`` as ``{path: bytes}``."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            files = repo.commits[self._resolve(repo, revision)].files
            return {p: b.data.tobytes() if isinstance(b.data, FileData) else b.data for p, b in files.items()}

    def commit(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> Commit:
        """The :class:`Commit` at ``revision`` (its ``files`` map is read-only)."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            return repo.commits[self._resolve(repo, revision)]

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def clear_repos(self) -> None:
        """Forget every repo and LFS object."""
        with self._lock:
            self._repos.clear()
            self._lfs_store.clear()

    # ------------------------------------------------------------------ instrumentation
    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._log)

    def requests_matching(
        self, path_substring: str | None = None, method: str | None = None
    ) -> list[RequestRecord]:
        """Logged requests whose path contains ``path_substring`` (raw or unquoted) and whose method matches."""
        out = []
        for r in self.requests:
            if method is not None and r.method != method.upper():
                continue
            if (
                path_substring is not None
                and path_substring not in r.path
                and path_substring not in unquote(r.path)
            ):
                continue
            out.append(r)
        return out

    def bytes_sent(self, path_substring: str | None = None, method: str | None = None) -> int:
        """Total response-body bytes sent for the matching requests (headers not counted)."""
        return sum(r.body_bytes for r in self.requests_matching(path_substring, method))

    def reset_stats(self) -> None:
        """Clear the request log. A request that arrived before the reset is never logged after it, even if it
        finishes later (a stalled answer from an earlier test whose client gave up long ago)."""
        with self._lock:
            self._log.clear()
            self._log_generation += 1

    def _record(self, record: RequestRecord, generation: int) -> None:
        with self._lock:
            if generation == self._log_generation:
                self._log.append(record)

    # ------------------------------------------------------------------ fault injection
    def inject(
        self,
        kind: FaultKind,
        match: str = "",
        *,
        method: str | None = None,
        count: int | None = 1,
        status: int = 500,
        error_code: str | None = None,
        message: str = "Injected fault",
        headers: Mapping[str, str] | None = None,
        seconds: float = 0.0,
        after_bytes: int | None = None,
        reset: bool = False,
    ) -> Fault:
        """Arm a fault for the next ``count`` requests (``None``: until :meth:`clear_faults`) matching ``method``
        (any if None) and containing ``match`` in their path. Faults apply in the order they were armed.

        * ``"status"``: answer ``status`` with a JSON error body, optional ``X-Error-Code`` and extra ``headers``.
        * ``"delay"``: sleep ``seconds`` before answering (interruptible by :meth:`stop`); with ``after_bytes``,
          send headers and the first ``after_bytes`` body bytes, then stall (a read timeout mid-download).
        * ``"drop"``: send headers and the first ``after_bytes`` (default 0) body bytes, then close the connection:
          a clean close (FIN; the client sees a truncated body) or, with ``reset=True``, a TCP reset (RST).

        Examples::

            server.inject("status", "/api/models/me/repo", status=503, count=2)
            server.inject("delay", "/resolve/main/config.json", method="HEAD", seconds=3)
            server.inject("drop", "model.safetensors", method="GET", after_bytes=4096)
        """
        if kind not in ("status", "delay", "drop"):
            raise ValueError(f"unknown fault kind {kind!r}")
        fault = Fault(
            kind=kind,
            match=match,
            method=method.upper() if method else None,
            remaining=count,
            status=status,
            error_code=error_code,
            message=message,
            headers=dict(headers or {}),
            seconds=seconds,
            after_bytes=after_bytes if after_bytes is not None else (0 if kind == "drop" else None),
            reset=reset,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """Armed faults (exhausted ones are removed)."""
        with self._lock:
            return list(self._faults)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops; True if interrupted."""
        return self._stopping.wait(seconds)

    # ------------------------------------------------------------------ client pointing (see point_hub_client)
    def set_offline(self, offline: bool = True) -> None:
        """Flip ``HF_HUB_OFFLINE`` for the client pointed here (constants, ``os.environ`` and :attr:`env`)."""
        if self._patcher is None:
            raise RuntimeError("the client is not pointed at this server (use the local_hub fixture)")
        set_hub_offline(self._patcher, offline, self.env)

    # ------------------------------------------------------------------ model internals
    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise _HubError(404, "RepoNotFound", "Repository not found")
        return repo

    def _resolve(self, repo: _Repo, revision: str | None) -> str:
        rev = revision or "main"
        for prefix, table in (("refs/heads/", repo.branches), ("refs/tags/", repo.tags)):
            if rev.startswith(prefix) and rev[len(prefix) :] in table:
                return table[rev[len(prefix) :]]
        if rev in repo.branches:
            return repo.branches[rev]
        if rev in repo.tags:
            return repo.tags[rev]
        m = re.fullmatch(r"refs/pr/(\d+)", rev)
        if m and int(m.group(1)) in repo.prs:
            return repo.prs[int(m.group(1))]
        if _SHA_RE.match(rev) and rev in repo.commits:
            return rev
        if _SHORT_SHA_RE.match(rev):
            found = [sha for sha in repo.commits if sha.startswith(rev)]
            if len(found) == 1:
                return found[0]
        raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")

    def _new_commit(
        self, repo: _Repo, parent: str | None, files: Mapping[str, Blob], title: str, message: str
    ) -> Commit:
        h = hashlib.sha1()
        h.update(
            f"{repo.repo_type}/{repo.repo_id}\n{parent}\n{title}\n{message}\n{next(self._counter)}\n".encode()
        )
        for path in sorted(files):
            h.update(f"{path}\0{files[path].git_oid}\n".encode())
        commit = Commit(
            sha=h.hexdigest(),
            files=MappingProxyType(dict(files)),
            parent=parent,
            title=title,
            message=message,
            date=datetime.now(timezone.utc),
        )
        repo.commits[commit.sha] = commit
        return commit

    def _history(self, repo: _Repo, sha: str) -> list[Commit]:
        out = []
        cur: str | None = sha
        while cur is not None:
            commit = repo.commits[cur]
            out.append(commit)
            cur = commit.parent
        return out

    def _last_commit(self, repo: _Repo, sha: str, path: str) -> Commit:
        """Most recent commit (from ``sha`` back) that changed ``path`` or something under it."""

        def state(c: Commit) -> tuple:
            return tuple(
                sorted((p, b.git_oid) for p, b in c.files.items() if p == path or p.startswith(path + "/"))
            )

        history = self._history(repo, sha)
        for commit, parent in itertools.pairwise(history):
            if state(commit) != state(parent):
                return commit
        return history[-1]


# ====================================================================== HTTP layer
class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    hub: LocalHubServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client hangs up (timeouts, dropped connections); report anything else."""
        if isinstance(sys.exc_info()[1], OSError):  # includes ConnectionError and TimeoutError
            return
        super().handle_error(request, client_address)


class _HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1.0"
    timeout = 60  # idle keep-alive connections end after a minute
    server: _HubHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr lines (the hub keeps its own log)."""

    # every verb goes through the same dispatcher
    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # ------------------------------------------------------------------
    @property
    def hub(self) -> LocalHubServer:
        return self.server.hub

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                line = self.rfile.readline()
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        method = self.command
        record = RequestRecord(
            method=method,
            path=self.path,
            range=self.headers.get("Range"),
            status=0,
            body_bytes=0,
            headers={k: v for k, v in self.headers.items()},
        )
        generation = self.hub._log_generation
        logged = False
        try:
            body = self._read_body()
            fault = self.hub._take_fault(method, self.path)
            record.fault = fault.kind if fault else None
            if fault is not None and fault.kind == "delay" and fault.after_bytes is None:
                if self.hub._sleep(fault.seconds):
                    self._abort(reset=True)
                    return
            if fault is not None and fault.kind == "status":
                response = self._error_response(
                    _HubError(fault.status, fault.error_code, fault.message, fault.headers), method
                )
            else:
                try:
                    response = self._route(method, body)
                except _HubError as e:
                    response = self._error_response(e, method)
                except (ValueError, KeyError, json.JSONDecodeError) as e:
                    response = self._error_response(_HubError(400, None, f"Bad request: {e}"), method)
            record.status = response.status
            # Log before the first byte leaves: a client that has its answer always finds it in the log.
            self.hub._record(record, generation)
            logged = True
            self._send(response, method, fault, record)
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True
        finally:
            if not logged:
                self.hub._record(record, generation)

    def _write(self, data: bytes | FileData, record: RequestRecord) -> None:
        """Write body bytes in 64 KiB pieces, counting each piece just before it is handed to the socket."""
        if isinstance(data, FileData):
            for piece in data.pieces(65536):
                record.body_bytes += len(piece)
                self.wfile.write(piece)
            return
        view = memoryview(data)
        for start in range(0, len(view), 65536):
            piece = view[start : start + 65536]
            record.body_bytes += len(piece)
            self.wfile.write(piece)

    def _send(self, response: _Response, method: str, fault: Fault | None, record: RequestRecord) -> None:
        self.send_response(response.status)
        headers = dict(response.headers)
        if "Content-Length" not in headers:
            headers["Content-Length"] = str(len(response.body))
        if response.body or response.content_type != "application/json":
            headers.setdefault("Content-Type", response.content_type)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        body = b"" if method == "HEAD" else response.body
        if fault is not None and fault.kind == "drop":
            self._write(body[: fault.after_bytes or 0], record)
            self._abort(reset=fault.reset)
            return
        if fault is not None and fault.kind == "delay" and fault.after_bytes is not None:
            self._write(body[: fault.after_bytes], record)
            if self.hub._sleep(fault.seconds):
                self._abort(reset=True)
                return
            body = body[fault.after_bytes :]
        self._write(body, record)

    def _abort(self, reset: bool) -> None:
        """Close the connection now: FIN (clean close) or RST (``SO_LINGER`` 0)."""
        self.close_connection = True
        try:
            if reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _error_response(self, err: _HubError, method: str) -> _Response:
        response = _json({"error": err.message}, err.status)
        if err.code:
            response.headers.append(("X-Error-Code", err.code))
        response.headers.append(("X-Error-Message", err.message))
        response.headers.extend(err.headers.items())
        return response

    # ------------------------------------------------------------------ routing
    def _route(self, method: str, body: bytes) -> _Response:
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        raw = split.path
        segs = [unquote(s) for s in raw.strip("/").split("/")] if raw.strip("/") else []
        if segs[:1] == ["api"]:
            return self._route_api(method, segs[1:], query, body)
        if raw.startswith("/_lfs/"):
            return self._route_lfs_object(method, segs[1:], body)
        if raw.endswith(".git/info/lfs/objects/batch") and method == "POST":
            return self._lfs_batch(raw[: -len(".git/info/lfs/objects/batch")], body)
        if "resolve" in segs and method in ("GET", "HEAD"):
            return self._resolve_file(segs)
        raise _HubError(404, None, f"Not found: {method} {raw}")

    def _split_repo(self, repo_type: str, segs: list[str]) -> tuple[str, list[str]]:
        """Split ``[ns, name, *rest]`` or ``[name, *rest]`` into (repo_id, rest), preferring existing repos."""
        hub = self.hub
        two = "/".join(segs[:2]) if len(segs) >= 2 else None
        if two is not None and (repo_type, two) in hub._repos:
            return two, segs[2:]
        if segs and (repo_type, segs[0]) in hub._repos:
            return segs[0], segs[1:]
        if two is not None and segs[1] not in _API_SUBPATHS:
            return two, segs[2:]
        if segs:
            return segs[0], segs[1:]
        raise _HubError(404, "RepoNotFound", "Repository not found")

    def _route_api(self, method: str, segs: list[str], query: dict[str, str], body: bytes) -> _Response:
        hub = self.hub
        if segs == ["whoami-v2"] and method == "GET":
            return _json(
                {
                    "type": "user",
                    "id": "0" * 24,
                    "name": hub.username,
                    "fullname": hub.username,
                    "email": None,
                    "orgs": [],
                    "auth": {
                        "type": "access_token",
                        "accessToken": {"displayName": "local", "role": "write"},
                    },
                }
            )
        if segs == ["validate-yaml"] and method == "POST":
            return _json({"errors": [], "warnings": []})
        if segs == ["repos", "create"] and method == "POST":
            return self._create_repo(json.loads(body or b"{}"))
        if segs == ["repos", "delete"] and method == "DELETE":
            payload = json.loads(body or b"{}")
            repo_id = (
                f"{payload['organization']}/{payload['name']}"
                if payload.get("organization")
                else payload["name"]
            )
            repo_type = payload.get("type") or "model"
            with hub._lock:
                hub._get_repo(repo_type, repo_id)
                hub.delete_repo(repo_id, repo_type)
            return _json({})
        if not segs or segs[0] not in _PLURAL_TO_TYPE:
            raise _HubError(404, None, f"Not found: /api/{'/'.join(segs)}")
        repo_type = _PLURAL_TO_TYPE[segs[0]]
        repo_id, rest = self._split_repo(repo_type, segs[1:])
        with hub._lock:
            repo = hub._get_repo(repo_type, repo_id)
            sub = rest[0] if rest else ""
            if method == "GET" and not rest:
                return self._repo_info(repo, "main", query)
            if method == "GET" and sub == "revision" and len(rest) >= 2:
                return self._repo_info(repo, "/".join(rest[1:]), query)
            if method == "GET" and sub == "refs":
                return self._refs(repo, query)
            if method == "GET" and sub == "tree" and len(rest) >= 2:
                return self._tree(repo, rest[1], "/".join(rest[2:]), query)
            if method == "POST" and sub == "paths-info" and len(rest) >= 2:
                return self._paths_info(repo, "/".join(rest[1:]), body)
            if method == "GET" and sub == "commits" and len(rest) >= 2:
                return self._commits(repo, "/".join(rest[1:]))
            if method == "POST" and sub == "preupload" and len(rest) >= 2:
                return self._preupload(repo, "/".join(rest[1:]), body, query)
            if method == "POST" and sub == "commit" and len(rest) >= 2:
                return self._commit(repo, "/".join(rest[1:]), body, query)
            if sub == "tag" and len(rest) >= 2:
                return self._tag(repo, method, "/".join(rest[1:]), body)
            if sub == "branch" and len(rest) >= 2:
                return self._branch(repo, method, "/".join(rest[1:]), body)
        raise _HubError(404, None, f"Not found: {method} /api/{'/'.join(segs)}")

    # ------------------------------------------------------------------ repo endpoints
    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.hub.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _create_repo(self, payload: dict[str, Any]) -> _Response:
        hub = self.hub
        name = payload.get("name")
        if not name:
            raise _HubError(400, None, "Missing repo name")
        repo_id = f"{payload.get('organization') or hub.username}/{name}"
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise _HubError(400, None, f"Invalid repo type {repo_type!r}")
        url = f"{hub.url}/{_URL_PREFIX[repo_type]}{repo_id}"
        with hub._lock:
            if (repo_type, repo_id) in hub._repos:
                return _json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
            private = payload.get("private") or payload.get("visibility") == "private"
            hub.create_repo(repo_id, repo_type, private=bool(private))
        return _json({"url": url, "name": repo_id, "id": hashlib.sha1(url.encode()).hexdigest()[:24]})

    def _file_entry(self, path: str, blob: Blob, sibling: bool = False) -> dict[str, Any]:
        if sibling:
            entry: dict[str, Any] = {"rfilename": path, "size": blob.size, "blobId": blob.git_oid}
            if blob.lfs:
                entry["lfs"] = {"sha256": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size}
            return entry
        entry = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size}
        return entry

    def _repo_info(self, repo: _Repo, revision: str, query: dict[str, str]) -> _Response:
        sha = self.hub._resolve(repo, revision)
        commit = repo.commits[sha]
        with_blobs = query.get("blobs", "").lower() in ("1", "true")
        siblings = [
            self._file_entry(p, b, sibling=True) if with_blobs else {"rfilename": p}
            for p, b in sorted(commit.files.items())
        ]
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": sha,
            "lastModified": _utc_iso(commit.date),
            "createdAt": _utc_iso(repo.created_at),
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(b.size for b in commit.files.values()),
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        if repo.repo_type == "space":
            info["sdk"] = "static"
        return _json(info)

    def _refs(self, repo: _Repo, query: dict[str, str]) -> _Response:
        def ref(name: str, full: str, sha: str) -> dict[str, str]:
            return {"name": name, "ref": full, "targetCommit": sha}

        data: dict[str, Any] = {
            "branches": [ref(n, f"refs/heads/{n}", s) for n, s in sorted(repo.branches.items())],
            "converts": [],
            "tags": [ref(n, f"refs/tags/{n}", s) for n, s in sorted(repo.tags.items())],
        }
        if query.get("include_prs") in ("1", "true", "True"):
            data["pullRequests"] = [
                ref(f"refs/pr/{n}", f"refs/pr/{n}", s) for n, s in sorted(repo.prs.items())
            ]
        return _json(data)

    def _entries(
        self, repo: _Repo, sha: str, folder: str, recursive: bool, expand: bool
    ) -> list[dict[str, Any]]:
        """Tree entries under ``folder`` ('' = root): directories first, then files, as the Hub lists them."""
        commit = repo.commits[sha]
        prefix = f"{folder}/" if folder else ""
        dirs: dict[str, list[str]] = {}
        files: list[str] = []
        for path in commit.files:
            if not path.startswith(prefix):
                continue
            rel = path[len(prefix) :]
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                if depth > 1 and not recursive:
                    break
                dirs.setdefault(prefix + "/".join(parts[:depth]), []).append(commit.files[path].git_oid)
            if len(parts) == 1 or recursive:
                files.append(path)
        out: list[dict[str, Any]] = []
        for d in sorted(dirs):
            tree_oid = hashlib.sha1("".join(sorted(dirs[d])).encode()).hexdigest()
            out.append({"type": "directory", "oid": tree_oid, "size": 0, "path": d})
        out.extend(self._file_entry(p, commit.files[p]) for p in sorted(files))
        if expand:
            for entry in out:
                last = self.hub._last_commit(repo, sha, entry["path"])
                entry["lastCommit"] = {"id": last.sha, "title": last.title, "date": _utc_iso(last.date)}
        return out

    def _tree(self, repo: _Repo, revision: str, folder: str, query: dict[str, str]) -> _Response:
        sha = self.hub._resolve(repo, revision)
        folder = folder.strip("/")
        files = repo.commits[sha].files
        if folder and not any(p.startswith(folder + "/") for p in files):
            raise _HubError(404, "EntryNotFound", f'{folder} does not exist on "{revision}"')
        truthy = ("1", "true", "True")
        entries = self._entries(
            repo, sha, folder, query.get("recursive") in truthy, query.get("expand") in truthy
        )
        return _json(entries)

    def _paths_info(self, repo: _Repo, revision: str, body: bytes) -> _Response:
        sha = self.hub._resolve(repo, revision)
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            payload = json.loads(body or b"{}")
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode())
            paths = form.get("paths", [])
            expand = (form.get("expand") or ["False"])[-1] in ("1", "true", "True")
        files = repo.commits[sha].files
        out = []
        for path in paths:
            path = path.strip("/")
            if path in files:
                entry = self._file_entry(path, files[path])
            elif any(p.startswith(path + "/") for p in files):
                oids = sorted(b.git_oid for p, b in files.items() if p.startswith(path + "/"))
                entry = {
                    "type": "directory",
                    "oid": hashlib.sha1("".join(oids).encode()).hexdigest(),
                    "size": 0,
                }
                entry["path"] = path
            else:
                continue
            if expand:
                last = self.hub._last_commit(repo, sha, path)
                entry["lastCommit"] = {"id": last.sha, "title": last.title, "date": _utc_iso(last.date)}
            out.append(entry)
        return _json(out)

    def _commits(self, repo: _Repo, revision: str) -> _Response:
        sha = self.hub._resolve(repo, revision)
        return _json(
            [
                {
                    "id": c.sha,
                    "title": c.title,
                    "message": c.message,
                    "authors": [{"user": self.hub.username}],
                    "date": _utc_iso(c.date),
                }
                for c in self.hub._history(repo, sha)
            ]
        )

    def _tag(self, repo: _Repo, method: str, revision: str, body: bytes) -> _Response:
        if method == "POST":
            payload = json.loads(body or b"{}")
            tag = payload.get("tag")
            if not tag:
                raise _HubError(400, None, "Missing tag name")
            sha = self.hub._resolve(repo, revision)
            if tag in repo.tags:
                raise _HubError(409, None, f"Tag {tag} already exists")
            repo.tags[tag] = sha
            return _json({"name": tag, "ref": f"refs/tags/{tag}", "targetCommit": sha})
        if method == "DELETE":
            tag = revision[len("refs/tags/") :] if revision.startswith("refs/tags/") else revision
            if repo.tags.pop(tag, None) is None:
                raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return _json({})
        raise _HubError(405, None, "Method not allowed")

    def _branch(self, repo: _Repo, method: str, branch: str, body: bytes) -> _Response:
        if branch.startswith("refs/") or not branch:
            raise _HubError(400, None, f"Invalid branch name {branch!r}")
        if method == "POST":
            payload = json.loads(body or b"{}")
            if branch in repo.branches:
                raise _HubError(409, None, f"Reference {branch} already exists")
            start = payload.get("startingPoint") or "main"
            if payload.get("emptyBranch"):
                commit = self.hub._new_commit(repo, None, {}, "empty branch", "")
                repo.branches[branch] = commit.sha
            else:
                repo.branches[branch] = self.hub._resolve(repo, start)
            return _json({})
        if method == "DELETE":
            if branch == "main":
                raise _HubError(403, None, "Cannot delete the default branch")
            if repo.branches.pop(branch, None) is None:
                raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {branch}")
            return _json({})
        raise _HubError(405, None, "Method not allowed")

    # ------------------------------------------------------------------ uploads
    def _preupload(self, repo: _Repo, revision: str, body: bytes, query: dict[str, str]) -> _Response:
        hub = self.hub
        sha = hub._resolve(repo, revision)
        files = repo.commits[sha].files
        payload = json.loads(body or b"{}")
        out = []
        for f in payload.get("files", []):
            path = f["path"]
            sample = base64.b64decode(f.get("sample") or b"")
            mode = "lfs" if hub.is_lfs(path, int(f.get("size", 0)), sample) else "regular"
            existing = files.get(path)
            oid = None
            if existing is not None:
                oid = existing.sha256 if existing.lfs else existing.git_oid
            out.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return _json({"files": out, "commitOid": sha})

    def _lfs_batch(self, raw_repo_path: str, body: bytes) -> _Response:
        hub = self.hub
        segs = [unquote(s) for s in raw_repo_path.strip("/").split("/")]
        repo_type = "model"
        if segs and segs[0] in ("datasets", "spaces"):
            repo_type = _PLURAL_TO_TYPE[segs[0]]
            segs = segs[1:]
        repo_id = "/".join(segs)
        payload = json.loads(body or b"{}")
        if payload.get("operation", "upload") != "upload":
            raise _HubError(400, None, "Only the upload operation is supported")
        objects = []
        with hub._lock:
            hub._get_repo(repo_type, repo_id)
            for obj in payload.get("objects", []):
                oid, size = obj["oid"], int(obj["size"])
                entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                stored = hub._lfs_store.get(oid)
                if stored is None or len(stored) != size:
                    entry["actions"] = {
                        "upload": {"href": f"{hub.url}/_lfs/{oid}", "expires_in": 86400},
                        "verify": {"href": f"{hub.url}/_lfs/{oid}/verify"},
                    }
                objects.append(entry)
        return _json({"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _route_lfs_object(self, method: str, segs: list[str], body: bytes) -> _Response:
        hub = self.hub
        if len(segs) == 1 and method == "PUT":
            oid = segs[0]
            if hashlib.sha256(body).hexdigest() != oid:
                raise _HubError(400, None, "sha256 mismatch for the uploaded LFS object")
            with hub._lock:
                hub._lfs_store[oid] = body
            return _Response(200)
        if len(segs) == 2 and segs[1] == "verify" and method == "POST":
            payload = json.loads(body or b"{}")
            stored = hub._lfs_store.get(segs[0])
            if stored is None or ("size" in payload and len(stored) != int(payload["size"])):
                raise _HubError(404, None, "LFS object not found")
            return _json({})
        raise _HubError(404, None, "Not found")

    def _commit(self, repo: _Repo, revision: str, body: bytes, query: dict[str, str]) -> _Response:
        hub = self.hub
        create_pr = query.get("create_pr") in ("1", "true", "True")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item.get("key") == "header"), {})
        title = header.get("summary") or "commit"
        description = header.get("description") or ""
        pr_match = re.fullmatch(r"refs/pr/(\d+)", revision)
        branch = revision[len("refs/heads/") :] if revision.startswith("refs/heads/") else revision
        if create_pr:
            base = hub._resolve(repo, revision)
        elif pr_match and int(pr_match.group(1)) in repo.prs:
            base = repo.prs[int(pr_match.group(1))]
        elif branch in repo.branches:
            base = repo.branches[branch]
        else:
            hub._resolve(repo, revision)  # 404 RevisionNotFound if unknown at all
            raise _HubError(400, None, f"Invalid rev id: {revision} is not a branch")
        parent_commit = header.get("parentCommit")
        if parent_commit and not create_pr and not base.startswith(parent_commit):
            raise _HubError(412, None, f"A commit has happened since. Please refresh and try again ({base}).")
        files = dict(repo.commits[base].files)
        for item in lines:
            key, value = item.get("key"), item.get("value", {})
            if key == "file":
                content = value.get("content", "")
                if value.get("encoding", "base64") == "base64":
                    data = base64.b64decode(content)
                else:
                    data = content.encode()
                files[value["path"].strip("/")] = Blob(data, False)
            elif key == "lfsFile":
                oid = value["oid"]
                data = hub._lfs_store.get(oid)
                if data is None:
                    raise _HubError(400, None, f"LFS object {oid} was not uploaded")
                files[value["path"].strip("/")] = Blob(data, True)
            elif key == "deletedFile":
                path = value["path"].strip("/")
                if files.pop(path, None) is None:
                    raise _HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {path}")
            elif key == "deletedFolder":
                folder = value["path"].strip("/")
                doomed = [p for p in files if p.startswith(folder + "/")]
                if not doomed:
                    raise _HubError(404, "EntryNotFound", f"A folder with this name doesn't exist: {folder}")
                for p in doomed:
                    del files[p]
        commit = hub._new_commit(repo, base, files, title, description)
        pr_url = None
        if create_pr:
            num = max(repo.prs, default=0) + 1
            repo.prs[num] = commit.sha
            pr_url = f"{self._repo_url(repo)}/discussions/{num}"
        elif pr_match:
            repo.prs[int(pr_match.group(1))] = commit.sha
        else:
            repo.branches[branch] = commit.sha
        return _json(
            {
                "success": True,
                "commitOid": commit.sha,
                "commitUrl": f"{self._repo_url(repo)}/commit/{commit.sha}",
                "hookOutput": "",
                "pullRequestUrl": pr_url,
            }
        )

    # ------------------------------------------------------------------ downloads
    def _resolve_file(self, segs: list[str]) -> _Response:
        hub = self.hub
        repo_type = "model"
        if segs and segs[0] in ("datasets", "spaces"):
            repo_type = _PLURAL_TO_TYPE[segs[0]]
            segs = segs[1:]
        if len(segs) >= 4 and segs[2] == "resolve":
            repo_id, rest = "/".join(segs[:2]), segs[3:]
        elif len(segs) >= 3 and segs[1] == "resolve":
            repo_id, rest = segs[0], segs[2:]
        else:
            raise _HubError(404, None, "Not found")
        revision, path = rest[0], "/".join(rest[1:])
        with hub._lock:
            repo = hub._get_repo(repo_type, repo_id)
            sha = hub._resolve(repo, revision)
            blob = repo.commits[sha].files.get(path)
        if blob is None:
            raise _HubError(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": sha})
        headers = [("X-Repo-Commit", sha), ("ETag", f'"{blob.etag}"')]
        if hub.ranges_enabled:
            headers.append(("Accept-Ranges", "bytes"))
        if blob.lfs:
            headers += [("X-Linked-Etag", f'"{blob.sha256}"'), ("X-Linked-Size", str(blob.size))]
        size = blob.size
        byte_range = _parse_range(self.headers.get("Range"), size) if hub.ranges_enabled else None
        if byte_range == "unsatisfiable":
            headers.append(("Content-Range", f"bytes */{size}"))
            return _Response(416, b"", headers, content_type="application/octet-stream")
        if byte_range is None:
            return _Response(200, blob.data, headers, content_type="application/octet-stream")
        start, end = byte_range
        headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        return _Response(206, blob.data[start : end + 1], headers, content_type="application/octet-stream")


def _parse_range(header: str | None, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """Parse a single ``bytes=`` range; None means "serve the whole file" (absent, multi-range or malformed)."""
    if not header:
        return None
    m = _RANGE_RE.match(header)
    if m is None:
        return None
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


# ====================================================================== pointing the client at a server
class _Patcher(Protocol):
    """What :func:`point_hub_client` needs from ``pytest.MonkeyPatch``."""

    def setattr(self, target: Any, name: str, value: Any, raising: bool = ...) -> None: ...

    def setenv(self, name: str, value: str, prepend: str | None = ...) -> None: ...

    def delenv(self, name: str, raising: bool = ...) -> None: ...


def client_env(server: LocalHubServer, hf_home: str | os.PathLike[str]) -> dict[str, str]:
    """Environment variables pointing a (sub)process's ``huggingface_hub`` at ``server``, caching in ``hf_home``.

    Example::

        subprocess.run([sys.executable, "-c", code], env={**os.environ, **client_env(server, tmp_path)})
    """
    home = Path(hf_home)
    return {
        "HF_ENDPOINT": server.url,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_TOKEN": "hf_local_dummy_token",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
    }


# Module-level copies of constants made by ``from ..constants import X`` (module, attribute, env key); patched only
# if the module is already imported (an import later reads the patched ``constants``).
_CONSTANT_COPIES: tuple[tuple[str, str, str], ...] = (
    ("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", "HF_HUB_CACHE"),
    ("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", "HF_ASSETS_CACHE"),
    ("huggingface_hub.utils._git_credential", "ENDPOINT", "HF_ENDPOINT"),
    ("huggingface_hub.cli.auth", "ENDPOINT", "HF_ENDPOINT"),
)


def point_hub_client(
    monkeypatch: _Patcher, server: LocalHubServer, hf_home: str | os.PathLike[str]
) -> dict[str, str]:
    """Point this process's ``huggingface_hub`` (and libraries built on it) at ``server``; returns the env dict.

    Sets the variables of :func:`client_env` in ``os.environ`` *and* patches what ``huggingface_hub`` computed from
    them at import time: ``constants.ENDPOINT``/``HUGGINGFACE_CO_URL_TEMPLATE``/``HF_URL_HOSTS``, the cache paths,
    ``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_XET``, ``HF_HUB_DISABLE_TELEMETRY``, the ``from .constants import``
    copies, ``hf_api.api.endpoint`` (the module-level ``HfApi`` behind ``huggingface_hub.model_info``,
    ``list_repo_refs`` ... also imported by timm and MONAI) and ``utils._http._HUB_ORIGINS``. Clears the
    ``HfFileSystem`` instance cache and closes the shared HTTP client. Everything is undone by ``monkeypatch``.
    """
    import huggingface_hub.constants as constants
    from huggingface_hub import hf_api
    from huggingface_hub.utils import _http

    env = client_env(server, hf_home)
    Path(env["HF_HUB_CACHE"]).mkdir(parents=True, exist_ok=True)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in (
        "HF_OIDC_RESOURCE",
        "HUGGING_FACE_HUB_TOKEN",
        "HUGGINGFACE_HUB_CACHE",
        "HUGGINGFACE_CO_STAGING",
    ):
        monkeypatch.delenv(key, raising=False)

    endpoint = server.url
    patches: dict[str, Any] = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": frozenset({*constants.HF_URL_HOSTS, server.host}),
        "HF_HOME": env["HF_HOME"],
        "HF_HUB_CACHE": env["HF_HUB_CACHE"],
        "HUGGINGFACE_HUB_CACHE": env["HF_HUB_CACHE"],
        "HF_ASSETS_CACHE": env["HF_ASSETS_CACHE"],
        "HUGGINGFACE_ASSETS_CACHE": env["HF_ASSETS_CACHE"],
        "HF_XET_CACHE": env["HF_XET_CACHE"],
        "HF_TOKEN_PATH": env["HF_TOKEN_PATH"],
        "HF_STORED_TOKENS_PATH": str(Path(env["HF_HOME"]) / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
    }
    for name, value in patches.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    for module_name, attr, env_key in _CONSTANT_COPIES:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attr):
            monkeypatch.setattr(module, attr, env[env_key])
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    if hasattr(_http, "_HUB_ORIGINS"):
        origin = _http._url_origin(endpoint)
        monkeypatch.setattr(_http, "_HUB_ORIGINS", frozenset({*_http._HUB_ORIGINS, origin}))
    reset_hub_client()
    server.env = env
    server.hf_home = Path(hf_home)
    server._patcher = monkeypatch
    return env


def reset_hub_client() -> None:
    """Drop client-side caches: ``HfFileSystem`` instances (with their dircache) and the shared HTTP client."""
    from huggingface_hub import HfFileSystem
    from huggingface_hub.utils import _http

    HfFileSystem.clear_instance_cache()
    _http.close_session()


def set_hub_offline(
    monkeypatch: _Patcher, offline: bool = True, env: MutableMapping[str, str] | None = None
) -> None:
    """Switch ``HF_HUB_OFFLINE`` in ``constants`` (what the client reads) and ``os.environ`` (and ``env``).

    With ``offline=True`` every HTTP call of ``huggingface_hub`` raises ``OfflineModeIsEnabled`` before leaving the
    process, ``hf_hub_download``/``snapshot_download`` answer from the cache, and ``transformers`` (which asks
    ``huggingface_hub.is_offline_mode()``) stays offline too.
    """
    import huggingface_hub.constants as constants

    value = "1" if offline else "0"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", value)
    if env is not None:
        env["HF_HUB_OFFLINE"] = value
        env["TRANSFORMERS_OFFLINE"] = value
