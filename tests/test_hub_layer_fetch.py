"""One layer of a Hub LLM through HTTP range requests (rllm_zoo.llm.hub_ranges), against the local Hub server.

A tiny LLaMA (4 layers, width 64) saved as 12 shards of ~50 KB is pushed to ``tests/hub_server.py``; its layers
span several shards, so every path crosses shard boundaries. The server counts the body bytes of each request.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import hub_server
import pytest
import torch
from hub_server import LocalHubServer

from rllm_zoo.llm import http_ranges, hub_ranges, layer_cache, load_llm_block, safetensors_header
from rllm_zoo.llm.checkpoint import SAFE_INDEX, CheckpointError
from rllm_zoo.llm.hub_ranges import (
    HubFetchError,
    LayerCache,
    LayerNotCachedError,
    RetryPolicy,
    coalesce_ranges,
    parse_safetensors_header,
)
from rllm_zoo.llm.sources import LLMSourceError

LAYER = 3  # the last layer (-1) of the tiny model


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """A fresh rllm_zoo cache per test, and fast retries (the production waits are 1-8 s)."""
    monkeypatch.setenv("RLLM_ZOO_CACHE", str(tmp_path / "rllm_zoo_cache"))
    monkeypatch.delenv(layer_cache.REF_TTL_ENV, raising=False)
    monkeypatch.setattr(
        hub_ranges, "DEFAULT_RETRY", RetryPolicy(max_retries=2, base_wait=0.01, max_wait=0.02)
    )


def _push(
    hub: LocalHubServer, folder: Path, repo_id: str | None = None, tag: str | None = None
) -> tuple[str, str]:
    repo_id = repo_id or hub.new_repo_id("tiny-llama")
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    return repo_id, hub.add_files(repo_id, files, tag=tag)


def _headers(folder: Path) -> dict[str, hub_ranges.SafetensorsHeader]:
    return {p.name: safetensors_header._read_local_header(p) for p in sorted(folder.glob("*.safetensors"))}


def _layer_layout(folder: Path, layer: int) -> tuple[int, dict[str, int], dict[str, int]]:
    """(tensor bytes of the layer, {shard: layer bytes in it}, {shard: header bytes}) for the shards holding it."""
    per_shard: dict[str, int] = {}
    header_bytes: dict[str, int] = {}
    for fname, header in _headers(folder).items():
        n = sum(t.nbytes for name, t in header.tensors.items() if name.startswith(f"model.layers.{layer}."))
        if n:
            per_shard[fname] = n
            header_bytes[fname] = header.data_start
    return sum(per_shard.values()), per_shard, header_bytes


def _assert_same_block(a, b) -> None:
    assert a.info.sha256 == b.info.sha256
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)
    x = torch.randn(2, 7, a.width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def _entries(tmp_path: Path) -> list[Path]:
    root = tmp_path / "rllm_zoo_cache" / "hub-layers"
    return sorted(root.glob("*/layers/*")) if root.is_dir() else []


# ---------------------------------------------------------------------------------------------------------------


def test_layer_matches_local_copy_and_only_its_ranges_are_served(local_hub, tiny_llm_dir, tmp_path):
    folder = tiny_llm_dir("llama")
    repo_id, commit = _push(local_hub, folder)
    layer_bytes, per_shard, header_bytes = _layer_layout(folder, LAYER)
    assert len(per_shard) >= 2, "the fixture should spread a layer over several shards"

    block = load_llm_block(repo_id, layer=-1)
    _assert_same_block(block, load_llm_block(str(folder), layer=-1))
    assert (block.info.layer, block.info.revision, block.info.source) == (LAYER, commit, repo_id)

    # bytes: the layer (<= 1.1x) plus shard headers, config.json and the index; nothing of the other shards
    small = (folder / "config.json").stat().st_size + (folder / SAFE_INDEX).stat().st_size
    sent = local_hub.bytes_sent()
    assert sent <= 1.1 * layer_bytes + sum(header_bytes.values()) + small, (sent, layer_bytes)
    for shard in _headers(folder):
        got = local_hub.bytes_sent(shard, method="GET")
        if shard not in per_shard:
            assert got == 0, shard
        else:  # two small reads for the header, then one coalesced request for the tensors
            gets = local_hub.requests_matching(shard, method="GET")
            assert [r.status for r in gets] == [206, 206, 206] and all(r.range for r in gets)
            assert got == header_bytes[shard] + per_shard[shard]

    # the cache entry is a valid safetensors file holding exactly the layer's tensors
    from safetensors import safe_open

    data = next(p for p in _entries(tmp_path) if p.suffix == ".safetensors")
    manifest = json.loads(data.with_suffix(".json").read_text())
    assert manifest["commit"] == commit and manifest["repo_id"] == repo_id
    with safe_open(data, framework="pt") as f:
        assert sorted(f.keys()) == manifest["names"]
        assert all(n.startswith(f"model.layers.{LAYER}.") for n in f.keys())
        assert sum(f.get_tensor(n).nbytes for n in f.keys()) == layer_bytes

    # second call: no request at all
    local_hub.reset_stats()
    again = load_llm_block(repo_id, layer=-1)
    assert local_hub.requests == []
    _assert_same_block(again, block)


def test_single_file_repo(local_hub, tiny_llm_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    src = tiny_llm_dir("llama")
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(src / "config.json", single / "config.json")
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(src.glob("*.safetensors")):
        tensors.update(load_file(shard))
    save_file(tensors, single / "model.safetensors", metadata={"format": "pt"})
    repo_id, _ = _push(local_hub, single)

    block = load_llm_block(repo_id, layer=1)
    _assert_same_block(block, load_llm_block(str(single), layer=1))
    _assert_same_block(block, load_llm_block(str(src), layer=1))
    layer_bytes, _, header_bytes = _layer_layout(single, 1)
    gets = local_hub.requests_matching("model.safetensors", method="GET")
    assert [r.status for r in gets if "index" not in r.path] == [206, 206, 206]
    sent = local_hub.bytes_sent("model.safetensors", method="GET")
    assert sent <= 1.1 * layer_bytes + header_bytes["model.safetensors"], (sent, layer_bytes)
    local_hub.reset_stats()
    load_llm_block(repo_id, layer=1)
    assert local_hub.requests == []


@pytest.mark.fault
def test_dropped_connections_and_5xx_are_retried_and_resumed(local_hub, tiny_llm_dir):
    folder = tiny_llm_dir("llama")
    repo_id, _ = _push(local_hub, folder)
    _, per_shard, header_bytes = _layer_layout(folder, LAYER)
    shard = max(per_shard, key=per_shard.get)
    cut = per_shard[shard] // 2
    assert cut > header_bytes[shard]  # the two header reads pass whole; the tensor request dies half-way
    local_hub.inject("drop", shard, method="GET", after_bytes=cut, count=3)
    other = next(s for s in per_shard if s != shard)
    local_hub.inject("status", other, method="GET", status=503, count=2)

    block = load_llm_block(repo_id, layer=LAYER)
    _assert_same_block(block, load_llm_block(str(folder), layer=LAYER))
    gets = local_hub.requests_matching(shard, method="GET")
    assert [r.fault for r in gets] == ["drop", "drop", "drop", None]
    first, resumed = gets[2], gets[3]
    start = int(first.range.split("=")[1].split("-")[0])
    assert resumed.range == f"bytes={start + cut}-{first.range.split('-')[1]}"  # resumed, not restarted
    assert local_hub.bytes_sent(shard, method="GET") == header_bytes[shard] + per_shard[shard]
    assert [r.status for r in local_hub.requests_matching(other, method="GET")][:3] == [503, 503, 206]


def test_failed_fetch_leaves_no_cache_entry_and_the_next_call_succeeds(local_hub, tiny_llm_dir, tmp_path):
    folder = tiny_llm_dir("llama")
    repo_id, _ = _push(local_hub, folder)
    _, per_shard, _ = _layer_layout(folder, LAYER)
    shard = max(per_shard, key=per_shard.get)
    local_hub.inject("drop", shard, method="GET", after_bytes=per_shard[shard] // 2, count=3)
    local_hub.inject("drop", shard, method="GET", after_bytes=0, count=None)  # every resumption dies at once

    with pytest.raises(HubFetchError, match=r"failed 3 times in a row.*nothing partial was kept"):
        load_llm_block(repo_id, layer=LAYER)
    assert _entries(tmp_path) == []  # no entry, no temporary file

    local_hub.clear_faults()
    block = load_llm_block(repo_id, layer=LAYER)
    _assert_same_block(block, load_llm_block(str(folder), layer=LAYER))
    assert len(_entries(tmp_path)) == 2
    local_hub.reset_stats()
    load_llm_block(repo_id, layer=LAYER)
    assert local_hub.requests == []


@pytest.mark.fault
def test_corrupt_or_truncated_cache_entries_are_refetched(local_hub, tiny_llm_dir, tmp_path):
    folder = tiny_llm_dir("llama")
    repo_id, _ = _push(local_hub, folder)
    reference = load_llm_block(repo_id, layer=2)
    data = next(p for p in _entries(tmp_path) if p.suffix == ".safetensors")

    raw = bytearray(data.read_bytes())
    raw[-3] ^= 0xFF  # same size, one flipped byte
    data.write_bytes(bytes(raw))
    local_hub.reset_stats()
    _assert_same_block(load_llm_block(repo_id, layer=2), reference)
    assert local_hub.bytes_sent("/resolve/", method="GET") > 0  # refetched

    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)
    local_hub.reset_stats()
    _assert_same_block(load_llm_block(repo_id, layer=2), reference)
    assert local_hub.bytes_sent("/resolve/", method="GET") > 0
    local_hub.reset_stats()
    load_llm_block(repo_id, layer=2)
    assert local_hub.requests == []


def test_revision_pinning_by_tag_and_commit(local_hub, tiny_llm_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder_a = tiny_llm_dir("llama")
    repo_id, commit_a = _push(local_hub, folder_a, tag="v1")
    # commit B: one tensor of layer 3 changed
    folder_b = tmp_path / "b"
    shutil.copytree(folder_a, folder_b)
    name = f"model.layers.{LAYER}.mlp.up_proj.weight"
    shard = json.loads((folder_a / SAFE_INDEX).read_text())["weight_map"][name]
    tensors = load_file(folder_b / shard)
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, folder_b / shard, metadata={"format": "pt"})
    commit_b = local_hub.add_files(repo_id, {shard: (folder_b / shard).read_bytes()}, tag="v2")

    local_a = load_llm_block(str(folder_a), layer=LAYER)
    local_b = load_llm_block(str(folder_b), layer=LAYER)
    assert local_a.info.sha256 != local_b.info.sha256
    for revision, commit, local in (
        ("v1", commit_a, local_a),
        (commit_b, commit_b, local_b),
        (None, commit_b, local_b),
        (commit_a, commit_a, local_a),
        ("v2", commit_b, local_b),
    ):
        block = load_llm_block(repo_id, layer=LAYER, revision=revision)
        assert block.info.revision == commit, revision
        _assert_same_block(block, local)

    # the tag -> commit mappings survive offline; a revision never resolved online fails clearly
    local_hub.set_offline()
    local_hub.reset_stats()
    _assert_same_block(load_llm_block(repo_id, layer=LAYER, revision="v1"), local_a)
    _assert_same_block(load_llm_block(repo_id, layer=LAYER, revision="v2"), local_b)
    assert local_hub.requests == []
    with pytest.raises(LLMSourceError, match="HF_HUB_OFFLINE=1 forbids downloading"):
        load_llm_block(repo_id, layer=LAYER, revision="v3")


@pytest.mark.fault
def test_offline_after_one_fetch_and_clear_error_without_cache(local_hub, tiny_llm_dir):
    folder = tiny_llm_dir("llama")
    repo_id, commit = _push(local_hub, folder)
    online = load_llm_block(repo_id, layer=2)

    local_hub.set_offline()
    local_hub.reset_stats()
    offline = load_llm_block(repo_id, layer=2)
    _assert_same_block(offline, online)
    assert offline.info.revision == commit and local_hub.requests == []

    with pytest.raises(LayerNotCachedError) as err:  # another layer of the same model: not fetched yet
        load_llm_block(repo_id, layer=1)
    msg = str(err.value)
    assert "model.layers.1.* (9 tensors)" in msg and commit[:12] in msg
    assert "HF_HUB_OFFLINE=1 forbids" in msg and "unset HF_HUB_OFFLINE" in msg
    never, _ = _push(local_hub, folder)
    with pytest.raises(LLMSourceError, match="HF_HUB_OFFLINE=1 forbids downloading it"):
        load_llm_block(never, layer=1)
    assert local_hub.requests == []


def test_server_without_ranges_falls_back_to_the_layer_shards(local_hub, tiny_llm_dir):
    folder = tiny_llm_dir("llama")
    repo_id, _ = _push(local_hub, folder)
    _, per_shard, _ = _layer_layout(folder, LAYER)
    local_hub.ranges_enabled = False
    try:
        block = load_llm_block(repo_id, layer=LAYER)
    finally:
        local_hub.ranges_enabled = True
    _assert_same_block(block, load_llm_block(str(folder), layer=LAYER))
    # one probe (a range request answered 200, abandoned at once), then whole-file downloads of the layer's shards
    probes = [r for r in local_hub.requests_matching(".safetensors", method="GET") if r.range]
    assert len(probes) == 1 and probes[0].status == 200
    for shard in _headers(folder):
        gets = local_hub.requests_matching(shard, method="GET")
        if shard in per_shard:  # whole-file downloads by hf_hub_download
            assert [r.status for r in gets if r.range is None] == [200], shard
        else:
            assert local_hub.bytes_sent(shard, method="GET") == 0, shard
    local_hub.reset_stats()
    _assert_same_block(load_llm_block(repo_id, layer=LAYER), block)  # from the HF cache now
    assert local_hub.requests == []


def test_stale_branch_records_are_checked_again(local_hub, tiny_llm_dir, monkeypatch):
    folder = tiny_llm_dir("llama")
    repo_id, _ = _push(local_hub, folder)
    load_llm_block(repo_id, layer=0)
    monkeypatch.setenv(layer_cache.REF_TTL_ENV, "0")  # always ask the Hub which commit "main" is
    local_hub.reset_stats()
    load_llm_block(repo_id, layer=0)
    heads = local_hub.requests_matching("config.json", method="HEAD")
    assert len(heads) == 1 and local_hub.bytes_sent("safetensors", method="GET") == 0  # layer from the cache


def test_file_backed_server_serves_ranges_and_whole_files(local_hub, tiny_llm_dir):
    """The benchmark's mode: shards served from disk (hub_server's ``file_backed=True``)."""
    from huggingface_hub import snapshot_download

    folder = tiny_llm_dir("llama")
    repo_id = local_hub.new_repo_id("file-backed")
    local_hub.add_files(repo_id, {p.name: p for p in folder.iterdir() if p.is_file()}, file_backed=True)
    blob = local_hub.commit(repo_id).files["model-00001-of-00012.safetensors"]
    assert isinstance(blob.data, hub_server.FileData)
    _assert_same_block(load_llm_block(repo_id, layer=LAYER), load_llm_block(str(folder), layer=LAYER))
    local_hub.reset_stats()
    snap = Path(snapshot_download(repo_id))
    for p in folder.glob("*.safetensors"):
        assert (snap / p.name).read_bytes() == p.read_bytes()
    for p in folder.glob("*.safetensors"):  # each shard served whole, once
        assert local_hub.bytes_sent(p.name, method="GET") == p.stat().st_size


# ---------------------------------------------------------------------------------------------------------------
# pieces


def test_coalesce_ranges_merges_small_gaps_only():
    assert coalesce_ranges([(0, 10), (10, 20)]) == [(0, 20)]
    assert coalesce_ranges([(200, 300), (0, 100), (101, 199)], max_gap=8) == [(0, 300)]
    assert coalesce_ranges([(0, 100), (150, 250)], max_gap=1000) == [(0, 100), (150, 250)]  # 50 > 5% of 200
    assert coalesce_ranges([(0, 1000), (1010, 2000)], max_gap=1000) == [(0, 2000)]
    assert coalesce_ranges([(0, 1000), (1010, 2000)], max_gap=5) == [(0, 1000), (1010, 2000)]
    assert coalesce_ranges([(5, 5), (0, 4)]) == [(0, 4)]


def test_parse_safetensors_header_checks_ranges():
    entry = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": {"format": "pt"}}
    raw = json.dumps(entry).encode()
    header = parse_safetensors_header(raw, size=8 + len(raw) + 8)
    assert header.tensors["w"].start == 8 + len(raw) and header.metadata == {"format": "pt"}
    with pytest.raises(CheckpointError, match="outside the file"):
        parse_safetensors_header(raw, size=8 + len(raw) + 7)
    with pytest.raises(CheckpointError, match="not safetensors"):
        parse_safetensors_header(b"\xff{")


def test_layer_cache_refs(tmp_path):
    cache = LayerCache(tmp_path)
    sha = "ab" * 20
    assert cache.lookup_ref("o/m", sha, max_age=0) == sha  # a commit needs no record
    assert cache.lookup_ref("o/m", "refs/pr/1", max_age=None) is None
    cache.remember_ref("o/m", "refs/pr/1", sha)
    assert cache.lookup_ref("o/m", "refs/pr/1", max_age=60) == sha
    assert cache.lookup_ref("o/m", "refs/pr/1", max_age=-1) is None  # too old: ask the Hub again


def test_progress_bar_follows_the_tty_and_huggingface_hub_switch(monkeypatch):
    import io

    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    import sys

    # HF_HUB_DISABLE_PROGRESS_BARS as read at import (the test must not depend on the caller's environment)
    monkeypatch.setattr(sys.modules["huggingface_hub.utils.tqdm"], "HF_HUB_DISABLE_PROGRESS_BARS", None)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    with http_ranges._progress(10, "org/m layer") as bar:
        assert bar.disable  # not a terminal
    tty = Tty()
    monkeypatch.setattr("sys.stderr", tty)
    with http_ranges._progress(2048, "org/m layer") as bar:
        assert not bar.disable
        bar.update(2048)
    assert "org/m layer" in tty.getvalue() and "2.00k/2.00k" in tty.getvalue()
    monkeypatch.setattr(sys.modules["huggingface_hub.utils.tqdm"], "HF_HUB_DISABLE_PROGRESS_BARS", True)
    with http_ranges._progress(10, "org/m layer") as bar:  # HF_HUB_DISABLE_PROGRESS_BARS=1
        assert bar.disable
    monkeypatch.setattr(sys.modules["huggingface_hub.utils.tqdm"], "HF_HUB_DISABLE_PROGRESS_BARS", None)
    disable_progress_bars()  # huggingface_hub's programmatic switch
    try:
        with http_ranges._progress(10, "org/m layer") as bar:
            assert bar.disable
    finally:
        enable_progress_bars()
