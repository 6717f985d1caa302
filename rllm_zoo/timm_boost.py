"""``r_llm_boost``: any supported timm model, boosted, through one registered timm architecture.

``import rllm_zoo`` registers ``r_llm_boost`` in timm. It builds the timm model ``base`` (with
its own keyword arguments, and its own pretrained weights when ``base_pretrained=True``), then
puts the booster in with :func:`rllm_zoo.boost` (booster arguments as in the zoo's models:
``llm``, ``llm_layer``, ``booster``, ``freeze_llm``, ``llm_post_norm``... and ``boost_at``)::

    >>> import timm, torch, rllm_zoo
    >>> model = timm.create_model("r_llm_boost", base="resnet18", num_classes=4, llm="random:smollm2")
    >>> type(model).__name__, model.boost_site.name, model.pretrained_cfg["architecture"]
    ('ResNet', 'layer4', 'r_llm_boost')
    >>> model(torch.rand(1, 3, 64, 64)).shape
    torch.Size([1, 4])
    >>> vit = timm.create_model("r_llm_boost", base="deit_tiny_patch16_224",   # doctest: +SKIP
    ...                         base_pretrained=True, num_classes=5)          # DeiT's ImageNet weights

The model is the base model itself (a ``ResNet``, a ``VisionTransformer``...), with
``model.booster`` and ``model.booster_args`` added, so every timm API keeps working.
``rllm_zoo.save_pretrained`` / ``push_to_hub`` record ``architecture: r_llm_boost`` and
``model_args`` (``base``, the base's arguments, the booster's and the LLM layer's sha256), so
``timm.create_model("hf-hub:<repo>", pretrained=True)`` rebuilds it, full or delta weights alike.
``pretrained=True`` on ``r_llm_boost`` itself loads such a *boosted* checkpoint (``hf-hub:`` /
``local-dir:`` / ``pretrained_cfg_overlay=dict(file=...)``); the base's own weights are
``base_pretrained``.

The name is ``r_llm_boost``, not ``rllm_*``: ``timm.list_models("rllm_*")`` is the zoo's own ViT
family, every member of which builds without arguments.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._builder import resolve_pretrained_cfg
from torch import nn

from .llm import DEFAULT_LLM
from .plug import BOOST_KWARGS, boost_with_args, find_booster

__all__ = ["ARCHITECTURE", "as_boosted_cfg", "r_llm_boost"]

#: The registered timm architecture name.
ARCHITECTURE = "r_llm_boost"
_WEIGHT_FILES = (".safetensors", ".pth", ".pt", ".bin", ".npz")
_SOURCES = ("hf_hub_id", "hf_hub_filename", "url", "file", "state_dict", "source", "tag")

default_cfgs = generate_default_cfgs(
    {
        f"{ARCHITECTURE}.untrained": {
            "num_classes": 1000,
            "input_size": (3, 224, 224),
            "license": "apache-2.0",
            "paper_ids": "arXiv:2403.17343",
            "paper_name": "Residual-based Language Models are Free Boosters for Biomedical Imaging",
            "notes": ("any supported timm model (base=...) boosted by one frozen LLM block",),
        }
    }
)


def as_boosted_cfg(cfg: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """The base's pretrained config as that of the boosted model: ``architecture: r_llm_boost``.

    The data config (mean, std, interpolation, crop) is the base's; weight sources are dropped
    (they load the base, not the boosted model); ``input_size`` is the model's current one.
    """
    from timm.models._input import get_model_input_config

    out = {k: v for k, v in dict(cfg).items() if k not in _SOURCES}
    out["architecture"] = ARCHITECTURE
    current = get_model_input_config(model)
    if current["fixed_input_size"] or out.get("input_size") is None:
        out["input_size"] = tuple(current["input_size"])
    else:
        out["input_size"] = (current["input_size"][0], *tuple(out["input_size"])[1:])
    return out


def _base_name(base: Any) -> str:
    import timm
    from timm.models import split_model_name_tag

    if not isinstance(base, str) or not base:
        raise ValueError(
            f"{ARCHITECTURE} needs base='<timm model name>', e.g. base='deit_tiny_patch16_224', got {base!r}"
        )
    name = split_model_name_tag(base)[0]
    if name == ARCHITECTURE or name.startswith("rllm_"):
        raise ValueError(f"base={base!r} is boosted already; pass a plain timm model name")
    if not timm.is_model(name):
        raise ValueError(f"base={base!r} is not a timm model name (see timm.list_models())")
    return name


def _build(
    *,
    base: str,
    base_pretrained: bool | str,
    base_overlay: dict[str, Any] | None,
    boost_args: dict[str, Any],
    cache_dir: Any,
    feature_cfg: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """The base model (its own weights if asked), boosted.

    ``feature_cfg``: the ``features_only`` config timm applies after this returns; its
    ``out_indices`` becomes the base family's default (the last 3 blocks of a token model, as timm's
    ViTs; every stage of a CNN).
    """
    import timm

    overlay = dict(base_overlay or {})
    if isinstance(base_pretrained, str):
        if not base_pretrained.endswith(_WEIGHT_FILES):
            raise ValueError(
                f"base_pretrained={base_pretrained!r}: pass True (the base's own pretrained tag) or the path "
                f"of a weights file ({', '.join(_WEIGHT_FILES)})"
            )
        overlay["file"] = base_pretrained
    model = timm.create_model(
        base,
        pretrained=bool(base_pretrained),
        pretrained_cfg_overlay=overlay or None,
        cache_dir=cache_dir,
        **kwargs,
    )
    model = boost_with_args(model, boost_args)
    if feature_cfg is not None and hasattr(model, "feature_info"):
        from .plug import family_of

        levels = len(model.feature_info)
        feature_cfg["out_indices"] = (
            min(3, levels) if family_of(model) == "timm token model" else tuple(range(levels))
        )
    return model


def _filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A boosted checkpoint, fitted to ``model``.

    A *delta* checkpoint lacks the frozen LLM block: its tensors are taken from the block the
    model holds (read from its source and checked against ``llm_sha256`` when it was built). The
    backbone's tensors go through the base's own timm filter (position-embedding resampling...)
    only when they do not fit as they are.
    """
    found = find_booster(model)
    prefix = f"{found[0]}." if found is not None else "booster."
    block = getattr(found[1], "block", None) if found is not None else None
    own = model.state_dict()
    if block is not None and not any(k.startswith(prefix + "block.") for k in state_dict):
        if block.info.extra.get("rebuilt_from_config"):
            raise ValueError(
                "this checkpoint holds no LLM block weights (delta) but the model was built with llm_config, "
                "which expects them in the checkpoint; drop llm_config so the block is read from its source"
            )
        state_dict = {**state_dict, **{k: v for k, v in own.items() if k.startswith(prefix + "block.")}}
    boosted = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
    rest = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
    if any(k not in own or own[k].shape != v.shape for k, v in rest.items()):
        base_filter = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        if callable(base_filter):
            rest = base_filter(rest, model)
    return {**rest, **boosted}


