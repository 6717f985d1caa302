"""Load a published boosted model from the Hub (timm repo or MONAI bundle), safely.

Only safetensors are read for 2D weights; a bundle's ``models/model.pt`` is read with
``torch.load(weights_only=True)``. A repo that only offers pickle checkpoints is refused.
After one successful pull, ``HF_HUB_OFFLINE=1`` loads from the Hugging Face cache.

Failures (see :func:`load_from_hub`): every request is bounded in time, transient failures
are retried (:data:`PULL_ATTEMPTS`, :data:`PULL_BACKOFF_S`), a cached copy is used when the Hub
fails, and a corrupt download is deleted from the cache.

Example:
    >>> model = rllm_zoo.load_from_hub("rllm-zoo/rllm_vit_micro_patch4_28.retinamnist_r_llm")  # doctest: +SKIP
    >>> net = rllm_zoo.load_from_hub("me/adrenal-r-llm", revision="0.1.0")    # a MONAI bundle  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .errors import (
    HubCacheFallbackWarning,
    HubError,
    HubTimeouts,
    cached_snapshot,
    failure_reason,
    hub_errors,
    hub_timeouts,
    is_offline,
    is_transient,
    remove_cached_snapshot,
    remove_partial_downloads,
)

__all__ = [
    "PICKLE_SUFFIXES",
    "PULL_ATTEMPTS",
    "PULL_BACKOFF_S",
    "CorruptFileError",
    "load_from_folder",
    "load_from_hub",
]

logger = logging.getLogger(__name__)

#: Checkpoint formats that can execute code when unpickled: never loaded from a pulled repo.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
#: Tries of a pull whose Hub calls fail transiently (connection error, timeout, HTTP 408 / 429 / 5xx).
PULL_ATTEMPTS = 3
#: Seconds to wait before the 2nd, 3rd, ... try (the last value repeats).
PULL_BACKOFF_S: tuple[float, ...] = (0.5, 1.0)
#: What a pull downloads from a repo.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.md", "configs/*", "models/model.pt", "LICENSE"]


class CorruptFileError(HubError):
    """A weights file of a repo folder could not be read (truncated, corrupt, or code in a pickle)."""


def _refuse_pickle_only(files: list[str], repo: str) -> None:
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    raise HubError(
        f"{repo} has no model.safetensors"
        + (f", only pickle checkpoints ({', '.join(pickles[:3])})" if pickles else "")
        + ": rllm_zoo loads 2D weights from safetensors only, because unpickling a downloaded file "
        "can run arbitrary code. Ask the author to publish safetensors (rllm-zoo push does), or convert "
        "a checkpoint you trust yourself with safetensors.torch.save_file."
    )


def load_from_folder(folder: str | Path) -> nn.Module:
    """Build a model from a local repo folder (written by ``save_pretrained`` or pulled)."""
    folder = Path(folder)
    if (folder / "configs" / "metadata.json").is_file():
        return _load_bundle(folder, str(folder))
    if (folder / "config.json").is_file():
        if not (folder / "model.safetensors").is_file():
            _refuse_pickle_only([p.name for p in folder.iterdir()], str(folder))
        return _load_timm(folder, str(folder))
    raise HubError(
        f"{folder} is neither a timm folder (config.json + model.safetensors) nor a MONAI bundle "
        "(configs/metadata.json); write one with rllm_zoo.hub.save_pretrained or `rllm-zoo package`"
    )


def _load_timm(folder: Path, what: str) -> nn.Module:
    """``timm.create_model("local-dir:<folder>", pretrained=True)``; unreadable safetensors -> CorruptFileError."""
    import safetensors
    import timm

    from .. import timm_vit  # noqa: F401  (registers the rllm_* architectures)

    try:
        return timm.create_model(f"local-dir:{folder}", pretrained=True)
    except Exception as e:
        bad = e
        while bad is not None and not isinstance(bad, safetensors.SafetensorError):
            bad = bad.__cause__ or bad.__context__
        if bad is None:
            raise
        first = str(bad).splitlines()[0] if str(bad) else ""
        raise CorruptFileError(
            f"{what}: model.safetensors is truncated or corrupt ({type(bad).__name__}: {first})"
        ) from bad


def load_from_hub(repo_id: str, *, revision: str | None = None, token: str | None = None) -> nn.Module:
    """Download (or reuse from cache) and build a boosted model published with rllm_zoo.

    How failures behave:

    * **Bounded in time.** Every request made for the repo gets a finite timeout, read from the
      environment at call time: ``HF_HUB_ETAG_TIMEOUT`` for metadata (the repo-info call that
      resolves the revision and lists files, file HEADs), ``HF_HUB_DOWNLOAD_TIMEOUT`` for file data
      (default 10 s each; huggingface_hub itself reads them only at import and sends its
      metadata call with no timeout at all).
    * **Retried.** A connection error, timeout, HTTP 408 / 429 / 5xx on the metadata call, or an
      HTTP 408 / 429 / 5xx on a file, retries the whole pull up to :data:`PULL_ATTEMPTS` times,
      waiting :data:`PULL_BACKOFF_S` in between. 401 / 403 / 404 are never retried. A dropped or
      stalled file transfer is not retried here: huggingface_hub already resumes it.
    * **Cached copy used.** If the metadata call fails transiently and the revision is in the local
      cache, that snapshot is loaded at once (no retry wait) with a
      :class:`~rllm_zoo.hub.errors.HubCacheFallbackWarning`; set ``HF_HUB_OFFLINE=1`` to skip the
      Hub altogether.
    * **No corrupt files left.** A failed download leaves no ``*.incomplete`` blob, and a weights
      file that cannot be read (e.g. a truncated ``model.safetensors``) gets its cached snapshot
      and blobs deleted, so the next pull downloads it again.

    Args:
        repo_id: ``"org/name"`` (``"org/name@revision"`` also works).
        revision: branch, tag or commit (default ``main``).
        token: Hub token for private repos.

    Raises:
        HubError: the repo, revision or a file is missing, access is refused, the Hub failed or
            timed out (and the repo is not cached), a weights file is corrupt
            (:class:`CorruptFileError`), the repo is not an rllm_zoo model, or it only holds pickle
            checkpoints. The message says which, and the fix.
        LLMChecksumError: a delta repo's LLM layer no longer hashes to the recorded sha256.
    """
    if "@" in repo_id and revision is None:
        repo_id, revision = repo_id.split("@", 1)
    with hub_errors(repo_id, "downloading", revision, allow_patterns=ALLOW_PATTERNS):
        try:
            folder, remote_files = _pull(repo_id, revision, token)
        except BaseException:
            remove_partial_downloads(repo_id)
            raise
    try:
        return _build(folder, repo_id, revision, remote_files)
    except CorruptFileError as e:
        remove_cached_snapshot(folder)
        raise CorruptFileError(
            f"{e}; its cached copy (commit {folder.name[:12]}) was deleted, so the next pull downloads it "
            "again; if the error comes back, the file on the Hub is broken: publish it again (rllm-zoo push)"
        ) from e.__cause__


def _build(folder: Path, repo_id: str, revision: str | None, remote_files: list[str] | None) -> nn.Module:
    """The model in a pulled snapshot folder (no network: everything was downloaded by the pull)."""
    if (folder / "configs" / "metadata.json").is_file():
        return _load_bundle(folder, repo_id)
    if not (folder / "config.json").is_file():
        raise HubError(
            f"{repo_id}: no config.json or configs/metadata.json; it is not a timm model or MONAI bundle "
            "published with rllm_zoo"
        )
    if not (folder / "model.safetensors").is_file():
        _refuse_pickle_only(remote_files or [p.name for p in folder.iterdir()], repo_id)
    model = _load_timm(folder, repo_id)
    # what timm.create_model("hf-hub:<repo>[@<revision>]") records, not the cache path
    cfg = {k: v for k, v in dict(model.pretrained_cfg).items() if k != "file"}
    cfg.update(
        hf_hub_id=repo_id + (f"@{revision}" if revision else ""),
        hf_hub_filename="model.safetensors",
        source="hf-hub",
    )
    model.pretrained_cfg = model.default_cfg = cfg
    return model


# ------------------------------------------------------------------ the pull: bounded, retried, cached


def _pull(repo_id: str, revision: str | None, token: str | None) -> tuple[Path, list[str] | None]:
    """The snapshot folder of ``repo_id`` at ``revision`` and the repo's file list (None: from the cache)."""
    from huggingface_hub import HfApi, snapshot_download

    kwargs = dict(revision=revision, token=token, allow_patterns=ALLOW_PATTERNS)
    if is_offline():  # also HF_HUB_OFFLINE set after huggingface_hub was imported
        return Path(snapshot_download(repo_id, local_files_only=True, **kwargs)), None
    timeouts = hub_timeouts()
    with _bounded_requests(repo_id, timeouts):
        for attempt in range(1, PULL_ATTEMPTS + 1):
            try:  # the metadata call (snapshot_download's own has no timeout and no retry)
                info = HfApi(token=token).repo_info(repo_id, revision=revision, timeout=timeouts.metadata)
            except Exception as e:
                if not is_transient(e):
                    raise
                cached = cached_snapshot(repo_id, revision, allow_patterns=ALLOW_PATTERNS)
                if cached is not None:
                    warnings.warn(
                        f"{repo_id}: the Hub failed: {failure_reason(e)}; loading the cached snapshot "
                        f"{cached.name[:12]} instead, which may be out of date (set HF_HUB_OFFLINE=1 to skip "
                        "the Hub)",
                        HubCacheFallbackWarning,
                        stacklevel=3,
                    )
                    return cached, None
                if attempt == PULL_ATTEMPTS:
                    raise
                _backoff(repo_id, attempt, e)
                continue
            try:
                folder = Path(snapshot_download(repo_id, etag_timeout=timeouts.metadata, **kwargs))
            except Exception as e:
                remove_partial_downloads(repo_id)
                # the Hub answered 408 / 429 / 5xx: retry; a stalled / dropped transfer was already
                # resumed by huggingface_hub, and 4xx will not change
                if attempt == PULL_ATTEMPTS or not _server_said_retry(e):
                    raise
                _backoff(repo_id, attempt, e)
                continue
            return folder, [s.rfilename for s in info.siblings or []]
    raise AssertionError("unreachable")  # pragma: no cover


