"""Turn failures of the Hub client into errors that say what went wrong and what to do."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["HubError", "hub_errors", "remove_partial_downloads"]


class HubError(RuntimeError):
    """Reaching, reading or writing a Hugging Face Hub repo failed (the message names the fix)."""


def remove_partial_downloads(repo_id: str, repo_type: str = "model") -> list[Path]:
    """Delete ``*.incomplete`` blobs of ``repo_id`` in the Hugging Face cache; return them.

    huggingface_hub keeps an interrupted download to resume it later; a failed pull here leaves
    nothing half-written instead.
    """
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "blobs"
    removed = []
    if folder.is_dir():
        for p in folder.glob("*.incomplete"):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def _endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


@contextlib.contextmanager
def hub_errors(repo_id: str, action: str, revision: str | None = None) -> Iterator[None]:
    """Re-raise huggingface_hub / HTTP failures inside the block as :class:`HubError`.

    Example:
        >>> with hub_errors("org/model", "download"):                     # doctest: +SKIP
        ...     hf_hub_download("org/model", "config.json")
    """
    from huggingface_hub import errors

    where = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    try:
        yield
    except HubError:
        raise
    except errors.RevisionNotFoundError as e:
        raise HubError(
            f"{action} {where}: the revision does not exist; list them with "
            f"huggingface_hub.list_repo_refs({repo_id!r})"
        ) from e
    except errors.RepositoryNotFoundError as e:
        raise HubError(
            f"{action} {where}: no such repo on {_endpoint()} (or it is private / gated and no token was "
            "given); check the id, run `hf auth login`, or set HF_ENDPOINT to the Hub that hosts it"
        ) from e
    except errors.EntryNotFoundError as e:
        raise HubError(
            f"{action} {where}: a file is missing from the repo ({e}); is it an rllm_zoo repo?"
        ) from e
    except errors.LocalEntryNotFoundError as e:
        raise HubError(
            f"{action} {where}: not in the local cache and the Hub cannot be reached (HF_HUB_OFFLINE="
            f"{os.environ.get('HF_HUB_OFFLINE', '0')}); connect once to download it, or unset HF_HUB_OFFLINE"
        ) from e
    except errors.HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        raise HubError(
            f"{action} {where} failed on {_endpoint()} (HTTP {status}): {str(e).splitlines()[0]}; "
            "the Hub may be down: retry later"
        ) from e
    except (TimeoutError, ConnectionError, OSError) as e:
        if isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        raise HubError(
            f"{action} {where}: the Hub at {_endpoint()} did not answer ({type(e).__name__}: {e}); check the "
            "network or HF_ENDPOINT, raise HF_HUB_DOWNLOAD_TIMEOUT, or use HF_HUB_OFFLINE=1 for cached files"
        ) from e
    except Exception as e:
        mod = type(e).__module__
        if mod.startswith(("httpx", "httpcore", "requests", "urllib3")):
            raise HubError(
                f"{action} {where}: the Hub at {_endpoint()} could not be reached ({type(e).__name__}: {e}); "
                "check the network or HF_ENDPOINT, or use HF_HUB_OFFLINE=1 for cached files"
            ) from e
        raise
