"""What a published boosted model stores: full or delta weights, and the LLM reference.

* **full**: every tensor, the frozen LLM block included; the block is rebuilt from the recorded
  LLM config, so loading reads nothing but the repo.
* **delta**: the trainable tensors only (ViT, adapters, head) plus a reference to the LLM layer
  (source, revision, layer, sha256, licence); loading re-reads that single layer from its
  source and refuses it unless it hashes to the recorded sha256.

``"auto"`` picks full when the LLM's licence allows redistribution (or there is no LLM
weight to redistribute: a random block, the mlp control, the baseline) and delta otherwise.

Example:
    >>> resolve_weights_mode("auto", {"source": "meta-llama/Llama-2-7b-hf", "license": "llama2"})
    'delta'
    >>> resolve_weights_mode("auto", {"source": "smollm2", "license": "apache-2.0"})
    'full'
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from ..llm import may_redistribute
from ..llm.sources import portable_source

__all__ = [
    "WEIGHT_MODES",
    "block_of",
    "booster_of",
    "frozen_block_names",
    "llm_reference",
    "resolve_weights_mode",
    "weights_for",
]

WeightMode = Literal["auto", "full", "delta"]
WEIGHT_MODES = ("auto", "full", "delta")

#: Hub ids of the LLMs behind rllm_zoo's aliases (for model cards' ``base_model``).
ALIAS_HUB_IDS = {
    "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def booster_of(model: nn.Module) -> nn.Module | None:
    """The model's booster wherever it sits (``model.booster`` first, else the first ``LLMBooster``)."""
    from ..plug import find_booster

    found = find_booster(model)
    return found[1] if found is not None else None


def block_of(model: nn.Module) -> nn.Module | None:
    """The model's LLM block (``model.booster.block``), or ``None`` (baseline, mlp control)."""
    booster = booster_of(model)
    return getattr(booster, "block", None) if booster is not None else None


def frozen_block_names(model: nn.Module) -> set[str]:
    """State-dict names of the LLM block's tensors (what a delta checkpoint leaves out).

    The block's prefix is found by module type (``booster.block.`` for every rllm_zoo model and
    every :func:`rllm_zoo.boost`-ed backbone; ``<path>.booster.block.`` for a boosted model nested
    in another module).
    """
    from ..plug import find_booster

    found = find_booster(model)
    if found is None or getattr(found[1], "block", None) is None:
        return set()
    prefix = f"{found[0]}.block."
    return {k for k in model.state_dict() if k.startswith(prefix)}


def llm_reference(model: nn.Module) -> dict[str, Any] | None:
    """Where the model's LLM layer comes from: source, layer, revision, sha256, licence, architecture.

    ``None`` for models without an LLM block. For the mlp control the adapters' width is recorded.
    The source is portable (:func:`~rllm_zoo.llm.sources.portable_source`): a local file or folder
    is recorded by its base name only, with ``local_file`` set, never by its path on this machine.

    Example:
        >>> model = timm.create_model("rllm_vit_micro_patch4_28", llm="/data/llms/my-llama")  # doctest: +SKIP
        >>> ref = llm_reference(model)                                                       # doctest: +SKIP
        >>> ref["source"], ref["local_file"], ref["hub_id"]                                  # doctest: +SKIP
        ('my-llama', True, None)
    """
    booster = booster_of(model)
    if booster is None:
        return None
    block = block_of(model)
    if block is None:
        return {"source": None, "variant": booster.variant, "width": int(booster.adapter_in.out_features)}
    info = block.info
    source, local = portable_source(info.source)
    random = source.startswith("random")
    return {
        "source": source,
        "local_file": local,
        "hub_id": None
        if random or local
        else ALIAS_HUB_IDS.get(source, source if _looks_like_hub_id(source) else None),
        "layer": info.layer,
        "num_layers": info.num_layers,
        "revision": info.revision,
        "sha256": info.sha256,
        "license": info.license,
        "architecture": info.architecture,
        "width": info.width,
        "random_init": random,
        "variant": booster.variant,
    }


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not source.startswith((".", "/", "~"))
        and not source.endswith(".gguf")
    )


def resolve_weights_mode(mode: str, reference: dict[str, Any] | None) -> Literal["full", "delta"]:
    """``"full"`` or ``"delta"`` for ``mode`` (``"auto"`` decides from the LLM's licence)."""
    if mode not in WEIGHT_MODES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode  # type: ignore[return-value]
    if reference is None or reference.get("source") is None or reference.get("random_init"):
        return "full"  # nothing of the LLM's weights is shipped
    return "full" if may_redistribute(reference.get("license")) else "delta"


def weights_for(model: nn.Module, mode: Literal["full", "delta"]) -> dict[str, torch.Tensor]:
    """The tensors a repo of ``mode`` stores (contiguous CPU copies, shared storage broken)."""
    skip = frozen_block_names(model) if mode == "delta" else set()
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items() if k not in skip}


def rebuild_args(model: nn.Module, mode: Literal["full", "delta"]) -> dict[str, Any]:
    """Constructor keyword arguments that pin the booster's LLM block for ``mode``.

    Delta repos re-read the layer and check its sha256; full repos rebuild the block from its
    config (``llm_config``) and read nothing of the LLM. ``llm`` is the portable source of
    :func:`llm_reference` (a local file or folder by its base name only).

    Example:
        >>> rebuild_args(model, "delta")                                         # doctest: +SKIP
        {'llm': 'my-llama', 'llm_layer': 3, 'llm_revision': None, 'llm_sha256': '9f2c...'}
    """
    ref = llm_reference(model)
    if ref is None:
        return {}
    if ref["source"] is None:  # mlp control: only the adapters' width matters
        return {"llm_width": ref["width"]}
    args: dict[str, Any] = {
        "llm": ref["source"],
        "llm_layer": ref["layer"],
        "llm_revision": ref["revision"],
        "llm_sha256": ref["sha256"],
    }
    if mode == "full":
        config = block_of(model).config.to_dict()
        # transformers records where the config was read from (a path of this machine): not needed
        config.pop("_name_or_path", None)
        args["llm_config"] = config
        args["llm_license"] = ref["license"]
    return args