@register_model
def r_llm_boost(
    pretrained: bool = False,
    *,
    base: str | None = None,
    base_pretrained: bool | str = False,
    base_pretrained_cfg_overlay: dict[str, Any] | None = None,
    llm: str | None = DEFAULT_LLM,
    booster: str | bool = "residual",
    pretrained_cfg: Any = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    cache_dir: Any = None,
    **kwargs: Any,
) -> nn.Module:
    """Any supported timm model ``base`` boosted by one frozen LLM block (default: SmolLM2 layer -1).

    Args:
        pretrained: load a *boosted* checkpoint (from ``hf-hub:`` / ``local-dir:`` or
            ``pretrained_cfg_overlay=dict(file=...)``), full or delta.
        base: the timm model to boost (``"deit_tiny_patch16_224"``, ``"resnet18"``...), optionally
            with a pretrained tag.
        base_pretrained: ``True`` loads the base's own pretrained weights through timm (its default
            tag, or the tag in ``base``); a path loads that weights file into the base (its
            classifier only if ``base_pretrained_cfg_overlay`` says it has ``num_classes`` classes:
            timm drops a classifier of another size).
        base_pretrained_cfg_overlay: ``pretrained_cfg_overlay`` for the base (e.g.
            ``dict(file=...)`` with ``base_pretrained=True``).
        llm, booster: the booster (as in the zoo's models); ``booster=False`` gives the base as is.
        **kwargs: the base's own arguments (``num_classes``, ``in_chans``, ``img_size``, ``depth``...)
            and the other booster arguments (``llm_layer``, ``freeze_llm``, ``llm_post_norm``,
            ``llm_revision``, ``llm_sha256``, ``llm_config``, ``llm_width``, ``llm_license``,
            ``boost_at``).
    """
    name = _base_name(base)
    boost_args = {"llm": llm, "booster": booster}
    boost_args.update({k: kwargs.pop(k) for k in list(kwargs) if k in BOOST_KWARGS})
    if pretrained_cfg is None or isinstance(pretrained_cfg, str):
        # the base's data config (mean, std, input size...), as the boosted model's
        tagged = base if pretrained_cfg is None else f"{name}.{pretrained_cfg}"
        from timm.models import split_model_name_tag

        cfg = resolve_pretrained_cfg(name, pretrained_cfg=split_model_name_tag(tagged)[1] or None).to_dict()
        cfg = {k: v for k, v in cfg.items() if k not in _SOURCES}
        cfg["architecture"] = ARCHITECTURE
    else:
        cfg = dict(pretrained_cfg) if isinstance(pretrained_cfg, dict) else pretrained_cfg.to_dict()
    if pretrained:
        probe = resolve_pretrained_cfg(
            ARCHITECTURE, pretrained_cfg=cfg, pretrained_cfg_overlay=pretrained_cfg_overlay
        )
        if not any((probe.hf_hub_id, probe.url, probe.file, probe.state_dict)):
            raise RuntimeError(
                f"{ARCHITECTURE}: pretrained=True loads a boosted checkpoint (timm.create_model('hf-hub:<repo>' or "
                "'local-dir:<folder>', pretrained=True), or pretrained_cfg_overlay=dict(file=...)); for the base "
                "model's own weights pass base_pretrained=True"
            )
    feature_cfg = None
    if kwargs.get("features_only"):
        feature_cfg = {"feature_cls": "getter"}  # keeps the whole model, booster included
    model = build_model_with_cfg(
        partial(
            _build,
            base=base,
            base_pretrained=base_pretrained,
            base_overlay=base_pretrained_cfg_overlay,
            boost_args=boost_args,
            cache_dir=cache_dir,
            # the base's own default feature levels, set once it is built (timm's default is 5 levels)
            feature_cfg=feature_cfg if "out_indices" not in kwargs else None,
        ),
        ARCHITECTURE,
        pretrained,
        pretrained_cfg=cfg,
        pretrained_cfg_overlay=pretrained_cfg_overlay,
        pretrained_filter_fn=_filter_fn,
        feature_cfg=feature_cfg,
        cache_dir=cache_dir,
        **kwargs,
    )
    # the input size the model was built for (timm keeps the base's nominal one)
    inner = model.model if kwargs.get("features_only") and hasattr(model, "model") else model
    model.pretrained_cfg = model.default_cfg = {
        **model.pretrained_cfg,
        "input_size": as_boosted_cfg(model.pretrained_cfg, inner)["input_size"],
    }
    return model