def _server_said_retry(e: BaseException) -> bool:
    cur: BaseException | None = e
    while cur is not None:
        status = getattr(getattr(cur, "response", None), "status_code", None)
        if isinstance(status, int):
            return is_transient(cur)
        cur = cur.__cause__
    return False


def _backoff(repo_id: str, attempt: int, e: BaseException) -> None:
    wait = PULL_BACKOFF_S[min(attempt - 1, len(PULL_BACKOFF_S) - 1)] if PULL_BACKOFF_S else 0.0
    logger.warning(
        "%s: the Hub failed: %s; retrying in %g s (try %d of %d)",
        repo_id,
        failure_reason(e),
        wait,
        attempt + 1,
        PULL_ATTEMPTS,
    )
    time.sleep(wait)


# Request timeouts for repos being pulled (repo_id -> (active pulls, timeouts)), applied by a request
# hook on huggingface_hub's shared HTTP client: snapshot_download's metadata calls pass no timeout,
# its per-file metadata retry uses 60 s, and the file downloads run in worker threads.
_BOUNDS: dict[str, tuple[int, HubTimeouts]] = {}
_BOUNDS_LOCK = threading.Lock()


def _bound_request_timeout(request) -> None:
    """httpx request hook: give a request for a repo being pulled the configured timeout."""
    if not _BOUNDS:
        return
    path = request.url.path
    for repo_id, (_, timeouts) in list(_BOUNDS.items()):
        api = f"/api/models/{repo_id}"
        if path.endswith(api) or f"{api}/" in path:
            seconds = timeouts.metadata
        elif f"/{repo_id}/resolve/" in path:
            seconds = timeouts.metadata if request.method == "HEAD" else timeouts.download
        else:
            continue
        request.extensions["timeout"] = dict.fromkeys(("connect", "read", "write", "pool"), seconds)
        return


