"""The local Hub server (tests/hub_server.py) against huggingface_hub's own, unmodified client.

Client behaviours these tests pin down (huggingface_hub 2.x):

* ``hf_hub_download`` makes a HEAD on ``/resolve`` (no retry), then a GET. A failed HEAD (5xx, timeout) with no
  cached copy is retried once more with retries enabled (5 tries, 1-8 s backoff): one injected HEAD 500 is
  invisible to the caller.
* The GET is not retried on 5xx (only 408/429): a GET 500 raises ``HfHubHTTPError``. Timeouts and truncated bodies
  (``RemoteProtocolError``) are retried up to 5 times, 1 s apart, resuming with a Range request from the bytes
  already received (they arrive in 10 MiB pieces, so a small file restarts from 0). A TCP reset (``ReadError``)
  is not retried. A failed download leaves no blob and no snapshot entry in the cache.
* ``HfApi.model_info``/``repo_info`` are single requests; ``list_repo_tree``, ``preupload`` and the LFS calls go
  through ``http_backoff`` (retries 5xx with sleeps): inject faults on those with care.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from hub_server import LocalHubServer, git_blob_sha1
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    HfFileSystem,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session


def _weights(n: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes (stand-in for a safetensors file)."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def _cache_blobs(local_hub: LocalHubServer, repo_id: str) -> list[Path]:
    assert local_hub.hf_home is not None
    blobs = local_hub.hf_home / "hub" / f"models--{repo_id.replace('/', '--')}" / "blobs"
    return sorted(blobs.iterdir()) if blobs.is_dir() else []


def test_client_is_pointed_at_the_local_hub(local_hub: LocalHubServer):
    assert hf_constants.ENDPOINT == local_hub.url == os.environ["HF_ENDPOINT"]
    assert hf_constants.HF_HUB_DISABLE_XET and not hf_constants.HF_HUB_OFFLINE
    assert HfApi().endpoint == local_hub.url
    assert hf_constants.HF_HUB_CACHE == local_hub.env["HF_HUB_CACHE"]
    assert HfApi().whoami()["name"] == local_hub.username
    # the preupload policy: LFS for weight-like suffixes, files >= 10 MiB, and binary samples
    assert (
        local_hub.is_lfs("m.safetensors", 10)
        and local_hub.is_lfs("w.gguf", 10)
        and local_hub.is_lfs("x.pt", 1)
    )
    assert local_hub.is_lfs("notes.txt", 10 * 1024 * 1024) and local_hub.is_lfs("blob.dat", 3, b"a\0b")
    assert not local_hub.is_lfs("config.json", 100, b"{}")


def test_create_repo_upload_folder_and_download(local_hub: LocalHubServer, tmp_path: Path):
    api = HfApi()
    repo_id = local_hub.new_repo_id("upload")
    url = api.create_repo(repo_id, repo_type="model", exist_ok=True)
    assert url.repo_id == repo_id and url.startswith(local_hub.url)
    assert api.create_repo(repo_id, exist_ok=True).repo_id == repo_id
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo(repo_id, exist_ok=False)
    assert exc.value.response.status_code == 409

    folder = tmp_path / "upload"
    (folder / "sub").mkdir(parents=True)
    config = b'{"hidden_size": 8}\n'
    weights = _weights(200_000)
    (folder / "config.json").write_bytes(config)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    (folder / "sub" / "model.safetensors").write_bytes(weights)
    info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="add model")
    assert len(info.oid) == 40 and info.commit_url.endswith(f"/{repo_id}/commit/{info.oid}")

    # regular vs LFS was decided by the preupload answer, LFS content went through the batch API (basic transfer)
    commit = local_hub.commit(repo_id)
    assert commit.sha == info.oid and commit.title == "add model"
    assert not commit.files["config.json"].lfs and commit.files["sub/model.safetensors"].lfs
    paths = [r.path for r in local_hub.requests]
    assert any(p.endswith(".git/info/lfs/objects/batch") for p in paths)
    assert any(r.method == "PUT" and r.path.startswith("/_lfs/") for r in local_hub.requests)
    assert any(p.startswith(f"/api/models/{repo_id}/commit/main") for p in paths)

    assert api.list_repo_files(repo_id) == [
        ".gitattributes",
        "README.md",
        "config.json",
        "sub/model.safetensors",
    ]
    model = api.model_info(repo_id, files_metadata=True)
    assert model.sha == info.oid
    siblings = {s.rfilename: s for s in model.siblings}
    assert siblings["sub/model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert siblings["config.json"].lfs is None and siblings["config.json"].blob_id == git_blob_sha1(config)

    assert Path(hf_hub_download(repo_id, "config.json")).read_bytes() == config
    assert Path(hf_hub_download(repo_id, "sub/model.safetensors")).read_bytes() == weights
    meta = get_hf_file_metadata(hf_hub_url(repo_id, "sub/model.safetensors"))
    assert (meta.etag, meta.size, meta.commit_hash) == (
        hashlib.sha256(weights).hexdigest(),
        len(weights),
        info.oid,
    )
    assert get_hf_file_metadata(hf_hub_url(repo_id, "config.json")).etag == git_blob_sha1(config)
    head = local_hub.requests_matching("sub/model.safetensors", method="HEAD")[-1]
    assert head.status == 200 and head.body_bytes == 0

    snapshot = Path(snapshot_download(repo_id))
    assert snapshot.name == info.oid
    assert (snapshot / "sub" / "model.safetensors").read_bytes() == weights


def test_upload_file_create_commit_and_revisions(local_hub: LocalHubServer):
    api = HfApi()
    repo_id = local_hub.new_repo_id("revisions")
    first = local_hub.add_files(repo_id, {"a.txt": "one", "w.bin": _weights(1000, 1)}, message="v1", tag="v1")
    assert local_hub.commit(repo_id, "v1").files["w.bin"].lfs

    second = api.upload_file(
        path_or_fileobj=b"two", path_in_repo="a.txt", repo_id=repo_id, commit_message="v2"
    ).oid
    third = api.create_commit(
        repo_id,
        [CommitOperationAdd("b.pt", _weights(3000, 2)), CommitOperationDelete("w.bin")],
        commit_message="v3",
    ).oid
    assert len({first, second, third}) == 3
    api.create_tag(repo_id, tag="v2", revision=second)
    api.create_branch(repo_id, branch="dev", revision=first)
    api.upload_file(
        path_or_fileobj=b"dev", path_in_repo="dev.txt", repo_id=repo_id, revision="dev", commit_message="d"
    )

    refs = api.list_repo_refs(repo_id)
    assert {b.name for b in refs.branches} == {"main", "dev"}
    assert {t.name: t.target_commit for t in refs.tags} == {"v1": first, "v2": second}
    assert api.list_repo_files(repo_id) == [".gitattributes", "a.txt", "b.pt"]
    assert api.list_repo_files(repo_id, revision=first) == [".gitattributes", "a.txt", "w.bin"]
    assert "dev.txt" in api.list_repo_files(repo_id, revision="dev")
    assert [c.title for c in api.list_repo_commits(repo_id)][:3] == ["v3", "v2", "v1"]

    def read(revision: str, name: str = "a.txt") -> bytes:
        return Path(hf_hub_download(repo_id, name, revision=revision)).read_bytes()

    assert read("main") == b"two"
    assert read("v1") == read(first) == read(first[:10]) == b"one"
    assert read("v2") == b"two"
    assert api.model_info(repo_id, revision="v1").sha == first
    assert api.repo_info(repo_id, revision=second).sha == second
    pinned = Path(snapshot_download(repo_id, revision="v1"))
    assert pinned.name == first and (pinned / "w.bin").read_bytes() == _weights(1000, 1)
    assert not (pinned / "b.pt").exists()


def test_hf_file_system_ranged_read_sends_about_the_range(local_hub: LocalHubServer):
    repo_id = local_hub.new_repo_id("ranges")
    data = _weights(2 * 1024 * 1024, 3)
    local_hub.add_files(repo_id, {"big.safetensors": data})
    fs = HfFileSystem()
    local_hub.reset_stats()
    with fs.open(f"{repo_id}/big.safetensors", "rb", block_size=16 * 1024) as f:
        f.seek(1_000_000)
        assert f.read(1000) == data[1_000_000:1_001_000]
        f.seek(-100, os.SEEK_END)
        assert f.read() == data[-100:]
    sent = local_hub.bytes_sent("/resolve/")
    assert 1100 <= sent <= 1100 + 2 * 16 * 1024, sent  # the range plus fsspec's read-ahead, not 2 MiB
    ranged = local_hub.requests_matching("/resolve/", method="GET")
    assert ranged and all(r.status == 206 and r.range for r in ranged)

    # the three single-range forms and an unsatisfiable one, straight through the client's HTTP session
    url = hf_hub_url(repo_id, "big.safetensors")
    for header, start, end in (("bytes=10-19", 10, 19), ("bytes=2097000-", 2097000, len(data) - 1)):
        r = get_session().get(url, headers={"Range": header})
        assert r.status_code == 206 and r.content == data[start : end + 1]
        assert r.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
    r = get_session().get(url, headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == data[-5:] and r.headers["X-Linked-Size"] == str(len(data))
    r = get_session().get(url, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"


def test_not_found_errors_map_to_client_exceptions(local_hub: LocalHubServer):
    repo_id = local_hub.new_repo_id("errors")
    sha = local_hub.add_files(repo_id, {"a.txt": "a"})
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(local_hub.new_repo_id("missing"), "a.txt")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info(local_hub.new_repo_id("missing"))
    with pytest.raises(RemoteEntryNotFoundError) as exc:
        hf_hub_download(repo_id, "nope.txt")
    assert isinstance(exc.value, EntryNotFoundError) and exc.value.response.headers["X-Repo-Commit"] == sha
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "a.txt", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        HfApi().model_info(repo_id, revision="f" * 40)


def test_injected_status_errors_and_client_retries(local_hub: LocalHubServer):
    repo_id = local_hub.new_repo_id("status")
    local_hub.add_files(repo_id, {"a.txt": "a", "b.txt": "b"})

    # GET /resolve is not retried on 5xx => the error surfaces
    local_hub.inject("status", "/resolve/main/a.txt", method="GET", status=500)
    with pytest.raises(HfHubHTTPError) as exc:
        hf_hub_download(repo_id, "a.txt")
    assert exc.value.response.status_code == 500
    assert not _cache_blobs(local_hub, repo_id)

    # one HEAD 500: the client retries the HEAD (nothing cached yet) and succeeds
    local_hub.reset_stats()
    local_hub.inject("status", "/resolve/main/b.txt", method="HEAD", status=500)
    assert Path(hf_hub_download(repo_id, "b.txt")).read_bytes() == b"b"
    assert [(r.method, r.status) for r in local_hub.requests] == [("HEAD", 500), ("HEAD", 200), ("GET", 200)]

    # API calls: a single request, the error class follows X-Error-Code
    local_hub.inject("status", f"/api/models/{repo_id}", method="GET", status=503)
    with pytest.raises(HfHubHTTPError) as exc:
        HfApi().model_info(repo_id)
    assert exc.value.response.status_code == 503
    local_hub.inject("status", f"/api/models/{repo_id}", status=404, error_code="RepoNotFound")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info(repo_id)
    assert not local_hub.faults


def test_injected_delay_times_out(local_hub: LocalHubServer, monkeypatch: pytest.MonkeyPatch):
    repo_id = local_hub.new_repo_id("delay")
    local_hub.add_files(repo_id, {"a.txt": "a", "c.txt": "c"})

    local_hub.inject("delay", "/resolve/main/a.txt", method="HEAD", seconds=5)
    t0 = time.monotonic()
    with pytest.raises(httpx2.TimeoutException):
        get_hf_file_metadata(hf_hub_url(repo_id, "a.txt"), timeout=0.3)
    local_hub.inject("delay", f"/api/models/{repo_id}", method="GET", seconds=5)
    with pytest.raises(httpx2.TimeoutException):
        HfApi().model_info(repo_id, timeout=0.3)
    assert time.monotonic() - t0 < 3

    # a download that stalls mid-body past HF_HUB_DOWNLOAD_TIMEOUT is retried (after 1 s) and completes
    monkeypatch.setattr(hf_constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.3)
    local_hub.reset_stats()
    local_hub.inject("delay", "/resolve/main/c.txt", method="GET", seconds=5, after_bytes=0)
    assert Path(hf_hub_download(repo_id, "c.txt")).read_bytes() == b"c"
    gets = local_hub.requests_matching("c.txt", method="GET")
    assert [r.fault for r in gets] == ["delay", None]


@pytest.mark.fault
def test_dropped_connection_leaves_no_complete_file(local_hub: LocalHubServer):
    repo_id = local_hub.new_repo_id("drop")
    data = _weights(300_000, 4)
    local_hub.add_files(repo_id, {"w.safetensors": data})

    # connection reset mid-body: the client gives up at once, nothing usable stays in the cache
    local_hub.inject("drop", "w.safetensors", method="GET", after_bytes=100_000, reset=True)
    with pytest.raises(httpx2.TransportError):
        hf_hub_download(repo_id, "w.safetensors")
    assert local_hub.requests_matching("w.safetensors", method="GET")[-1].body_bytes == 100_000
    assert all(p.name.endswith(".incomplete") for p in _cache_blobs(local_hub, repo_id))
    assert Path(hf_hub_download(repo_id, "w.safetensors")).read_bytes() == data

    # clean close mid-body (truncated response): the client retries by itself and completes
    local_hub.reset_stats()
    local_hub.inject("drop", "w.safetensors", method="GET", after_bytes=50_000)
    path = hf_hub_download(repo_id, "w.safetensors", force_download=True)
    assert Path(path).read_bytes() == data
    assert [r.body_bytes for r in local_hub.requests_matching("w.safetensors", method="GET")] == [
        50_000,
        300_000,
    ]


def test_offline_mode_serves_from_cache(local_hub: LocalHubServer):
    repo_id = local_hub.new_repo_id("offline")
    local_hub.add_files(repo_id, {"a.txt": "cached", "b.txt": "not cached"})
    path = hf_hub_download(repo_id, "a.txt")
    snapshot = snapshot_download(repo_id, allow_patterns=["a.txt"])

    local_hub.set_offline()
    assert (
        hf_constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == local_hub.env["HF_HUB_OFFLINE"] == "1"
    )
    local_hub.reset_stats()
    assert hf_hub_download(repo_id, "a.txt") == path
    assert snapshot_download(repo_id, allow_patterns=["a.txt"]) == snapshot
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(repo_id, "b.txt")
    with pytest.raises(OfflineModeIsEnabled):
        HfApi().model_info(repo_id)
    assert local_hub.requests == []

    local_hub.set_offline(False)
    assert Path(hf_hub_download(repo_id, "b.txt")).read_bytes() == b"not cached"


def test_subprocess_uses_local_hub_env(local_hub: LocalHubServer):
    repo_id = local_hub.new_repo_id("subprocess")
    local_hub.add_files(repo_id, {"a.txt": "from the local hub"})
    code = (
        "import sys; from huggingface_hub import hf_hub_download;"
        "print(open(hf_hub_download(sys.argv[1], 'a.txt')).read())"
    )

    def run() -> str:
        env = {**os.environ, **local_hub.env}
        out = subprocess.run([sys.executable, "-c", code, repo_id], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert run() == "from the local hub"
    assert local_hub.requests_matching("a.txt", method="GET")
    local_hub.set_offline()
    local_hub.reset_stats()
    assert run() == "from the local hub"  # same HF_HOME: served from the cache the first run filled
    assert local_hub.requests == []


def test_stalled_request_from_before_a_reset_is_never_logged(local_hub: LocalHubServer):
    """A client that gave up on a stalled answer must not show up in a later test's request log."""
    repo_id = local_hub.new_repo_id("late")
    local_hub.add_files(repo_id, {"a.txt": "late"})
    local_hub.inject("delay", "a.txt", method="GET", seconds=1.5)
    with pytest.raises(httpx2.TimeoutException):
        httpx2.get(hf_hub_url(repo_id, "a.txt"), timeout=0.2)
    local_hub.reset_stats()
    time.sleep(2.0)  # the server finishes the stalled answer now
    assert local_hub.requests == []
    httpx2.get(hf_hub_url(repo_id, "a.txt"), timeout=5, follow_redirects=True)
    assert len(local_hub.requests_matching("a.txt", method="GET")) == 1
