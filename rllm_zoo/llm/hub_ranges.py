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

A server that does not answer ranges (no ``206``) makes it fall back to downloading the whole shards
that hold the layer (``fetch``), into the Hugging Face cache.

The parts have their own modules: :mod:`rllm_zoo.llm.safetensors_header` (headers, range planning),
:mod:`rllm_zoo.llm.http_ranges` (the range requests: one commit, retries, response checks) and
:mod:`rllm_zoo.llm.layer_cache` (the cache of fetched layers and commit metadata). Their public names
are re-exported here.

Usage (normally through :func:`rllm_zoo.load_llm_block`, which does all of this for ``"org/model"``)::

    from rllm_zoo.llm.hub_ranges import open_hub_model

    model = open_hub_model("huggyllama/llama-7b", revision="main")
    print(model.commit, model.folder / "config.json")
    names = [n for n in model.checkpoint.keys() if n.startswith("model.layers.31.")]
    tensors = model.checkpoint.read(names)  # ~0.4 GB over the network the first time, nothing later
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import SAFE_INDEX, SAFE_SINGLE, CheckpointError, SafetensorsCheckpoint, _read_index
from .http_ranges import (
    DEFAULT_RETRY,
    HubFetchError,
    RangesNotSupportedError,
    RetryPolicy,
    _progress,
    _RemoteFile,
)
from .layer_cache import _COMMIT_RE, LayerCache, _EntryWriter, _LayerEntry
from .safetensors_header import (
    SafetensorsHeader,
    TensorSlice,
    _read_local_header,
    coalesce_ranges,
    parse_safetensors_header,
)

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

#: ``fetch(filename, revision) -> local path``: downloads one whole file of the repo (the fallback).
FetchFn = Callable[[str, str], Path]


class LayerNotCachedError(CheckpointError):
    """``HF_HUB_OFFLINE=1`` and the wanted tensors are in neither rllm_zoo's layer cache nor the HF cache."""


def _describe(names: list[str]) -> str:
    """``model.layers.3.* (9 tensors)``: a short name for a set of tensors."""
    if not names:
        return "no tensors"
    lo, hi = min(names), max(names)  # the common prefix of all names is that of these two
    n = next((i for i, (a, b) in enumerate(zip(lo, hi)) if a != b), min(len(lo), len(hi)))
    prefix = lo[:n]
    prefix = prefix[: prefix.rfind(".") + 1] if "." in prefix else prefix
    return f"{prefix}* ({len(names)} tensors)" if len(names) > 1 else names[0]


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

    Without any request when the layer cache knows the revision (see :mod:`rllm_zoo.llm.layer_cache`);
    otherwise ``config.json`` and ``model.safetensors.index.json`` are fetched through ``fetch``
    (default: ``hf_hub_download``, which resolves the revision) and recorded in the layer cache.

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
