"""Byte ranges of one file of one Hub commit, read with HTTP range requests and retried.

Every request targets one commit (the revision is resolved first), so all bytes come from the same
immutable snapshot; it goes through ``huggingface_hub``'s HTTP client (``HF_ENDPOINT``, token, user
agent, ``HF_HUB_OFFLINE``). Transient failures (5xx, 408, 429, dropped or reset connections, timeouts)
are retried with exponential backoff, resuming each range at the first byte not yet received. Every
``206`` answer is checked (``Content-Range``, ``ETag``, ``X-Repo-Commit``): the bytes must be the ones
asked for, of the same file and commit. A server that does not answer ranges (no ``206``) raises
:class:`RangesNotSupportedError`; :class:`~rllm_zoo.llm.hub_ranges.HubRangeCheckpoint` then downloads
whole shards instead.
"""

from __future__ import annotations

import logging
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .checkpoint import CheckpointError
from .safetensors_header import MAX_HEADER_BYTES, SafetensorsHeader, parse_safetensors_header

__all__ = [
    "DEFAULT_RETRY",
    "HubFetchError",
    "RangesNotSupportedError",
    "RetryPolicy",
]

logger = logging.getLogger(__name__)

_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class HubFetchError(OSError):
    """Fetching byte ranges from the Hub failed for good (after retries) or returned inconsistent data."""


class RangesNotSupportedError(HubFetchError):
    """The server answered a range request with the whole file (no ``206``): use whole-file downloads."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient failures: ``max_retries`` tries without progress, waits doubling up to ``max_wait``."""

    max_retries: int = 5
    base_wait: float = 1.0
    max_wait: float = 8.0

    def wait(self, failures: int) -> float:
        return min(self.max_wait, self.base_wait * 2 ** max(0, failures - 1))


DEFAULT_RETRY = RetryPolicy()


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