@contextlib.contextmanager
def _bounded_requests(repo_id: str, timeouts: HubTimeouts) -> Iterator[None]:
    """Inside the block, every huggingface_hub request for ``repo_id`` (any thread) uses ``timeouts``.

    Installs a request hook on huggingface_hub's shared ``httpx`` client once (it does nothing
    for other repos, or when no pull is active).
    """
    from huggingface_hub.utils import get_session

    with _BOUNDS_LOCK:
        active, _ = _BOUNDS.get(repo_id, (0, timeouts))
        _BOUNDS[repo_id] = (active + 1, timeouts)
    try:
        hooks = get_session().event_hooks["request"]
        if _bound_request_timeout not in hooks:
            hooks.append(_bound_request_timeout)
    except (AttributeError, KeyError, TypeError):  # a custom client factory without httpx hooks
        pass
    try:
        yield
    finally:
        with _BOUNDS_LOCK:
            active, _ = _BOUNDS.get(repo_id, (1, timeouts))
            if active <= 1:
                _BOUNDS.pop(repo_id, None)
            else:
                _BOUNDS[repo_id] = (active - 1, timeouts)


def _resolve_refs(value: object, config: dict, key: str) -> object:
    """A ``network_def`` value with ``@name`` references replaced by literal top-level values.

    Expressions (``$...``) are refused: a pulled config is data, never code run here.
    """
    if isinstance(value, str) and value.startswith("@"):
        ref = value[1:]
        if ref not in config:
            raise HubError(f"network_def#{key} refers to @{ref}, which the config does not define")
        return _resolve_refs(config[ref], config, key)
    if isinstance(value, str) and value.startswith("$"):
        raise HubError(
            f"network_def#{key} is an expression ({value[:40]}...): rllm_zoo builds pulled bundles from "
            "literal arguments only; use monai.bundle.load for bundles you trust"
        )
    if isinstance(value, list):
        return [_resolve_refs(v, config, key) for v in value]
    if isinstance(value, dict):
        return {k: _resolve_refs(v, config, f"{key}#{k}") for k, v in value.items()}
    return value


