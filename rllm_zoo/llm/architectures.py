"""Build one decoder layer of any transformers causal LM, without its weights.

The whole model is instantiated with its parameters on the ``meta`` device (no
memory, no initialisation cost) and its buffers real, so the layer module, its
qualified name and the model's rotary embedding come from transformers itself.
Only the chosen layer is then filled with real tensors (see ``sources``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .native import NATIVE_FAMILIES

__all__ = [
    "TESTED_FAMILIES",
    "LayerSkeleton",
    "UnsupportedArchitectureError",
    "build_layer_skeleton",
    "normalize_layer_index",
]

#: model_type values whose single-layer loading is checked against transformers in the tests:
#: every family with a pure-torch twin (native.py), and some that run transformers' own layer.
TESTED_FAMILIES: tuple[str, ...] = (*NATIVE_FAMILIES, "phi3", "gpt2", "opt")


class UnsupportedArchitectureError(ValueError):
    """The config does not describe a decoder LLM that transformers can build."""


def _supported_message() -> str:
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        known = len(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    except ImportError:  # pragma: no cover - very old transformers
        known = 0
    return (
        f"rllm_zoo loads one layer of any decoder LLM that transformers' AutoModelForCausalLM can build "
        f"({known} model types in the installed transformers); tested families: {', '.join(TESTED_FAMILIES)}"
    )


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create every ``nn.Parameter`` on the meta device; buffers stay real (and small)."""
    original = nn.Module.register_parameter

    def register_parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            p = module._parameters[name]
            module._parameters[name] = nn.Parameter(p.detach().to("meta"), requires_grad=p.requires_grad)

    nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def normalize_layer_index(layer: int, num_layers: int, what: str = "the model") -> int:
    """Resolve a Python-style layer index, with an error that states the valid range."""
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise TypeError(f"layer must be an int, got {type(layer).__name__}")
    if not -num_layers <= layer < num_layers:
        raise IndexError(
            f"layer {layer} is out of range: {what} has {num_layers} layers "
            f"(valid indices {-num_layers}..{num_layers - 1}; -1 is the last)"
        )
    return layer % num_layers


@dataclass
class LayerSkeleton:
    """A decoder layer with meta parameters, plus what is needed to run it alone."""

    layer: nn.Module
    qualified_name: str  # e.g. "model.layers.29" in the full model's state dict
    rotary: nn.Module | None  # the model's rotary embedding (None when it has none)
    text_config: object
    model_state_keys: list[str]  # every parameter name of the full model (for GGUF name maps)
    model: nn.Module | None = None  # the full meta model, kept only when asked for


def _layer_list(model: nn.Module, num_layers: int) -> tuple[str, nn.ModuleList]:
    candidates = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and len(m) == num_layers and name
    ]
    if not candidates:
        raise UnsupportedArchitectureError(
            f"could not find the list of {num_layers} decoder layers in {type(model).__name__}. "
            + _supported_message()
        )
    # the shortest path is the decoder stack (nested lists belong to sub-blocks)
    return min(candidates, key=lambda c: c[0].count("."))


def _rotary_module(model: nn.Module) -> nn.Module | None:
    for _, m in model.named_modules():
        if type(m).__name__.endswith("RotaryEmbedding"):
            return m
    return None


def build_layer_skeleton(
    config: object,
    layer: int,
    attn_implementation: str = "sdpa",
    keep_model: bool = False,
) -> LayerSkeleton:
    """Instantiate ``config``'s causal LM with meta parameters and return layer ``layer``.

    Args:
        config: a ``transformers.PretrainedConfig`` (multimodal configs use their text part).
        layer: non-negative layer index (see :func:`normalize_layer_index`).
        attn_implementation: ``"sdpa"`` (default) or ``"eager"``; models that soft-cap
            attention logits (Gemma 2) always use eager, which implements the cap.
        keep_model: also return the full meta model (used to build GGUF name maps).
    """
    from transformers import AutoModelForCausalLM

    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text_config, "attn_logit_softcapping", None):
        attn_implementation = "eager"
    try:
        with parameters_on_meta():
            try:
                model = AutoModelForCausalLM.from_config(text_config, attn_implementation=attn_implementation)
            except (ValueError, ImportError) as e:
                if "attn" not in str(e).lower() and "attention" not in str(e).lower():
                    raise
                model = AutoModelForCausalLM.from_config(text_config, attn_implementation="eager")
    except (ValueError, KeyError) as e:
        mt = getattr(text_config, "model_type", "?")
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedArchitectureError(
            f"model type {mt!r} is not a decoder LLM ({first}). {_supported_message()}"
        ) from e
    num_layers = int(text_config.num_hidden_layers)
    list_name, layers = _layer_list(model, num_layers)
    rotary = _rotary_module(model)
    keys = list(model.state_dict().keys())
    return LayerSkeleton(
        layer=layers[layer],
        qualified_name=f"{list_name}.{layer}",
        rotary=rotary,
        text_config=text_config,
        model_state_keys=keys,
        model=model if keep_model else None,
    )


def meta_parameters(module: nn.Module) -> list[str]:
    """Names of parameters and buffers still on the meta device."""
    names = [n for n, p in module.named_parameters() if p.device.type == "meta"]
    names += [n for n, b in module.named_buffers() if b.device.type == "meta"]
    return names


def to_meta_free_dtype(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """Cast floating tensors to ``dtype`` (``None`` keeps the stored dtype); always a fresh copy."""
    if dtype is not None and t.is_floating_point():
        return t.to(dtype=dtype, copy=True)
    return t.clone()
