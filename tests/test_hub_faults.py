"""Hub faults against the local server: each failure is mapped by its real cause, retried when
transient, bounded in time, and leaves no corrupt file in the cache.

:data:`FAULT_CASES` is a table of named cases (fault injected -> what ``load_from_hub`` does); the
docs' fault table can be generated from it. Cases that need more than one inject-and-pull step
(a truncated file, the CLI, the bounded HEAD retry) are tests of their own below.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

from rllm_zoo.hub import HubError, load_from_hub, pull, save_pretrained
from rllm_zoo.hub.errors import HubCacheFallbackWarning, hub_errors, hub_timeouts, is_transient

X2 = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
#: A stalled server sleeps this long before answering: much longer than any test may take.
STALL_S = 30.0
#: HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT in the stall cases.
FAST_TIMEOUTS = {"HF_HUB_ETAG_TIMEOUT": "1", "HF_HUB_DOWNLOAD_TIMEOUT": "1"}


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory) -> dict[str, bytes]:
    """The files of a small rllm_zoo timm repo (delta weights), to seed repos without pushing."""
    torch.manual_seed(0)
    model = timm.create_model("rllm_vit_micro_patch4_28", num_classes=5, depth=1, llm="smollm2").eval()
    folder = tmp_path_factory.mktemp("faults") / "repo"
    save_pretrained(model, folder, weights="delta")
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """Keep the retry waits short (the count stays the module's)."""
    monkeypatch.setattr(pull, "PULL_BACKOFF_S", (0.05, 0.1))


def probes(hub, repo: str) -> list[int]:
    """Statuses of load_from_hub's metadata calls (``GET /api/models/<repo>``), one per try."""
    return [
        r.status
        for r in hub.requests_matching(f"/api/models/{repo}", "GET")
        if r.path == f"/api/models/{repo}"
    ]


# ------------------------------------------------------------------ the table of fault cases


@dataclass(frozen=True)
class FaultCase:
    """One fault: what is injected, and what ``load_from_hub`` must do about it."""

    name: str
    #: the fault, in words (docs table)
    fault: str
    #: what happens, in words (docs table)
    behaviour: str
    #: ``local_hub.inject(**kw)`` calls; ``{repo}`` in ``match`` is the case's repo
    inject: tuple[dict[str, Any], ...] = ()
    #: regex of the HubError message; None: the model loads
    error: str | None = None
    #: regex of the HubCacheFallbackWarning; None: no such warning
    warning: str | None = None
    #: the repo was pulled once before the fault
    cached: bool = False
    #: how HF_HUB_OFFLINE is switched on: "constants" (huggingface_hub's view) or "env" (set after import)
    offline: str | None = None
    #: the repo is never created on the server
    absent: bool = False
    #: statuses of the metadata calls (one per try)
    probes: tuple[int, ...] | None = None
    #: requests that met the fault (a stalled request is only logged once the server gives up)
    hits: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: wall-clock limit of the pull, seconds
    max_s: float = 15.0


FAULT_CASES = [
    FaultCase(
        "offline_not_cached",
        "HF_HUB_OFFLINE=1, repo never pulled",
        "HubError: offline and not cached (no request sent)",
        offline="constants",
        error=r"offline \(HF_HUB_OFFLINE=1\) and not in the local cache; unset HF_HUB_OFFLINE",
        probes=(),
    ),
    FaultCase(
        "offline_set_after_import_not_cached",
        "HF_HUB_OFFLINE=1 set in os.environ after huggingface_hub was imported",
        "read at call time: HubError offline and not cached, no request sent",
        offline="env",
        error=r"offline \(HF_HUB_OFFLINE=1\) and not in the local cache",
        probes=(),
    ),
    FaultCase(
        "offline_cached_loads",
        "HF_HUB_OFFLINE=1, repo pulled before",
        "loads from the cache, no request",
        offline="constants",
        cached=True,
        probes=(),
    ),
    FaultCase(
        "metadata_503_twice_is_retried",
        "metadata call answers 503 twice",
        "retried with backoff; the 3rd try loads",
        inject=({"kind": "status", "match": "/api/models/{repo}", "status": 503, "count": 2},),
        probes=(503, 503, 200),
    ),
    FaultCase(
        "metadata_503_persistent_is_a_server_error",
        "metadata call always answers 503",
        "3 tries, then HubError: server error, retry later",
        inject=({"kind": "status", "match": "/api/models/{repo}", "status": 503, "count": None},),
        error=r"had a server error \(HTTP 503, not a problem on your side\); retry later; it is not in the local cache",
        probes=(503, 503, 503),
    ),
    FaultCase(
        "metadata_503_with_cache_falls_back",
        "metadata call always answers 503, repo pulled before",
        "loads the cached snapshot at once, with a HubCacheFallbackWarning",
        inject=({"kind": "status", "match": "/api/models/{repo}", "status": 503, "count": None},),
        cached=True,
        warning=r"the Hub failed: HTTP 503; loading the cached snapshot [0-9a-f]{12} instead",
        probes=(503,),
    ),
    FaultCase(
        "metadata_429_is_retried",
        "metadata call answers 429 once",
        "retried; the 2nd try loads",
        inject=({"kind": "status", "match": "/api/models/{repo}", "status": 429, "count": 1},),
        probes=(429, 200),
    ),
    FaultCase(
        "metadata_connection_dropped_is_retried",
        "metadata call: connection closed before the body",
        "retried; the 2nd try loads",
        inject=({"kind": "drop", "match": "/api/models/{repo}", "count": 1},),
        probes=(200, 200),  # the dropped answer had its status line sent
    ),
    FaultCase(
        "metadata_bare_404_is_not_retried",
        "metadata call answers 404 without X-Error-Code (not a Hub, wrong HF_ENDPOINT)",
        "one try, HubError naming the URL and HF_ENDPOINT",
        inject=({"kind": "status", "match": "/api/models/{repo}", "status": 404, "count": None},),
        error=r"answered HTTP 404 for \S+/api/models/\S+: the repo, revision or file is not there; check the id and "
        r"that HF_ENDPOINT",
        probes=(404,),
    ),
    FaultCase(
        "metadata_403_is_not_retried",
        "metadata call answers 403",
        "one try, HubError: access refused, log in",
        inject=({"kind": "status", "match": "/api/models/{repo}", "status": 403, "count": None},),
        error=r"refused access \(HTTP 403\); log in with `hf auth login`",
        probes=(403,),
    ),
    FaultCase(
        "missing_repo_is_not_retried",
        "the repo does not exist",
        "one try, HubError: no such repo",
        absent=True,
        error=r"no such repo on http://127\.0\.0\.1:\d+",
        probes=(404,),
    ),
    FaultCase(
        "file_503_once_is_retried",
        "model.safetensors download answers 503 once",
        "the whole pull is retried; the 2nd try loads",
        inject=(
            {"kind": "status", "match": "model.safetensors", "method": "GET", "status": 503, "count": 1},
        ),
        probes=(200, 200),
    ),
    FaultCase(
        "hub_stalled_server_times_out",
        "every request stalls (30 s), timeouts 1 s, repo never pulled",
        "3 tries of 1 s, then HubError: did not answer in time, names the timeouts",
        inject=({"kind": "delay", "match": "", "seconds": STALL_S, "count": None},),
        env=FAST_TIMEOUTS,
        error=r"did not answer in time \(timed out after 1 s for metadata / 1 s for file data: HF_HUB_ETAG_TIMEOUT / "
        r"HF_HUB_DOWNLOAD_TIMEOUT\).*; it is not in the local cache either",
        hits=3,
        max_s=10.0,
    ),
    FaultCase(
        "hub_stalled_server_uses_cache",
        "every request stalls (30 s), timeouts 1 s, repo pulled before",
        "after one 1 s timeout, loads the cached snapshot with a HubCacheFallbackWarning",
        inject=({"kind": "delay", "match": "", "seconds": STALL_S, "count": None},),
        env=FAST_TIMEOUTS,
        cached=True,
        warning=r"the Hub failed: timed out, no answer within 1 s \(HF_HUB_ETAG_TIMEOUT\) / 1 s "
        r"\(HF_HUB_DOWNLOAD_TIMEOUT\); loading the cached snapshot",
        hits=1,
        max_s=5.0,
    ),
    FaultCase(
        "hub_stalled_tree_listing_is_bounded",
        "the file listing stalls once (snapshot_download sends it with no timeout), timeouts 1 s",
        "cut at HF_HUB_ETAG_TIMEOUT, huggingface_hub's retry of the listing loads",
        inject=({"kind": "delay", "match": "/tree/", "seconds": STALL_S, "count": 1},),
        env=FAST_TIMEOUTS,
        hits=1,
        max_s=8.0,
    ),
]


@pytest.mark.parametrize("case", FAULT_CASES, ids=[c.name for c in FAULT_CASES])
def test_fault(local_hub, repo_files, monkeypatch, case: FaultCase):
    repo = local_hub.new_repo_id(case.name.replace("_", "-")[:40])
    if not case.absent:
        local_hub.add_files(repo, repo_files)
    expected = None
    if case.cached:
        expected = load_from_hub(repo).eval()(X2)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if case.offline == "constants":
        local_hub.set_offline()
    elif case.offline == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    faults = []
    for kw in case.inject:
        kw = dict(kw)
        faults.append(local_hub.inject(kw.pop("kind"), kw.pop("match").format(repo=repo), **kw))
    local_hub.reset_stats()

    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if case.error is None:
            model = load_from_hub(repo)
        else:
            with pytest.raises(HubError) as info:
                load_from_hub(repo)
    elapsed = time.monotonic() - start
    print(f"\n{case.name}: {elapsed:.2f} s")

    assert elapsed < case.max_s, f"{case.name} took {elapsed:.1f} s"
    if case.error is None:
        out = model.eval()(X2)
        if expected is not None:
            assert torch.equal(out, expected)
    else:
        message = str(info.value)
        assert "\n" not in message
        assert re.search(case.error, message), message
    fallbacks = [w for w in caught if issubclass(w.category, HubCacheFallbackWarning)]
    if case.warning is None:
        assert not fallbacks, [str(w.message) for w in fallbacks]
    else:
        assert len(fallbacks) == 1 and re.search(case.warning, str(fallbacks[0].message))
    if case.probes is not None:
        assert tuple(probes(local_hub, repo)) == case.probes
    if case.hits is not None:
        assert sum(f.hits for f in faults) == case.hits
    assert not list(Path(local_hub.hf_home).rglob("*.incomplete"))


# ------------------------------------------------------------------ cases of their own


def test_fault_truncated_safetensors_is_removed_from_cache(local_hub, repo_files):
    repo = local_hub.new_repo_id("truncated")
    good = repo_files["model.safetensors"]
    local_hub.add_files(repo, {**repo_files, "model.safetensors": good[: len(good) // 2]})
    start = time.monotonic()
    with pytest.raises(
        HubError, match=r"model\.safetensors is truncated or corrupt \(SafetensorError: "
    ) as info:
        load_from_hub(repo)
    assert "was deleted, so the next pull downloads it again" in str(info.value)
    assert isinstance(info.value, pull.CorruptFileError)
    storage = Path(local_hub.env["HF_HUB_CACHE"]) / f"models--{repo.replace('/', '--')}"
    commit = local_hub.resolve_revision(repo)
    assert not (storage / "snapshots" / commit).exists()
    truncated_blob = storage / "blobs" / hashlib.sha256(good[: len(good) // 2]).hexdigest()
    assert not truncated_blob.exists()
    # the author fixes the repo: the next pull downloads and loads
    local_hub.add_files(repo, {"model.safetensors": good})
    assert load_from_hub(repo) is not None
    assert (storage / "blobs" / hashlib.sha256(good).hexdigest()).is_file()  # blobs are named by sha256
    print(f"\ntruncated: {time.monotonic() - start:.2f} s")


def test_fault_truncated_blob_in_cache_is_downloaded_again(local_hub, repo_files):
    """A blob truncated on disk (not on the Hub): the error deletes it and the next pull fetches it."""
    repo = local_hub.new_repo_id("truncated-blob")
    local_hub.add_files(repo, repo_files)
    expected = load_from_hub(repo).eval()(X2)
    storage = Path(local_hub.env["HF_HUB_CACHE"]) / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / local_hub.resolve_revision(repo)
    blob = (snapshot / "model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[:100])
    with pytest.raises(HubError, match=r"model\.safetensors is truncated or corrupt"):
        load_from_hub(repo)
    assert not blob.exists() and not snapshot.exists()
    local_hub.reset_stats()
    assert torch.equal(load_from_hub(repo).eval()(X2), expected)
    assert local_hub.bytes_sent("model.safetensors", "GET") == len(repo_files["model.safetensors"])


def test_fault_stalled_file_metadata_retry_is_bounded(local_hub, repo_files, monkeypatch):
    """huggingface_hub retries a failed file HEAD with a 60 s timeout: the pull keeps it to HF_HUB_ETAG_TIMEOUT."""
    repo = local_hub.new_repo_id("slow-head")
    local_hub.add_files(repo, repo_files)
    for key, value in FAST_TIMEOUTS.items():
        monkeypatch.setenv(key, value)
    fault = local_hub.inject("delay", "model.safetensors", method="HEAD", seconds=STALL_S, count=2)
    start = time.monotonic()
    assert load_from_hub(repo) is not None
    elapsed = time.monotonic() - start
    print(f"\nstalled HEAD x2: {elapsed:.2f} s")
    assert elapsed < 10 and fault.hits == 2


def test_fault_cli_pull_stalled_server_exits_with_message(local_hub, repo_files, monkeypatch, capsys):
    from rllm_zoo.cli import main

    repo = local_hub.new_repo_id("cli-stalled")
    local_hub.add_files(repo, repo_files)
    for key, value in FAST_TIMEOUTS.items():
        monkeypatch.setenv(key, value)
    local_hub.inject("delay", "", seconds=STALL_S, count=None)
    start = time.monotonic()
    assert main(["pull", repo]) == 2
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    print(f"\ncli stalled: {elapsed:.2f} s")
    assert elapsed < 10
    assert f"rllm-zoo pull: error: downloading {repo!r}: the Hub at" in err
    assert "did not answer in time" in err and "HF_HUB_ETAG_TIMEOUT" in err
    # cached: the CLI loads it, with the warning on stderr
    local_hub.clear_faults()
    assert main(["pull", repo]) == 0
    capsys.readouterr()
    local_hub.inject("delay", "", seconds=STALL_S, count=None)
    start = time.monotonic()
    with pytest.warns(HubCacheFallbackWarning, match="loading the cached snapshot"):
        assert main(["pull", repo]) == 0
    assert json.loads(capsys.readouterr().out)["repo_id"] == repo
    assert time.monotonic() - start < 5


def test_fault_timeouts_are_read_at_call_time(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_ETAG_TIMEOUT", raising=False)
    monkeypatch.delenv("HF_HUB_DOWNLOAD_TIMEOUT", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 10)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 10)
    assert (hub_timeouts().metadata, hub_timeouts().download) == (10, 10)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1.5")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "2")
    assert (hub_timeouts().metadata, hub_timeouts().download) == (1.5, 2)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "nonsense")
    assert hub_timeouts().metadata == 10


def _http_error(cls, status: int, code: str | None = None):
    import httpx2

    request = httpx2.Request("GET", "http://hub.test/api/models/org/m")
    headers = {"X-Error-Code": code} if code else {}
    return cls(f"{status} error", response=httpx2.Response(status, request=request, headers=headers))


def _wrapped(inner: BaseException):
    """What snapshot_download raises when its metadata call fails and nothing is cached."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        try:
            raise inner
        except BaseException as e:
            raise LocalEntryNotFoundError("cannot find the requested files in the local cache") from e
    except LocalEntryNotFoundError as outer:
        return outer


def _mapping_cases():
    import httpx2
    from huggingface_hub import errors

    return [
        ("offline", _wrapped(errors.OfflineModeIsEnabled("offline")), r"offline \(HF_HUB_OFFLINE=1\)", False),
        ("timeout", _wrapped(httpx2.ReadTimeout("timed out")), r"did not answer in time", True),
        ("refused", _wrapped(httpx2.ConnectError("refused")), r"could not be reached \(ConnectError", True),
        ("5xx", _wrapped(_http_error(errors.HfHubHTTPError, 502)), r"server error \(HTTP 502", True),
        ("bare_404", _wrapped(_http_error(errors.HfHubHTTPError, 404)), r"answered HTTP 404", False),
        ("429", _http_error(errors.HfHubHTTPError, 429), r"rate-limiting requests \(HTTP 429\)", True),
        ("401", _http_error(errors.HfHubHTTPError, 401), r"refused access \(HTTP 401\)", False),
        ("repo", _http_error(errors.RepositoryNotFoundError, 404, "RepoNotFound"), r"no such repo", False),
        ("revision", _http_error(errors.RevisionNotFoundError, 404), r"the revision does not exist", False),
        (
            "file",
            _http_error(errors.RemoteEntryNotFoundError, 404),
            r"a file is missing from the repo",
            False,
        ),
        ("local_file", errors.LocalEntryNotFoundError("x"), r"not in the local cache and the Hub", False),
    ]


@pytest.mark.parametrize("name,exc,message,transient", _mapping_cases(), ids=[c[0] for c in _mapping_cases()])
def test_fault_mapping_uses_the_real_cause(local_hub, name, exc, message, transient):
    """Most specific class first: LocalEntryNotFoundError (an EntryNotFoundError) is told by what it wraps."""
    if name == "offline":
        local_hub.set_offline()
    with pytest.raises(HubError, match=message) as info:
        with hub_errors("org/m", "downloading"):
            raise exc
    assert "a file is missing" not in str(info.value) or name == "file"
    assert is_transient(exc) is transient
