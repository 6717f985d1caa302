"""Turn failures of the Hub client into errors that say what went wrong and what to do.

:func:`hub_errors` maps an exception by its real type (most specific first) and, where
``huggingface_hub`` wraps the real failure (``snapshot_download`` turns a timeout, a refused
connection, a 5xx or offline mode into ``LocalEntryNotFoundError``), by the exception it wraps:

* offline (``HF_HUB_OFFLINE=1``) and not in the local cache;
* the Hub did not answer in time (``HF_HUB_ETAG_TIMEOUT`` / ``HF_HUB_DOWNLOAD_TIMEOUT``) or could not
  be reached; when the repo is in the local cache the message says ``HF_HUB_OFFLINE=1`` uses it;
* a server error (HTTP 5xx: retry later) or rate limiting (HTTP 429);
* access refused (401 / 403), a gated repo;
* the repo, the revision or a file is missing (a bare 404 names the URL and ``HF_ENDPOINT``).

:func:`is_transient` says which failures are worth retrying (connection errors, timeouts, 408,
429, 5xx; never 401 / 403 / 404 or offline mode).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..hf_cache import remove_partial_downloads

__all__ = [
    "HubCacheFallbackWarning",
    "HubError",
    "HubTimeouts",
    "cached_snapshot",
    "failure_reason",
    "hub_errors",
    "hub_timeouts",
    "is_offline",
    "is_transient",
    "remove_cached_snapshot",
    "remove_partial_downloads",
]

#: Seconds a Hub request may stay silent when neither HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT
#: (environment, read at call time) nor ``huggingface_hub.constants`` give a usable value.
DEFAULT_TIMEOUT_S = 10.0
#: HTTP statuses worth retrying: request timeout, rate limited, server errors.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class HubError(RuntimeError):
    """Reaching, reading or writing a Hugging Face Hub repo failed (the message names the fix)."""


class HubCacheFallbackWarning(UserWarning):
    """The Hub failed (timed out, unreachable, server error) and the cached snapshot was used instead."""


# ------------------------------------------------------------------ timeouts and offline mode


@dataclass(frozen=True)
class HubTimeouts:
    """Seconds a request may stay silent: metadata (API calls, HEAD) and file transfers (GET)."""

    metadata: float
    download: float


def _env_seconds(name: str, fallback: object) -> float:
    for raw in (os.environ.get(name), fallback):
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if value > 0:
            return value
    return DEFAULT_TIMEOUT_S


def hub_timeouts() -> HubTimeouts:
    """The timeouts in force now: ``HF_HUB_ETAG_TIMEOUT`` / ``HF_HUB_DOWNLOAD_TIMEOUT`` read at call time.

    ``huggingface_hub`` reads these variables once, at import; here the environment wins, then
    ``huggingface_hub.constants``, then :data:`DEFAULT_TIMEOUT_S`.

    Example:
        >>> os.environ["HF_HUB_ETAG_TIMEOUT"] = "2"          # doctest: +SKIP
        >>> hub_timeouts().metadata                          # doctest: +SKIP
        2.0
    """
    from huggingface_hub import constants

    return HubTimeouts(
        metadata=_env_seconds("HF_HUB_ETAG_TIMEOUT", getattr(constants, "HF_HUB_ETAG_TIMEOUT", None)),
        download=_env_seconds("HF_HUB_DOWNLOAD_TIMEOUT", getattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", None)),
    )


def is_offline() -> bool:
    """Offline mode: ``huggingface_hub.constants.HF_HUB_OFFLINE`` or ``HF_HUB_OFFLINE`` set now."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE) or env


# ------------------------------------------------------------------ the Hugging Face cache


def cached_snapshot(
    repo_id: str,
    revision: str | None = None,
    repo_type: str = "model",
    allow_patterns: list[str] | str | None = None,
) -> Path | None:
    """The complete cached snapshot folder of ``repo_id`` at ``revision`` (branch, tag or commit), if any.

    No network: huggingface_hub's own cache lookup (``local_files_only=True``), which also checks
    that the files matching ``allow_patterns`` are all there when it knows the commit's file list.
    """
    from huggingface_hub import errors, snapshot_download

    try:
        folder = snapshot_download(
            repo_id,
            repo_type=repo_type,
            revision=revision,
            allow_patterns=allow_patterns,
            local_files_only=True,
        )
    except (errors.LocalEntryNotFoundError, OSError, ValueError):
        return None
    return Path(folder)