def _load_bundle(folder: Path, what: str) -> nn.Module:
    """Build a bundle's ``network_def`` (literal arguments only) and load ``models/model.pt`` (weights_only)."""
    from ..monai import create_network

    cfg_file = folder / "configs" / "inference.json"
    weights = folder / "models" / "model.pt"
    if not cfg_file.is_file() or not weights.is_file():
        raise HubError(f"{what}: a MONAI bundle needs configs/inference.json and models/model.pt")
    config = json.loads(cfg_file.read_text(encoding="utf-8"))
    net_def = dict(config.get("network_def") or {})
    target = net_def.pop("_target_", None)
    if target not in ("rllm_zoo.monai.create_network", "rllm_zoo.monai.presets.create_network"):
        raise HubError(
            f"{what}: network_def#_target_ is {target!r}; rllm_zoo loads bundles whose network is "
            "rllm_zoo.monai.create_network (use monai.bundle.load for other bundles you trust)"
        )
    args = {k: _resolve_refs(v, config, k) for k, v in net_def.items()}
    net = create_network(args.pop("name"), **args)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # the restricted unpickler refused something, or the file is corrupt
        first = str(e).splitlines()[0] if str(e) else ""
        raise CorruptFileError(
            f"{what}: models/model.pt could not be read as plain tensors ({type(e).__name__}: {first}); "
            "rllm_zoo never unpickles code from a pulled repo"
        ) from e
    missing, unexpected = net.load_state_dict(state, strict=False)
    frozen = {k for k in net.state_dict() if k.startswith("booster.block.")}
    block = getattr(net.booster, "block", None) if net.booster is not None else None
    if block is not None and frozen & set(missing) and block.info.extra.get("rebuilt_from_config"):
        raise HubError(
            f"{what}: models/model.pt has no LLM block weights (delta) but network_def rebuilds the block "
            "from llm_config (full); the bundle is inconsistent: remove llm_config from network_def"
        )
    bad = [k for k in missing if k not in frozen]
    if bad or unexpected:
        raise HubError(
            f"{what}: models/model.pt does not fit the bundle's network: missing {bad[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )
    net.bundle_metadata = json.loads((folder / "configs" / "metadata.json").read_text(encoding="utf-8"))
    return net.eval()
