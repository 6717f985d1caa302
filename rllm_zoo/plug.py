"""Plug-and-play: put an R-LLM booster into an existing timm or MONAI backbone.

:func:`boost` inserts one :class:`~rllm_zoo.booster.LLMBooster` (a frozen LLM layer between two
trainable adapters) into a model **in place** and returns the same model. The booster is
registered as ``model.booster`` (state-dict keys ``booster.*``, as in the zoo's own models; the
backbone's keys are untouched, so its checkpoints still load) and runs on the output of one
module, the *site*, through a forward hook (:class:`BoosterHook`): every code path that calls
that module (``forward``, timm's ``forward_features`` / ``forward_intermediates``, gradient
checkpointing, MONAI's decoders) sees the boosted output.

Default site: after the last block that produces tokens, before the final norm (the paper's
place). Known families:

* token models ``(B, N, C)``: timm ``VisionTransformer`` and relatives (ViT, DeiT, DeiT-III,
  EVA-02, BEiT, DINOv2 with registers, CaiT...), MONAI ``ViT`` and the ViT encoder of
  ``UNETR``, and rllm_zoo's own networks;
* feature-map models ``(B, C, *spatial)``: the last stage of timm CNNs (ResNet, ConvNeXt,
  EfficientNet, MobileNetV3, RegNet, ResNetV2, GhostNet) and the bottleneck of MONAI
  ``SwinUNETR`` (its last Swin stage) and ``BasicUNet`` (``down_4``): the map is flattened to
  tokens, boosted and folded back.

``at=`` picks another site: an index into the family's sites (:func:`boost_sites`, e.g. the
blocks of a ViT or the stages of a CNN) or any module name (``layout=`` / ``dim=`` when they
cannot be inferred). Anything else gets a one-line ``ValueError``.

Example:
    >>> import timm, torch, rllm_zoo
    >>> model = timm.create_model("resnet18", num_classes=3)
    >>> model = rllm_zoo.boost(model, llm="random:smollm2")      # a random-init SmolLM2 layer
    >>> model.boost_site
    BoostSite(name='layer4', dim=512, layout='channels_first')
    >>> model(torch.rand(1, 3, 64, 64)).shape
    torch.Size([1, 3])
    >>> sorted({k.split(".")[1] for k in model.state_dict() if k.startswith("booster.")})
    ['adapter_in', 'adapter_out', 'block']
    >>> frozen = rllm_zoo.booster.frozen_state_names(model)  # the frozen block: buffers, not parameters
    >>> len(frozen) > 0 and not frozen & {n for n, _ in model.named_parameters()}
    True
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .booster import VARIANTS, LLMBooster
from .llm import DEFAULT_LLM, load_llm_block, referenced_block

__all__ = [
    "BOOST_KWARGS",
    "LAYOUTS",
    "BoostSite",
    "BoosterHook",
    "attach_booster",
    "boost",
    "boost_sites",
    "boost_with_args",
    "booster_hooks",
    "family_of",
    "find_booster",
    "make_booster",
    "prune_with_booster",
    "remove_booster_hooks",
    "resolve_site",
]

#: How a site's output is laid out: tokens ``(B, N, C)``, feature maps ``(B, C, *spatial)``
#: (``channels_first``) or ``(B, *spatial, C)`` (``channels_last``, e.g. timm Swin stages).
LAYOUTS: tuple[str, ...] = ("tokens", "channels_first", "channels_last")

#: The booster keyword arguments of the factories (timm ``r_llm_boost``, MONAI ``create_network``),
#: as the zoo's models name them, and the :func:`boost` parameter each one sets.
BOOST_KWARGS: dict[str, str] = {
    "llm": "llm",
    "llm_layer": "layer",
    "booster": "variant",
    "freeze_llm": "freeze",
    "llm_post_norm": "post_norm",
    "llm_revision": "revision",
    "llm_sha256": "sha256",
    "llm_config": "llm_config",
    "llm_width": "llm_width",
    "llm_license": "llm_license",
    "boost_at": "at",
}


@dataclass(frozen=True)
class BoostSite:
    """Where a booster runs: the module ``name`` whose output it transforms, its width and layout."""

    name: str
    dim: int
    layout: str


@dataclass(frozen=True)
class _Family:
    label: str
    classes: tuple[tuple[str, str], ...]  # (module, class name) anywhere in the model's MRO
    sites: Callable[[nn.Module], list[BoostSite]]
    test: Callable[[nn.Module], bool] | None = None


# ------------------------------------------------------------------ the families and their sites


def _mro(model: nn.Module) -> set[tuple[str, str]]:
    return {(c.__module__, c.__name__) for c in type(model).__mro__}


def _is_timm_token_model(model: nn.Module) -> bool:
    """A timm model whose blocks carry ``(B, N, C)`` tokens: a flattening patch embed and ``blocks``."""
    if not any(mod.startswith("timm.") for mod, _ in _mro(model)):
        return False
    blocks = getattr(model, "blocks", None)
    return (
        isinstance(blocks, nn.Sequential | nn.ModuleList)
        and len(blocks) > 0
        and getattr(getattr(model, "patch_embed", None), "flatten", False) is True
        and isinstance(getattr(model, "embed_dim", None), int)
    )


def _token_sites(prefix: str, blocks: Sequence[nn.Module], dim: int) -> list[BoostSite]:
    return [BoostSite(f"{prefix}.{i}", int(dim), "tokens") for i in range(len(blocks))]


def _timm_token_sites(model: nn.Module) -> list[BoostSite]:
    return _token_sites("blocks", model.blocks, model.embed_dim)


def _timm_cnn_sites(model: nn.Module) -> list[BoostSite]:
    info = model.feature_info
    entries = info.info if hasattr(info, "info") else info
    return [BoostSite(str(e["module"]), int(e["num_chs"]), "channels_first") for e in entries]


def _out_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    return int(convs[-1].out_channels)


def _monai_vit_sites(model: nn.Module) -> list[BoostSite]:
    return _token_sites("blocks", model.blocks, model.norm.normalized_shape[-1])


def _unetr_sites(model: nn.Module) -> list[BoostSite]:
    return _token_sites("vit.blocks", model.vit.blocks, model.vit.norm.normalized_shape[-1])


def _swin_unetr_sites(model: nn.Module) -> list[BoostSite]:
    # layers{i} ends with a patch merging that doubles the width: stage i outputs embed_dim * 2**i
    width = int(model.swinViT.embed_dim)
    return [BoostSite(f"swinViT.layers{i}.0", width * 2**i, "channels_first") for i in range(1, 5)]


def _basic_unet_sites(model: nn.Module) -> list[BoostSite]:
    return [
        BoostSite(f"down_{i}", _out_channels(getattr(model, f"down_{i}")), "channels_first")
        for i in range(1, 5)
    ]


def _zoo_vit_sites(model: nn.Module) -> list[BoostSite]:
    return _token_sites("blocks", model.blocks, model.hidden_size)


def _zoo_vivit_sites(model: nn.Module) -> list[BoostSite]:
    return _token_sites("temporal_blocks", model.temporal_blocks, model.hidden_size)


_FAMILIES: tuple[_Family, ...] = (
    _Family("rllm_zoo.monai BoostedViT", (("rllm_zoo.monai.vit", "BoostedViT"),), _zoo_vit_sites),
    _Family("rllm_zoo.monai BoostedViViT", (("rllm_zoo.monai.vivit", "BoostedViViT"),), _zoo_vivit_sites),
    _Family(
        "timm token model",
        (
            ("timm.models.vision_transformer", "VisionTransformer"),  # ViT, DeiT, DeiT-III, DINOv2, the zoo's
            ("timm.models.eva", "Eva"),
            ("timm.models.beit", "Beit"),
            ("timm.models.cait", "Cait"),
            ("timm.models.vision_transformer_relpos", "VisionTransformerRelPos"),
            ("timm.models.xcit", "Xcit"),
        ),
        _timm_token_sites,
        _is_timm_token_model,  # and other timm models of that shape
    ),
    _Family(
        "timm CNN",
        (
            ("timm.models.resnet", "ResNet"),
            ("timm.models.convnext", "ConvNeXt"),
            ("timm.models.efficientnet", "EfficientNet"),
            ("timm.models.mobilenetv3", "MobileNetV3"),
            ("timm.models.regnet", "RegNet"),
            ("timm.models.resnetv2", "ResNetV2"),
            ("timm.models.ghostnet", "GhostNet"),
        ),
        _timm_cnn_sites,
    ),
    _Family("MONAI UNETR", (("monai.networks.nets.unetr", "UNETR"),), _unetr_sites),
    _Family("MONAI ViT", (("monai.networks.nets.vit", "ViT"),), _monai_vit_sites),
    _Family("MONAI SwinUNETR", (("monai.networks.nets.swin_unetr", "SwinUNETR"),), _swin_unetr_sites),
    _Family("MONAI BasicUNet", (("monai.networks.nets.basic_unet", "BasicUNet"),), _basic_unet_sites),
)

_SUPPORTED = (
    "timm token models (ViT, DeiT, DeiT-III, EVA-02, BEiT, DINOv2, CaiT...), timm CNNs (ResNet, ConvNeXt, "
    "EfficientNet, MobileNetV3, RegNet, ResNetV2, GhostNet), MONAI ViT, UNETR, SwinUNETR, BasicUNet and "
    "rllm_zoo's own networks"
)


def family_of(model: nn.Module) -> str | None:
    """The name of the known family ``model`` belongs to, or ``None``.

    Example:
        >>> import timm
        >>> family_of(timm.create_model("deit_tiny_patch16_224", depth=1)), family_of(torch.nn.Linear(2, 2))
        ('timm token model', None)
    """
    fam = _family(model)
    return fam.label if fam is not None else None


def _family(model: nn.Module) -> _Family | None:
    mro = _mro(model)
    for fam in _FAMILIES:
        if (fam.test is not None and fam.test(model)) or set(fam.classes) & mro:
            return fam
    return None


def boost_sites(model: nn.Module) -> list[BoostSite]:
    """The sites ``at=<int>`` indexes for a known family (the last one is the default).

    Blocks of a token model, stages of a CNN (timm's ``feature_info``), the Swin stages of
    SwinUNETR, the down-sampling stages of BasicUNet.

    Example:
        >>> import timm
        >>> [s.name for s in boost_sites(timm.create_model("resnet18"))]
        ['act1', 'layer1', 'layer2', 'layer3', 'layer4']
    """
    fam = _family(model)
    if fam is None:
        raise ValueError(_unsupported(model))
    return fam.sites(model)


def _unsupported(model: nn.Module) -> str:
    cls = type(model)
    return (
        f"rllm_zoo.boost does not know where to put the booster in {cls.__name__} ({cls.__module__}); it "
        f"supports {_SUPPORTED}; for another model, name the module to boost with at='<module name>' (and "
        "give layout= / dim= if they cannot be inferred)"
    )


def _infer(module: nn.Module) -> tuple[str | None, int | None]:
    """(layout, width) of a module's output, from its last width-bearing layer (a best guess)."""
    for m in reversed(list(module.modules())):
        if isinstance(m, nn.Linear):
            return "tokens", int(m.out_features)
        if isinstance(m, nn.LayerNorm):
            return "tokens", int(m.normalized_shape[-1])
        if isinstance(m, nn.modules.conv._ConvNd):
            return "channels_first", int(m.out_channels)
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.num_features:
            return "channels_first", int(m.num_features)
        if isinstance(m, nn.GroupNorm):
            return "channels_first", int(m.num_channels)
    return None, None


def resolve_site(
    model: nn.Module,
    at: int | str | None = None,
    *,
    layout: str | None = None,
    dim: int | None = None,
) -> BoostSite:
    """The :class:`BoostSite` that ``at`` names in ``model`` (see :func:`boost`); ``layout`` / ``dim`` override.

    Example:
        >>> import timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", depth=4)
        >>> resolve_site(vit), resolve_site(vit, at=1).name
        (BoostSite(name='blocks.3', dim=192, layout='tokens'), 'blocks.1')
        >>> resolve_site(vit, at="blocks.2.mlp")
        BoostSite(name='blocks.2.mlp', dim=192, layout='tokens')
    """
    return _resolve_site(model, at, layout=layout, dim=dim)


def _resolve_site(
    model: nn.Module,
    at: int | str | None,
    *,
    layout: str | None = None,
    dim: int | None = None,
    fallback_dim: int | None = None,
) -> BoostSite:
    """:func:`resolve_site`; ``fallback_dim``: the width when ``at`` names a module whose width is unknown."""
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not one of {', '.join(LAYOUTS)}")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0):
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    fam = _family(model)
    if at is None or (isinstance(at, int) and not isinstance(at, bool)):
        if fam is None:
            raise ValueError(_unsupported(model))
        sites = fam.sites(model)
        index = -1 if at is None else at
        if not -len(sites) <= index < len(sites):
            raise ValueError(
                f"at={at} is out of range: {type(model).__name__} has {len(sites)} sites "
                f"({', '.join(s.name for s in sites)}); pass an index in [-{len(sites)}, {len(sites) - 1}] "
                "or a module name"
            )
        site = sites[index]
    elif isinstance(at, str):
        names = dict(model.named_modules())
        if not at or at not in names:
            close = difflib.get_close_matches(str(at), [n for n in names if n], n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"at={at!r}: {type(model).__name__} has no module of that name{hint}")
        known = {s.name: s for s in fam.sites(model)} if fam is not None else {}
        if at in known:
            site = known[at]
        else:
            guessed_layout, guessed_dim = _infer(names[at])
            if fam is not None:  # a module inside a known family keeps the family's layout
                guessed_layout = fam.sites(model)[-1].layout
            site_layout, site_dim = layout or guessed_layout, dim or guessed_dim or fallback_dim
            if site_layout is None or site_dim is None:
                raise ValueError(
                    f"at={at!r}: cannot tell the {'layout' if site_layout is None else 'width'} of "
                    f"{type(names[at]).__name__}'s output; pass layout='tokens' | 'channels_first' | "
                    "'channels_last' and dim=<channels>"
                )
            return BoostSite(at, int(site_dim), site_layout)
    else:
        raise ValueError(f"at must be None, a site index or a module name, got {at!r}")
    if layout is not None or dim is not None:
        site = BoostSite(site.name, int(dim or site.dim), layout or site.layout)
    return site


# ------------------------------------------------------------------ running the booster at its site


def apply_booster(booster: LLMBooster, x: torch.Tensor, layout: str, where: str = "the site") -> torch.Tensor:
    """``booster`` applied to ``x`` laid out as ``layout`` (feature maps are flattened to tokens and back).

    The checks step aside while ``torch.fx`` traces (``x`` is then a ``Proxy``), so a boosted model
    traces into one graph with the booster in it.

    Example:
        >>> booster = LLMBooster(8, None, variant="mlp", llm_width=4)
        >>> apply_booster(booster, torch.rand(2, 8, 3, 5), "channels_first").shape
        torch.Size([2, 8, 3, 5])
    """
    traced = isinstance(x, torch.fx.Proxy)
    if not traced and not isinstance(x, torch.Tensor):
        raise TypeError(
            f"the booster at {where} needs a tensor output, got {type(x).__name__}; boost another module (at=...)"
        )
    if layout == "tokens":
        return booster(x)
    channel = 1 if layout == "channels_first" else -1
    if not traced and (x.ndim < 3 or x.shape[channel] != booster.dim):
        raise ValueError(
            f"the booster at {where} expects {layout} feature maps with {booster.dim} channels, "
            f"got shape {tuple(x.shape)}"
        )
    if layout == "channels_first":
        out = booster(x.flatten(2).transpose(1, 2))
        return out.transpose(1, 2).reshape(x.shape)
    return booster(x.reshape(x.shape[0], -1, x.shape[-1])).reshape(x.shape)


def _hook_target(module: nn.Module) -> nn.Module:
    """The module whose output is ``module``'s output and that every code path calls.

    A plain ``nn.Sequential`` returns its last child's output; timm's gradient checkpointing
    (``checkpoint_seq(..., flatten=True)``) calls the children of a stage and never the stage
    itself, so the hook goes on the last child (recursively).
    """
    while type(module) is nn.Sequential and len(module) > 0:
        module = module[-1]
    return module


class BoosterHook:
    """Forward hook on the site module: runs ``owner.booster`` on the site's output.

    It reads ``owner.booster`` at call time (``owner.booster = None`` turns boosting off) and is
    a plain picklable object, so ``copy.deepcopy`` / ``torch.save`` of the model keep it bound
    to the copy.
    """

    def __init__(self, owner: nn.Module, site: BoostSite) -> None:
        self.owner = owner
        self.site = site

    def __call__(self, module: nn.Module, args: tuple, output: Any) -> Any:
        booster = self.owner.booster
        if booster is None:
            return output
        return apply_booster(booster, output, self.site.layout, self.site.name)

    def __repr__(self) -> str:
        return f"BoosterHook(site={self.site.name!r}, layout={self.site.layout!r})"

    @property
    def __name__(self) -> str:
        # torch.jit.script reads a hook's __name__ to compile it; a booster hook cannot be compiled,
        # so say so in one line instead of TorchScript's "has no attribute '__name__'"
        raise _NotScriptable(
            f"rllm_zoo: this model runs its booster through a forward hook on {self.site.name!r}, which "
            "torch.jit.script cannot compile; use torch.jit.trace, torch.jit.script(torch.fx.symbolic_trace(model)), "
            "torch.compile or torch.export instead"
        )


class _NotScriptable(AttributeError):
    """An ``AttributeError`` (so ``getattr(hook, "__name__", default)`` still works) with a message for users."""


def attach_booster(
    model: nn.Module,
    booster: LLMBooster | None,
    at: int | str | BoostSite | None = None,
    *,
    layout: str | None = None,
    hook: bool = True,
) -> nn.Module:
    """Register ``booster`` as ``model.booster`` and run it on the output of the site ``at``.

    The low-level half of :func:`boost` (which also builds the booster); ``at`` is as there, or a
    :class:`BoostSite` from :func:`resolve_site`. ``booster=None`` only records
    ``model.booster = None`` (the plain baseline). Returns ``model``.

    ``hook=False`` registers the booster and its site without a forward hook: for model classes
    whose own ``forward`` calls ``self.booster`` at the site (the zoo's networks do, so that
    TorchScript and ``torch.fx`` see the call).

    Example:
        >>> import timm
        >>> from rllm_zoo.booster import LLMBooster
        >>> vit = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=32)
        >>> booster = LLMBooster(192, torch.nn.Identity(), llm_width=192)
        >>> attach_booster(vit, booster).boost_site.name
        'blocks.1'
    """
    _check_not_boosted(model, allow=booster)
    if booster is None:
        if not hasattr(model, "booster"):
            model.booster = None
        return model
    if not isinstance(booster, LLMBooster):
        raise TypeError(f"booster must be an rllm_zoo LLMBooster, got {type(booster).__name__}")
    if isinstance(model, nn.Sequential | nn.ModuleList | nn.ModuleDict):
        raise ValueError(
            f"an nn.{type(model).__name__} cannot hold model.booster (a container runs or lists every child): "
            "boost the module that owns it, or wrap it in a module of its own"
        )
    if isinstance(at, BoostSite):
        site = at
        if layout is not None and layout != site.layout:
            raise ValueError(f"layout={layout!r} contradicts the site's layout {site.layout!r}")
    else:
        site = _resolve_site(model, at, layout=layout, fallback_dim=booster.dim)
    if site.dim != booster.dim:
        raise ValueError(
            f"the booster's width {booster.dim} does not match the width of {site.name} ({site.dim}); "
            f"build it with dim={site.dim}"
        )
    module = model.get_submodule(site.name)
    model.booster = booster
    if hook:
        _hook_target(module).register_forward_hook(BoosterHook(model, site))
        if callable(getattr(type(model), "prune_intermediate_layers", None)):
            model.prune_intermediate_layers = functools.partial(prune_with_booster, model)
    model.boost_site = site
    return model


def prune_with_booster(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """timm's ``prune_intermediate_layers`` on a plugged model: the booster goes with its site.

    A model boosted by :func:`boost` runs the booster on the output of its site module. When
    pruning removes that module (the site is after the last kept feature), the booster would be
    left unused, so it is removed as well (``model.booster`` and ``model.boost_site`` become
    ``None``); when the site is kept, so is the booster. :func:`boost` installs this as the
    model's ``prune_intermediate_layers``.

    Example:
        >>> import timm
        >>> net = boost(timm.create_model("resnet18"), llm=None, variant="mlp", llm_width=8)
        >>> net.prune_intermediate_layers([2]), net.booster, net.boost_site
        ([2], None, None)
    """
    site = getattr(model, "boost_site", None)
    before = _submodule(model, site.name) if site is not None else None
    taken = type(model).prune_intermediate_layers(model, *args, **kwargs)
    if before is not None and _submodule(model, site.name) is not before:
        remove_booster_hooks(_hook_target(before), owner=model)
        model.booster = None
        model.boost_site = None
    return taken


def booster_hooks(model: nn.Module) -> list[tuple[nn.Module, int, BoosterHook]]:
    """``(module, key, hook)`` of every forward hook in ``model`` that runs a booster.

    Example:
        >>> booster_hooks(nn.Linear(2, 2))
        []
    """
    return [
        (m, key, hook)
        for m in model.modules()
        for key, hook in m._forward_hooks.items()
        if isinstance(hook, BoosterHook)
    ]


def remove_booster_hooks(model: nn.Module, owner: nn.Module | None = None) -> None:
    """Remove the booster hooks in ``model`` (only those bound to ``owner``'s booster, when given)."""
    for module, key, hook in booster_hooks(model):
        if owner is None or hook.owner is owner:
            del module._forward_hooks[key]


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _check_not_boosted(model: nn.Module, allow: nn.Module | None = None) -> None:
    """Raise unless ``model`` holds no booster yet (``allow``: the one about to be attached)."""
    found = find_booster(model)
    site = getattr(model, "boost_site", None)
    own = getattr(model, "booster", None)
    if own is not None and not isinstance(own, LLMBooster):
        raise ValueError(f"{type(model).__name__} already has an attribute 'booster' ({type(own).__name__})")
    if site is not None or (found is not None and found[1] is not allow):
        where = site.name if site is not None else found[0]
        raise ValueError(f"{type(model).__name__} already holds a booster (at {where}); boost a fresh model")


def find_booster(model: nn.Module) -> tuple[str, LLMBooster] | None:
    """``(module name, booster)`` of the first :class:`LLMBooster` in ``model`` (``model.booster`` first).

    Example:
        >>> find_booster(torch.nn.Linear(2, 2)) is None
        True
    """
    own = getattr(model, "booster", None)
    if isinstance(own, LLMBooster):
        return "booster", own
    for name, module in model.named_modules():
        if isinstance(module, LLMBooster):
            return name, module
    return None


# ------------------------------------------------------------------ building the booster


def make_booster(
    dim: int,
    llm: str | nn.Module | None = DEFAULT_LLM,
    layer: int = -1,
    variant: str = "residual",
    *,
    freeze: bool = True,
    post_norm: bool = True,
    revision: str | None = None,
    sha256: str | None = None,
    llm_config: dict | None = None,
    llm_width: int | None = None,
    llm_license: str | None = None,
) -> LLMBooster:
    """An :class:`LLMBooster` of width ``dim`` around layer ``layer`` of ``llm`` (see :func:`boost`).

    Example:
        >>> make_booster(32, llm=None, variant="mlp", llm_width=16)
        LLMBooster(
          dim=32, llm_width=16, variant='mlp', freeze=True
          (adapter_in): Linear(in_features=32, out_features=16, bias=False)
          (adapter_out): Linear(in_features=16, out_features=32, bias=False)
          (post_norm): Identity()
        )
    """
    if variant not in VARIANTS:
        raise ValueError(
            f"unknown booster variant {variant!r}; choose one of {', '.join(VARIANTS)} "
            "(or False for the plain backbone)"
        )
    if variant == "mlp":  # the no-LLM control: only the adapters' width matters
        width = llm_width
        if width is None and llm_config:
            width = int(llm_config["hidden_size"])
        if width is None and isinstance(llm, nn.Module):
            width = getattr(llm, "width", None) or getattr(getattr(llm, "info", None), "width", None)
        if width is None and isinstance(llm, str):
            src = llm if llm.startswith("random") else f"random:{llm}"
            width = load_llm_block(src, layer=layer, revision=revision).width  # config only, no weights
        if width is None:
            raise ValueError(
                "booster='mlp' needs the adapters' width: pass llm_width=... (or an llm to take it from)"
            )
        return LLMBooster(dim, None, variant="mlp", llm_width=int(width))
    if llm is None:
        raise ValueError(f"booster={variant!r} needs an LLM block; pass llm=... or use variant 'mlp'")
    if isinstance(llm, str):
        block: nn.Module = referenced_block(
            llm, layer, revision=revision, sha256=sha256, config=llm_config, license=llm_license
        )
    elif isinstance(llm, nn.Module):
        block = llm
    else:
        raise ValueError(f"llm must be a source string, an nn.Module block or None, got {type(llm).__name__}")
    return LLMBooster(dim, block, variant=variant, llm_width=llm_width, post_norm=post_norm, freeze=freeze)


def _timm_architecture(model: nn.Module) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None)
    arch = cfg.get("architecture") if isinstance(cfg, dict) else None
    return arch if any(mod.startswith("timm.") for mod, _ in _mro(model)) and arch else None


def boost(
    model: nn.Module,
    llm: str | nn.Module | None = DEFAULT_LLM,
    layer: int = -1,
    variant: str | bool | None = "residual",
    at: int | str | None = None,
    freeze: bool = True,
    post_norm: bool = True,
    *,
    layout: str | None = None,
    dim: int | None = None,
    revision: str | None = None,
    sha256: str | None = None,
    llm_config: dict | None = None,
    llm_width: int | None = None,
    llm_license: str | None = None,
) -> nn.Module:
    """Put an R-LLM booster into ``model`` **in place** and return ``model``.

    The booster becomes ``model.booster`` (state-dict keys ``booster.*``; the backbone's own keys
    do not change) and runs on the output of the site module (``model.boost_site``) through a
    forward hook. The frozen LLM block never gets a gradient and is left out of
    :func:`rllm_zoo.trainable_parameters`. For timm models the pretrained config becomes that of the
    ``r_llm_boost`` architecture (``booster_args["base"]`` keeps the backbone's name), so
    :func:`rllm_zoo.save_pretrained` / ``push_to_hub`` write a ``config.json`` that
    ``timm.create_model("hf-hub:<repo>", pretrained=True)`` rebuilds.

    Args:
        model: a timm or MONAI backbone (see the module docstring for the known families).
        llm: LLM source for :func:`rllm_zoo.load_llm_block` (``"smollm2"``, ``"random:smollm2"``,
            a Hub id, a folder or a ``.gguf`` file), an ``nn.Module`` block mapping
            ``(B, N, width)`` to the same shape, or ``None`` with ``variant="mlp"``.
        layer: which layer of the LLM (``-1``: the last, the paper's choice).
        variant: ``"residual"`` (R-LLM), ``"out"``, ``"hybrid"``, ``"none"`` or ``"mlp"``; ``False``
            (or ``None`` / ``"off"``) adds no booster: the weights and outputs stay the backbone's
            (the baseline; ``model.booster`` is ``None``, ``booster_args`` are recorded). The ``out`` and
            ``hybrid`` variants keep the backbone's own features (``+ z``), which suits a pretrained
            backbone; ``residual`` replaces them by the adapters' output, as in the paper.
        at: the site: ``None`` for the default, an index into :func:`boost_sites` (``-1`` is the
            default), or a module name (``"blocks.5"``, ``"layer3"``, ``"vit.blocks.7"``).
        freeze: keep the LLM block frozen (the paper); ``False`` fine-tunes it.
        post_norm: unit-weight RMSNorm after the block (as in the R-LLM code).
        layout: ``"tokens"``, ``"channels_first"`` or ``"channels_last"``, for a module name whose
            output layout cannot be inferred.
        dim: the site's width, for a module name whose width cannot be inferred.
        revision, sha256, llm_config, llm_width, llm_license: how published models pin the block
            (:func:`rllm_zoo.llm.referenced_block`); ``llm_width`` sets the ``mlp`` control's width.

    Raises:
        ValueError: the model is not of a known family and ``at`` names no module, the model is
            already boosted, or an argument is invalid (the message says which, and the fix).

    Example:
        >>> import timm, torch, rllm_zoo
        >>> vit = rllm_zoo.boost(timm.create_model("deit_tiny_patch16_224", img_size=32, depth=2),
        ...                      llm="random:smollm2", variant="hybrid")
        >>> vit.boost_site.name, vit.booster.variant, vit.booster_args["base"]
        ('blocks.1', 'hybrid', 'deit_tiny_patch16_224')
        >>> vit(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 1000])
    """
    args = {
        "llm": llm if isinstance(llm, str) or llm is None else None,
        "llm_layer": layer,
        "booster": variant if variant not in (None, False, "off") else False,
        "freeze_llm": freeze,
        "llm_post_norm": post_norm,
        "llm_revision": revision,
        "llm_sha256": sha256,
        "llm_config": llm_config,
        "llm_width": llm_width,
        "llm_license": llm_license,
        "boost_at": at,
    }
    base = _timm_architecture(model)
    if (base is not None and base.startswith("rllm_")) or type(model).__module__.startswith("rllm_zoo.monai"):
        raise ValueError(
            f"{base or type(model).__name__} is one of rllm_zoo's own boosted networks: build it with "
            "booster=... / use_booster=True instead of boosting it again"
        )
    _check_not_boosted(model)
    if args["booster"] is False:
        attach_booster(model, None)
    else:
        if variant not in VARIANTS:
            raise ValueError(
                f"unknown booster variant {variant!r}; choose one of {', '.join(VARIANTS)} "
                "(or False for the plain backbone)"
            )
        site = resolve_site(model, at, layout=layout, dim=dim)
        booster = make_booster(
            site.dim,
            llm,
            layer,
            variant,
            freeze=freeze,
            post_norm=post_norm,
            revision=revision,
            sha256=sha256,
            llm_config=llm_config,
            llm_width=llm_width,
            llm_license=llm_license,
        )
        first = next(model.parameters(), None)
        if first is not None:
            booster.to(first.device)  # where the backbone lives (the block keeps its dtype)
            if first.is_floating_point():
                booster.adapter_in.to(first.dtype)
                booster.adapter_out.to(first.dtype)
        attach_booster(model, booster, site)
    if base is not None:
        from .timm_boost import as_boosted_cfg

        args["base"] = base if base != "r_llm_boost" else getattr(model, "booster_args", {}).get("base")
        model.pretrained_cfg = model.default_cfg = as_boosted_cfg(model.pretrained_cfg, model)
    model.booster_args = args
    return model


def boost_with_args(model: nn.Module, args: dict[str, Any], *, layout: str | None = None) -> nn.Module:
    """:func:`boost` with the factories' keyword names (:data:`BOOST_KWARGS`: ``llm_layer``, ``booster``...).

    Example:
        >>> import timm
        >>> net = boost_with_args(timm.create_model("resnet18"), {"llm": None, "booster": "mlp", "llm_width": 8})
        >>> net.booster.variant, net.booster.llm_width
        ('mlp', 8)
    """
    unknown = sorted(set(args) - set(BOOST_KWARGS))
    if unknown:
        raise TypeError(f"unknown booster arguments {unknown}; known: {', '.join(BOOST_KWARGS)}")
    return boost(model, layout=layout, **{BOOST_KWARGS[k]: v for k, v in args.items()})