def remove_cached_snapshot(snapshot: str | os.PathLike) -> list[Path]:
    """Delete a cached snapshot folder (``.../snapshots/<commit>``) and the blobs its files link to.

    Blobs that another cached snapshot of the repo still links to are kept. Returns what was
    deleted. Anything outside a Hugging Face cache layout (no ``snapshots`` parent) is refused, so a
    user's own folder is never touched.
    """
    snapshot = Path(snapshot)
    if snapshot.parent.name != "snapshots" or not snapshot.is_dir():
        return []
    storage = snapshot.parent.parent
    blobs_dir = (storage / "blobs").resolve()
    ours: set[Path] = set()
    for link in snapshot.rglob("*"):
        with contextlib.suppress(OSError):
            target = link.resolve()
            if target.parent == blobs_dir:
                ours.add(target)
    for other in snapshot.parent.iterdir():
        if other == snapshot or not other.is_dir():
            continue
        for link in other.rglob("*"):
            with contextlib.suppress(OSError):
                ours.discard(link.resolve())
    removed = []
    for blob in sorted(ours):
        with contextlib.suppress(OSError):
            blob.unlink()
            removed.append(blob)
    shutil.rmtree(snapshot, ignore_errors=True)
    removed.append(snapshot)
    return removed


# ------------------------------------------------------------------ classifying failures


