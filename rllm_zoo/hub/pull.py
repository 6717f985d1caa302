"""Load a published boosted model from the Hub (timm repo or MONAI bundle), safely.

Only safetensors are read for 2D weights; a bundle's ``models/model.pt`` is read with
``torch.load(weights_only=True)``. A repo that only offers pickle checkpoints is refused.
After one successful pull, ``HF_HUB_OFFLINE=1`` loads from the Hugging Face cache.

Example:
    >>> model = rllm_zoo.load_from_hub("rllm-zoo/rllm_vit_micro_patch4_28.retinamnist_r_llm")  # doctest: +SKIP
    >>> net = rllm_zoo.load_from_hub("me/adrenal-r-llm", revision="0.1.0")    # a MONAI bundle  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .errors import HubError, hub_errors, remove_partial_downloads

__all__ = ["PICKLE_SUFFIXES", "load_from_folder", "load_from_hub"]

#: Checkpoint formats that can execute code when unpickled: never loaded from a pulled repo.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


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
        import timm

        from .. import timm_vit  # noqa: F401  (registers the rllm_* architectures)

        return timm.create_model(f"local-dir:{folder}", pretrained=True)
    raise HubError(
        f"{folder} is neither a timm folder (config.json + model.safetensors) nor a MONAI bundle "
        "(configs/metadata.json); write one with rllm_zoo.hub.save_pretrained or `rllm-zoo package`"
    )


def load_from_hub(repo_id: str, *, revision: str | None = None, token: str | None = None) -> nn.Module:
    """Download (or reuse from cache) and build a boosted model published with rllm_zoo.

    Args:
        repo_id: ``"org/name"`` (``"org/name@revision"`` also works).
        revision: branch, tag or commit (default ``main``).
        token: Hub token for private repos.

    Raises:
        HubError: the repo, revision or a file is missing, the Hub failed or timed out, the repo
            is not an rllm_zoo model, or it only holds pickle checkpoints. Nothing partial is
            left in the cache.
        LLMChecksumError: a delta repo's LLM layer no longer hashes to the recorded sha256.
    """
    from huggingface_hub import snapshot_download

    if "@" in repo_id and revision is None:
        repo_id, revision = repo_id.split("@", 1)
    try:
        with hub_errors(repo_id, "downloading", revision):
            folder = Path(
                snapshot_download(
                    repo_id,
                    revision=revision,
                    token=token,
                    allow_patterns=[
                        "*.json",
                        "*.safetensors",
                        "*.md",
                        "configs/*",
                        "models/model.pt",
                        "LICENSE",
                    ],
                )
            )
    except BaseException:
        remove_partial_downloads(repo_id)
        raise
    if (folder / "configs" / "metadata.json").is_file():
        return _load_bundle(folder, repo_id)
    if not (folder / "config.json").is_file():
        raise HubError(
            f"{repo_id}: no config.json or configs/metadata.json; it is not a timm model or MONAI bundle "
            "published with rllm_zoo"
        )
    if not (folder / "model.safetensors").is_file():
        from huggingface_hub import list_repo_files

        try:
            files = list_repo_files(repo_id, revision=revision, token=token)
        except Exception:  # offline: what is cached is what we know
            files = [p.name for p in folder.iterdir()]
        _refuse_pickle_only(files, repo_id)
    import timm

    from .. import timm_vit  # noqa: F401  (registers the rllm_* architectures)

    name = f"hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
    with hub_errors(repo_id, "loading", revision):
        return timm.create_model(name, pretrained=True)


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
        raise HubError(
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