def _chain(e: BaseException) -> Iterator[BaseException]:
    """``e`` and the exceptions it wraps (``__cause__``, else an unsuppressed ``__context__``)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)


def _status(e: BaseException) -> int | None:
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _is_timeout(e: BaseException) -> bool:
    import httpx2

    return isinstance(e, httpx2.TimeoutException | TimeoutError)


def _is_unreachable(e: BaseException) -> bool:
    """A transport failure: refused / reset / dropped connection, DNS, protocol error (not a proxy error)."""
    import httpx2
    from huggingface_hub import errors

    if isinstance(e, errors.OfflineModeIsEnabled | httpx2.ProxyError | httpx2.UnsupportedProtocol):
        return False
    if isinstance(e, httpx2.TransportError | ConnectionError):
        return True
    mod = type(e).__module__
    return mod.startswith(("httpx", "httpcore", "requests", "urllib3")) and _status(e) is None


def is_transient(e: BaseException) -> bool:
    """Worth retrying: a connection error or timeout, or HTTP 408 / 429 / 5xx (anywhere in the chain).

    Never 401 / 403 / 404 (a missing repo, revision or file, no access) nor offline mode.
    """
    from huggingface_hub import errors

    for cur in _chain(e):
        if isinstance(cur, errors.OfflineModeIsEnabled):
            return False
        status = _status(cur)
        if status is not None:
            return status in TRANSIENT_STATUSES or status >= 500
        if _is_timeout(cur) or _is_unreachable(cur):
            return True
    return False


def _endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _cache_hint(repo_id: str, revision: str | None, allow_patterns: list[str] | str | None) -> str:
    if cached_snapshot(repo_id, revision, allow_patterns=allow_patterns) is not None:
        return "; it is in the local cache: set HF_HUB_OFFLINE=1 to use the cached copy"
    return "; it is not in the local cache either (once downloaded, HF_HUB_OFFLINE=1 uses the cached copy)"


@contextlib.contextmanager
def hub_errors(
    repo_id: str,
    action: str,
    revision: str | None = None,
    *,
    cache_hint: bool | None = None,
    allow_patterns: list[str] | str | None = None,
) -> Iterator[None]:
    """Re-raise huggingface_hub / HTTP failures inside the block as :class:`HubError`.

    Each message is one line: ``<action> '<repo>'[ at revision '<rev>']: <cause>; <fix>``.
    ``cache_hint`` (default: on unless ``action`` is a push / upload) adds to messages about a
    Hub that failed whether the repo (the files matching ``allow_patterns``) is in the local cache,
    where ``HF_HUB_OFFLINE=1`` would load it.

    Example:
        >>> with hub_errors("org/model", "download"):                     # doctest: +SKIP
        ...     hf_hub_download("org/model", "config.json")
    """
    try:
        yield
    except HubError:
        raise
    except Exception as e:
        hint = cache_hint if cache_hint is not None else not action.lower().startswith(("push", "upload"))
        mapped = _map(e, repo_id, action, revision, hint, allow_patterns)
        if mapped is None:
            raise
        raise mapped from e


def _map(
    e: Exception,
    repo_id: str,
    action: str,
    revision: str | None,
    hint: bool,
    allow_patterns: list[str] | str | None = None,
) -> HubError | None:
    """The :class:`HubError` for ``e`` (excepts ordered from the most to the least specific class)."""
    import httpx2
    from huggingface_hub import errors

    where = f"{action} {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    endpoint = _endpoint()

    def cache() -> str:
        return _cache_hint(repo_id, revision, allow_patterns) if hint else ""

    def offline() -> HubError:
        return HubError(
            f"{where}: offline (HF_HUB_OFFLINE=1) and not in the local cache; unset HF_HUB_OFFLINE and "
            "connect once to download it"
        )

    # huggingface_hub wraps the real failure of its metadata call in LocalEntryNotFoundError: map what it wraps
    if isinstance(e, errors.LocalEntryNotFoundError) and not isinstance(e, errors.IncompleteSnapshotError):
        inner = next(
            (c for c in _chain(e) if c is not e and not isinstance(c, errors.EntryNotFoundError)), None
        )
        if isinstance(inner, Exception) and not (
            isinstance(inner, errors.OfflineModeIsEnabled) or is_offline()
        ):
            mapped = _map(inner, repo_id, action, revision, hint, allow_patterns)
            if mapped is not None:
                return mapped

    if isinstance(e, errors.RevisionNotFoundError):
        return HubError(
            f"{where}: the revision does not exist; list them with huggingface_hub.list_repo_refs({repo_id!r})"
        )
    if isinstance(e, errors.GatedRepoError):
        return HubError(
            f"{where}: the repo is gated: accept its conditions on {endpoint}/{repo_id}, then log in with "
            "`hf auth login` (or pass token=)"
        )
    if isinstance(e, errors.RepositoryNotFoundError):
        return HubError(
            f"{where}: no such repo on {endpoint} (or it is private / gated and no token was given); check the "
            "id, run `hf auth login`, or set HF_ENDPOINT to the Hub that hosts it"
        )
    if isinstance(e, errors.IncompleteSnapshotError):
        why = "HF_HUB_OFFLINE=1 forbids downloading the rest" if is_offline() else "the Hub cannot be reached"
        return HubError(
            f"{where}: the cached copy is incomplete and {why}; pull once with network access (unset "
            "HF_HUB_OFFLINE) to complete it"
        )
    if isinstance(e, errors.LocalEntryNotFoundError):  # offline, or nothing to say what failed
        if is_offline() or any(isinstance(c, errors.OfflineModeIsEnabled) for c in _chain(e)):
            return offline()
        return HubError(
            f"{where}: not in the local cache and the Hub at {endpoint} cannot be reached; check the network "
            "or HF_ENDPOINT, then retry"
        )
    if isinstance(e, errors.EntryNotFoundError):  # RemoteEntryNotFoundError: a 404 on one file
        url = getattr(getattr(e, "response", None), "url", None)
        return HubError(
            f"{where}: a file is missing from the repo ({url or _first_line(e)}); is it an rllm_zoo repo?"
        )
    if isinstance(e, errors.HfHubHTTPError) or _status(e) is not None:
        return _map_status(e, where, endpoint, cache)
    if isinstance(e, errors.OfflineModeIsEnabled):
        return offline()
    if isinstance(e, httpx2.ProxyError):
        return HubError(
            f"{where}: the proxy refused the connection to {endpoint} ({_first_line(e)}); check HTTPS_PROXY / "
            "HTTP_PROXY"
        )
    if _is_timeout(e):
        t = hub_timeouts()
        return HubError(
            f"{where}: the Hub at {endpoint} did not answer in time (timed out after {t.metadata:g} s for "
            f"metadata / {t.download:g} s for file data: HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT); check "
            f"the network, raise those timeouts for a slow link, or retry later{cache()}"
        )
    if isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError):
        return None  # a local file problem: the original error says it best
    if _is_unreachable(e):
        return HubError(
            f"{where}: the Hub at {endpoint} could not be reached ({type(e).__name__}: {_first_line(e)}); check "
            f"the network, a proxy or HF_ENDPOINT, and retry{cache()}"
        )
    if isinstance(e, OSError):  # e.g. a body shorter than announced (huggingface_hub's consistency check)
        return HubError(
            f"{where}: the transfer from the Hub at {endpoint} failed ({type(e).__name__}: {_first_line(e)}); "
            f"retry{cache()}"
        )
    return None


def _map_status(e: Exception, where: str, endpoint: str, cache: Callable[[], str]) -> HubError:
    status = _status(e)
    url = getattr(getattr(e, "response", None), "url", None) or getattr(
        getattr(e, "request", None), "url", ""
    )
    if status == 429:
        return HubError(
            f"{where}: the Hub at {endpoint} is rate-limiting requests (HTTP 429); wait a minute and retry, or "
            f"log in with `hf auth login` for a higher limit{cache()}"
        )
    if status is not None and status >= 500:
        return HubError(
            f"{where}: the Hub at {endpoint} had a server error (HTTP {status}, not a problem on your side); "
            f"retry later{cache()}"
        )
    if status in (401, 403):
        return HubError(
            f"{where}: the Hub at {endpoint} refused access (HTTP {status}); log in with `hf auth login` or pass "
            "a token that may read this repo"
        )
    if status == 404:
        return HubError(
            f"{where}: the Hub at {endpoint} answered HTTP 404 for {url}: the repo, revision or file is not "
            "there; check the id and that HF_ENDPOINT points at a Hugging Face Hub"
        )
    return HubError(f"{where} failed on {endpoint} (HTTP {status}): {_first_line(e)}; retry later{cache()}")


def failure_reason(e: BaseException) -> str:
    """A few words on why a Hub call failed (for warnings and retry logs)."""
    for cur in _chain(e):
        status = _status(cur)
        if status is not None:
            return f"HTTP {status}"
        if _is_timeout(cur):
            t = hub_timeouts()
            return (
                f"timed out, no answer within {t.metadata:g} s (HF_HUB_ETAG_TIMEOUT) / {t.download:g} s "
                "(HF_HUB_DOWNLOAD_TIMEOUT)"
            )
        if _is_unreachable(cur):
            return f"could not be reached ({type(cur).__name__}: {_first_line(cur)})"
    return f"{type(e).__name__}: {_first_line(e)}"
