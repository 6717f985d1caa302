"""2D model family: timm Vision Transformers boosted by one frozen LLM block.

``import rllm_zoo`` registers the family in timm, so the usual timm habits hold::

    >>> import timm, rllm_zoo
    >>> timm.list_models("rllm_*")[:2]
    ['rllm_vit_base_patch16_224', 'rllm_vit_micro_patch4_28']
    >>> model = timm.create_model("rllm_vit_small_patch4_28", num_classes=5)  # SmolLM2 layer -1
    >>> model.booster_args["llm"], model.booster.block.info.layer
    ('smollm2', 29)
    >>> paper = timm.create_model(  # the paper's block: reads layer 31 from the Hub  # doctest: +SKIP
    ...     "rllm_vit_small_patch16_224", llm="huggyllama/llama-7b", llm_layer=31)

The booster sits after the last encoder block and before the final norm (the
paper's place). It is registered by the generic mechanism of :mod:`rllm_zoo.plug` (the one
:func:`rllm_zoo.boost` uses for any backbone), so the ViT's state-dict keys stay timm's own and
the booster's are ``booster.*``; unlike a plugged backbone, the zoo's ViT calls the booster
itself in ``forward_features`` / ``forward_intermediates`` (no forward hook), so
``torch.jit.script`` and ``torch.fx`` see the call. The timm contract (``docs/conformance.md``):

* ``forward_features(x) == norm(booster(blocks(x)))``, and the final output of
  ``forward_intermediates`` is the same tensor;
* intermediates (taps, ``features_only``) are block outputs *before* the booster;
* ``prune_intermediate_layers(i)`` keeps the booster after the last kept block;
  ``prune_norm=True`` removes it together with the final norm (features end at the tap, as
  timm's ``features_only``).
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from timm.data import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._builder import resolve_pretrained_cfg
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint, checkpoint_seq
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from .booster import VARIANTS, LLMBooster, frozen_state_names, is_tracing
from .llm import DEFAULT_LLM, load_llm_block, referenced_block
from .plug import BoostSite, attach_booster, remove_booster_hooks

__all__ = ["BOOSTER_ARGS", "BoostedVisionTransformer", "booster_args", "default_hub_org"]

#: Keyword arguments of the booster, recorded in ``model.booster_args`` (JSON-serialisable).
BOOSTER_ARGS = (
    "llm",
    "llm_layer",
    "booster",
    "freeze_llm",
    "llm_post_norm",
    "llm_revision",
    "llm_sha256",
    "llm_config",
    "llm_width",
    "llm_license",
)

#: Hub organisation that hosts the zoo's pretrained tags.
default_hub_org = "rllm-zoo"


class BoostedVisionTransformer(VisionTransformer):
    """A timm ``VisionTransformer`` with an :class:`~rllm_zoo.booster.LLMBooster` before the final norm.

    Args:
        llm: LLM source for :func:`rllm_zoo.load_llm_block` (default: the embedded SmolLM2);
            ``"random:<source>"`` for a random-init block of that architecture.
        llm_layer: which layer of the LLM (``-1``: the last, as in the paper).
        booster: booster variant (``"residual"`` = R-LLM, ``"out"``, ``"hybrid"``, ``"none"``,
            ``"mlp"``), or ``False`` (also ``None`` / ``"off"``) for the plain ViT baseline.
        freeze_llm: keep the LLM block frozen (the paper's finding: fine-tuning hurts).
        llm_post_norm: unit-weight RMSNorm after the block (as in the R-LLM code).
        llm_revision: Hub revision of ``llm``.
        llm_sha256: the sha256 the layer must hash to (``block.info.sha256``); set by published
            models so that re-reading a different LLM file fails instead of silently differing.
        llm_config: the LLM's config as a dict: the block is rebuilt from it without reading
            the LLM, for checkpoints that carry the block's weights (published "full" models).
        llm_width: adapter width of the ``mlp`` control (default: the LLM's width); the other
            variants refuse it (their LLM block fixes the width).
        llm_license: licence of the LLM's weights, recorded when the block is rebuilt from
            ``llm_config`` (a block read from its source reports the source's own licence).
        vit_pretrained: initialise the ViT part from a timm checkpoint of the same width:
            a timm model name (``"vit_small_patch16_224.augreg_in21k_ft_in1k"``), an
            ``"hf-hub:"`` or ``"local-dir:"`` name, or a weights file. Position embeddings
            and the patch stem are adapted by timm; the booster is freshly initialised (and so
            is the classifier when loading a bare weights file).
        vit_arch: the timm architecture a bare weights file in ``vit_pretrained`` belongs to.
        **kwargs: timm ``VisionTransformer`` arguments (``img_size``, ``in_chans``,
            ``num_classes``, ``embed_dim``, ``depth``...).
    """

    def __init__(
        self,
        *,
        llm: str | None = DEFAULT_LLM,
        llm_layer: int = -1,
        booster: str | None = "residual",
        freeze_llm: bool = True,
        llm_post_norm: bool = True,
        llm_revision: str | None = None,
        llm_sha256: str | None = None,
        llm_config: dict | None = None,
        llm_width: int | None = None,
        llm_license: str | None = None,
        vit_pretrained: str | None = None,
        vit_arch: str = "vit_small_patch16_224",
        **kwargs: Any,
    ) -> None:
        _validate_vit_args(kwargs)
        super().__init__(**kwargs)
        if booster in (None, False, "off"):
            booster = None  # the plain ViT baseline
        elif booster not in VARIANTS:
            raise ValueError(
                f"unknown booster variant {booster!r}; choose one of {', '.join(VARIANTS)} "
                "(or booster=False for the plain ViT baseline)"
            )
        if llm_width is not None and booster != "mlp":
            why = (
                "the plain ViT baseline (booster=False) has no adapters"
                if booster is None
                else f"with booster={booster!r} the LLM block fixes the width"
            )
            raise ValueError(
                f"llm_width={llm_width!r} only sets the adapter width of booster='mlp'; {why}: drop llm_width"
            )
        self.booster_args = {
            "llm": llm,
            "llm_layer": llm_layer,
            "booster": booster if booster is not None else False,
            "freeze_llm": freeze_llm,
            "llm_post_norm": llm_post_norm,
            "llm_revision": llm_revision,
            "llm_sha256": llm_sha256,
            "llm_config": llm_config,
            "llm_width": llm_width,
            "llm_license": llm_license,
        }
        self.booster: LLMBooster | None = None
        if booster is not None:
            if booster == "mlp" or llm is None:
                if booster != "mlp":
                    raise ValueError(f"booster={booster!r} needs an LLM; pass llm=... or use booster='mlp'")
                width = llm_width or (
                    int(llm_config["hidden_size"]) if llm_config else _mlp_width(llm, llm_layer, llm_revision)
                )
                block = None
            else:
                block = referenced_block(
                    llm,
                    llm_layer,
                    revision=llm_revision,
                    sha256=llm_sha256,
                    config=llm_config,
                    license=llm_license,
                )
                width = block.width
            self.booster = LLMBooster(
                self.embed_dim,
                block,
                variant=booster,
                llm_width=width,
                post_norm=llm_post_norm,
                freeze=freeze_llm,
            )
            self._init_booster()
            # timm's device= / dtype= factory arguments: the ViT is built there, so is the booster
            # (adapters in the ViT's dtype; the LLM block keeps its own, the booster casts)
            if kwargs.get("device") is not None:
                self.booster.to(device=kwargs["device"])
            if kwargs.get("dtype") is not None:
                self.booster.adapter_in.to(dtype=kwargs["dtype"])
                self.booster.adapter_out.to(dtype=kwargs["dtype"])
        # the generic mechanism (rllm_zoo.plug): booster.* keys and boost_site; no hook, the
        # forward methods below call the booster (so TorchScript and torch.fx see it)
        attach_booster(self, self.booster, hook=False)
        if vit_pretrained:
            _load_vit_part(self, vit_pretrained, vit_arch)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        _drop_legacy_hooks(self)

    @torch.jit.unused
    def _check_image(self, x: torch.Tensor) -> None:
        """Friendly one-line errors for a wrong input (eager only: skipped by TorchScript and fx)."""
        if isinstance(x, torch.fx.Proxy) or is_tracing():
            return
        want = self.patch_embed.proj.in_channels
        if x.ndim != 4 or x.shape[1] != want:
            raise ValueError(
                f"expected images of shape (B, {want}, H, W), got {tuple(x.shape)}; create the model with "
                f"in_chans={x.shape[1] if x.ndim == 4 else '?'} or convert the images"
            )
        pe = self.patch_embed
        if pe.img_size is None:
            return
        h, w = int(x.shape[2]), int(x.shape[3])
        if pe.strict_img_size:
            built = (int(pe.img_size[0]), int(pe.img_size[1]))
            if (h, w) != built:
                cfg = getattr(self, "pretrained_cfg", None) or {}
                name = cfg.get("architecture") or type(self).__name__
                size = str(h) if h == w else f"({h}, {w})"
                raise ValueError(
                    f"input is {h}x{w} but {name} was built for {built[0]}x{built[1]}; "
                    f"build it with img_size={size} (or resize the input)"
                )
        elif not pe.dynamic_img_pad:
            ph, pw = int(pe.patch_size[0]), int(pe.patch_size[1])
            if h % ph or w % pw:
                raise ValueError(
                    f"input is {h}x{w}, not a multiple of the patch size {ph}x{pw}; resize the input "
                    "(or build the model with dynamic_img_pad=True)"
                )

    def _check_input(self, module: nn.Module, args: tuple) -> None:
        # the pre-hook of models pickled before the booster was called explicitly (dropped on load)
        self._check_image(args[0])

    def _init_booster(self) -> None:
        assert self.booster is not None
        for lin in (self.booster.adapter_in, self.booster.adapter_out):
            nn.init.trunc_normal_(lin.weight, std=0.02)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def _apply_booster(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        # the hook of models pickled before rllm_zoo.plug (new models use plug.BoosterHook)
        return self.booster(output) if self.booster is not None else output

    def forward_features(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Embeddings, blocks, the booster, the final norm: ``norm(booster(blocks(x)))``.

        Example:
            >>> import timm, torch
            >>> model = timm.create_model("rllm_vit_micro_patch4_28", llm="random:smollm2").eval()
            >>> model.forward_features(torch.rand(1, 3, 28, 28)).shape  # class token + 7x7 patches
            torch.Size([1, 50, 192])
        """
        if not torch.jit.is_scripting():
            self._check_image(x)
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        if attn_mask is not None or is_causal:
            for blk in self.blocks:
                x = blk(x, attn_mask=attn_mask, is_causal=is_causal)
        elif self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(self._boost(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        output_dict: bool = False,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]] | dict[str, Any]:
        """timm's ``forward_intermediates``; taps are block outputs *before* the booster.

        The final output is ``norm(booster(x))`` of the last block that ran (equal to
        :meth:`forward_features` without ``stop_early``). Arguments as timm's ViT.

        Example:
            >>> import timm, torch
            >>> model = timm.create_model("rllm_vit_micro_patch4_28", llm="random:smollm2").eval()
            >>> final, taps = model.forward_intermediates(torch.rand(1, 3, 28, 28), indices=2)
            >>> final.shape, [t.shape for t in taps]
            (torch.Size([1, 50, 192]), [torch.Size([1, 192, 7, 7]), torch.Size([1, 192, 7, 7])])
        """
        assert output_fmt in ("NCHW", "NLC"), "Output format must be one of NCHW or NLC."
        if not torch.jit.is_scripting():
            self._check_image(x)
        reshape = output_fmt == "NCHW"
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)

        B, _, height, width = x.shape
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)

        if torch.jit.is_scripting() or not stop_early:  # can't slice blocks in torchscript
            blocks = self.blocks
        else:
            blocks = self.blocks[: max_index + 1]
        for i, blk in enumerate(blocks):
            if attn_mask is not None or is_causal:
                x = blk(x, attn_mask=attn_mask, is_causal=is_causal)
            elif self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x)
            else:
                x = blk(x)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)

        if self.num_prefix_tokens:
            prefix_tokens = [y[:, 0 : self.num_prefix_tokens] for y in intermediates]
            intermediates = [y[:, self.num_prefix_tokens :] for y in intermediates]
        else:
            prefix_tokens = None
        if reshape:
            H, W = self.patch_embed.dynamic_feat_size((height, width))
            intermediates = [y.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous() for y in intermediates]

        if output_dict:
            result_dict: dict[str, Any] = {"image_intermediates": intermediates}
            if prefix_tokens is not None and return_prefix_tokens:
                result_dict["image_intermediates_prefix"] = prefix_tokens
            if not intermediates_only:
                result_dict["image_features"] = self.norm(self._boost(x))
            return result_dict
        if not torch.jit.is_scripting() and return_prefix_tokens and prefix_tokens is not None:
            intermediates = list(zip(intermediates, prefix_tokens))
        if intermediates_only:
            return intermediates
        x = self.norm(self._boost(x))
        return x, intermediates

    def _boost(self, x: torch.Tensor) -> torch.Tensor:
        if self.booster is not None:
            x = self.booster(x)
        return x

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """timm's pruning; the booster stays after the last kept block, or goes with the norm.

        ``prune_norm=True`` (what ``features_only`` does) removes the booster together with the
        final norm: the features end at the tap, and no booster parameter is left unused.

        Example:
            >>> import timm
            >>> model = timm.create_model("rllm_vit_micro_patch4_28", llm="random:smollm2")
            >>> model.prune_intermediate_layers([2]), model.boost_site.name
            ([2], 'blocks.2')
            >>> model.prune_intermediate_layers([1], prune_norm=True), model.booster, model.boost_site
            ([1], None, None)
        """
        take_indices = super().prune_intermediate_layers(
            indices, prune_norm=prune_norm, prune_head=prune_head
        )
        if prune_norm:
            self.booster = None
            self.boost_site = None
        elif self.booster is not None:
            self.boost_site = BoostSite(f"blocks.{len(self.blocks) - 1}", self.embed_dim, "tokens")
        return take_indices

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters an optimizer should receive (the frozen LLM block is left out)."""
        return [p for p in self.parameters() if p.requires_grad]

    def group_matcher(self, coarse: bool = False) -> dict:
        matcher = dict(super().group_matcher(coarse))
        # the booster belongs with the last block group (it runs right after it)
        matcher["blocks"] = [
            (r"^blocks\.(\d+)", None),
            (r"^booster\.", (len(self.blocks) - 1,)),
            (r"^norm", (99999,)),
        ]
        return matcher


def _drop_legacy_hooks(model: BoostedVisionTransformer) -> None:
    """Remove the hooks of models pickled when the booster ran as a hook on the last block.

    The class now calls the booster and the input check itself; keeping the old hooks would
    run the booster twice.
    """
    remove_booster_hooks(model)
    legacy = {"_check_input", "_apply_booster"}  # bound methods of the model, once hooks
    for module in model.modules():
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key, hook in list(hooks.items()):
                func = getattr(hook, "__func__", None)
                if getattr(hook, "__self__", None) is model and getattr(func, "__name__", None) in legacy:
                    del hooks[key]


def _mlp_width(llm: str | None, layer: int, revision: str | None) -> int:
    """The mlp control uses the LLM's width without its weights (random init, nothing read)."""
    if llm is None:
        raise ValueError("booster='mlp' needs the LLM width: pass llm=... (its weights are not used)")
    src = llm if llm.startswith("random") else f"random:{llm}"
    return load_llm_block(src, layer=layer, revision=revision).width


def _validate_vit_args(kwargs: dict) -> None:
    img = kwargs.get("img_size", 224)
    patch = kwargs.get("patch_size", 16)
    sizes = (img, img) if isinstance(img, int) else tuple(img)
    patches = (patch, patch) if isinstance(patch, int) else tuple(patch)
    if any(s % p for s, p in zip(sizes, patches, strict=True)) and not kwargs.get("dynamic_img_pad", False):
        raise ValueError(
            f"img_size {img} is not divisible by patch_size {patch}; use an image size that is a multiple "
            f"of {patch} (e.g. {sizes[0] - sizes[0] % patches[0] or patches[0]}) or dynamic_img_pad=True"
        )
    in_chans = kwargs.get("in_chans", 3)
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive int, got {in_chans!r}")
    num_classes = kwargs.get("num_classes", 1000)
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
        raise ValueError(
            f"num_classes must be an int >= 1 (the number of classes), or 0 for no classifier head "
            f"(features only), got {num_classes!r}"
        )


_WEIGHT_FILES = (".safetensors", ".pth", ".pt", ".bin", ".npz")


def _load_vit_part(model: BoostedVisionTransformer, source: str, base_arch: str) -> None:
    """Load a timm ViT checkpoint into ``model``'s ViT part through timm's own machinery.

    timm adapts the checkpoint to this model (position-embedding resampling, patch-stem
    channels, classifier reset when ``num_classes`` differs).
    """
    import timm

    common = dict(
        pretrained=True,
        img_size=model.patch_embed.img_size,
        patch_size=model.patch_embed.patch_size,
        in_chans=model.patch_embed.proj.in_channels,
        num_classes=model.num_classes,
    )
    if source.endswith(_WEIGHT_FILES):
        # a bare file says nothing about its classifier: declare it unknown so timm drops it
        src = timm.create_model(
            base_arch, pretrained_cfg_overlay={"file": source, "num_classes": -1}, **common
        )
    else:
        src = timm.create_model(source, **common)
    if getattr(src, "embed_dim", None) != model.embed_dim:
        raise ValueError(
            f"vit_pretrained={source!r} has width {getattr(src, 'embed_dim', '?')} but this model has "
            f"{model.embed_dim}; pick a checkpoint of the same ViT size"
        )
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    bad = [k for k in missing if not k.startswith("booster.")]
    if bad or unexpected:
        raise ValueError(
            f"vit_pretrained={source!r} does not fit {type(model).__name__}: missing {bad[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )


def _filter_fn(
    state_dict: dict[str, torch.Tensor], model: BoostedVisionTransformer
) -> dict[str, torch.Tensor]:
    """timm's ViT checkpoint filter (pos-embed resampling, stem adaptation), booster kept as is.

    A *delta* checkpoint (trainable weights only) lacks the frozen LLM block: its tensors are
    taken from the block the model already holds (read from its source and checked against
    ``llm_sha256`` at construction), so timm's strict load still catches any other gap.
    """
    frozen = _frozen_block_names(model)
    if frozen and not any(k.startswith("booster.block.") for k in state_dict):
        if model.booster.block.info.extra.get("rebuilt_from_config"):
            raise ValueError(
                "this checkpoint holds no LLM block weights (delta) but the model was built with llm_config, "
                "which expects them in the checkpoint; drop llm_config so the block is read from its source"
            )
        own = model.state_dict()
        state_dict = {**state_dict, **{k: own[k] for k in own if k.startswith("booster.block.")}}
    boost = {k: v for k, v in state_dict.items() if k.startswith("booster.")}
    rest = {k: v for k, v in state_dict.items() if not k.startswith("booster.")}
    out = checkpoint_filter_fn(rest, model)
    out.update(boost)
    return out


def _frozen_block_names(model: BoostedVisionTransformer) -> set[str]:
    """State-dict names of the frozen LLM block (parameters or buffers, whichever holds it)."""
    return {n for n in frozen_state_names(model) if n.startswith("booster.block.")}


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> BoostedVisionTransformer:
    out_indices = kwargs.pop("out_indices", 3)
    hub_id = None
    if pretrained:
        cfg = resolve_pretrained_cfg(
            variant,
            pretrained_cfg=kwargs.get("pretrained_cfg"),
            pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"),
        )
        hub_id = cfg.hf_hub_id
        if hub_id and not (cfg.hf_hub_filename or "").endswith(".safetensors"):
            # weights from the Hub are read from safetensors only: never unpickle a download
            overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
            overlay["hf_hub_filename"] = "model.safetensors"
            kwargs["pretrained_cfg_overlay"] = overlay
        if not any((cfg.hf_hub_id, cfg.url, cfg.file, cfg.state_dict)):
            raise RuntimeError(
                f"{variant}.{cfg.tag or ''} has no published pretrained weights; use pretrained=False, "
                f"or a tag listed by timm.list_pretrained('{variant}*')"
            )
    try:
        if hub_id and cfg.tag and cfg.source != "hf-hub" and hub_id.startswith(f"{default_hub_org}/"):
            # a zoo tag: its repo's config.json says how it was built (booster arm, LLM layer, sha256)
            from timm.models._hub import load_model_config_from_hf

            _, _, hub_args = load_model_config_from_hf(hub_id)
            kwargs = {**hub_args, **kwargs}
        return build_model_with_cfg(
            BoostedVisionTransformer,
            variant,
            pretrained,
            pretrained_filter_fn=_filter_fn,
            feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
            **kwargs,
        )
    except Exception as e:
        if hub_id and _is_hub_error(e):
            from .hf_cache import remove_partial_downloads

            remove_partial_downloads(hub_id.split("@")[0])
            if "EntryNotFound" in type(e).__name__ and "model.safetensors" in str(e):
                raise RuntimeError(
                    f"the Hub repo {hub_id!r} has no model.safetensors: rllm_zoo loads Hub weights from "
                    "safetensors only, because unpickling a downloaded checkpoint can run arbitrary code. "
                    "Publish safetensors (rllm_zoo.push_to_hub does), or convert a checkpoint you trust "
                    "with safetensors.torch.save_file."
                ) from e
            raise RuntimeError(
                f"pretrained weights for {variant!r} could not be fetched from the Hugging Face Hub repo "
                f"{hub_id!r} ({type(e).__name__}); they may not be published yet, or the Hub is unreachable. "
                "Use pretrained=False, load your own weights with 'hf-hub:<repo>' or 'local-dir:<folder>', "
                "or set HF_ENDPOINT to a Hub that has them."
            ) from e
        raise


def _is_hub_error(e: BaseException) -> bool:
    """True when ``e`` (or what caused it) comes from reaching the Hub."""
    seen: BaseException | None = e
    while seen is not None:
        mod = type(seen).__module__
        if mod.startswith(("huggingface_hub", "httpx", "requests")) or isinstance(
            seen, ConnectionError | TimeoutError
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "num_classes": 1000,
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_INCEPTION_MEAN,
        "std": IMAGENET_INCEPTION_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2403.17343",
        "paper_name": "Residual-based Language Models are Free Boosters for Biomedical Imaging",
        **kwargs,
    }


def _medmnist_cfg(size: int, num_classes: int, **kwargs: Any) -> dict[str, Any]:
    """A cfg for weights trained on a MedMNIST set at its native size."""
    return _cfg(
        input_size=(3, size, size),
        num_classes=num_classes,
        crop_pct=1.0,
        interpolation="bilinear",
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        # Untrained: random ViT + booster; the ViT part can start from any timm checkpoint
        # of the same width (vit_pretrained=...).
        "rllm_vit_tiny_patch16_224.untrained": _cfg(input_size=(3, 224, 224)),
        "rllm_vit_small_patch16_224.untrained": _cfg(input_size=(3, 224, 224)),
        "rllm_vit_base_patch16_224.untrained": _cfg(input_size=(3, 224, 224)),
        "rllm_vit_tiny_patch8_64.untrained": _cfg(input_size=(3, 64, 64)),
        "rllm_vit_small_patch8_64.untrained": _cfg(input_size=(3, 64, 64)),
        # Native MedMNIST resolution. The RetinaMNIST tags are the best seed (on val) of each boosted
        # arm of the results table (docs/results.md), published by `rllm-zoo publish`; their
        # booster arguments (LLM source, layer, sha256) come from the repo's config.json.
        "rllm_vit_micro_patch4_28.untrained": _cfg(input_size=(3, 28, 28)),
        **{
            f"rllm_vit_micro_patch4_28.retinamnist_{arm}": _medmnist_cfg(
                28, 5, hf_hub_id=f"{default_hub_org}/rllm_vit_micro_patch4_28.retinamnist_{arm}"
            )
            for arm in ("r_llm", "mlp", "r_llm_random")
        },
        "rllm_vit_tiny_patch4_28.untrained": _cfg(input_size=(3, 28, 28)),
        "rllm_vit_small_patch4_28.untrained": _cfg(input_size=(3, 28, 28)),
    }
)


def booster_args(model: nn.Module) -> dict[str, Any]:
    """The booster keyword arguments a model was built with (for ``config.json`` ``model_args``)."""
    args = getattr(model, "booster_args", None)
    if args is None:
        raise TypeError(f"{type(model).__name__} is not an rllm_zoo boosted model")
    return dict(args)


def _register(name: str, **arch: Any):
    def factory(pretrained: bool = False, **kwargs: Any) -> BoostedVisionTransformer:
        return _create(name, pretrained=pretrained, **{**arch, **kwargs})

    factory.__name__ = name
    factory.__qualname__ = name
    shown = ", ".join(f"{k}={v}" for k, v in arch.items() if k != "vit_arch")
    factory.__doc__ = f"{name}: ViT ({shown}) boosted by one frozen LLM block (default: SmolLM2 layer -1)."
    return register_model(factory)


_MICRO = dict(embed_dim=192, depth=6, num_heads=3, vit_arch="vit_tiny_patch16_224")
_TINY = dict(embed_dim=192, depth=12, num_heads=3, vit_arch="vit_tiny_patch16_224")
_SMALL = dict(embed_dim=384, depth=12, num_heads=6, vit_arch="vit_small_patch16_224")
_BASE = dict(embed_dim=768, depth=12, num_heads=12, vit_arch="vit_base_patch16_224")

rllm_vit_tiny_patch16_224 = _register("rllm_vit_tiny_patch16_224", patch_size=16, img_size=224, **_TINY)
rllm_vit_small_patch16_224 = _register("rllm_vit_small_patch16_224", patch_size=16, img_size=224, **_SMALL)
rllm_vit_base_patch16_224 = _register("rllm_vit_base_patch16_224", patch_size=16, img_size=224, **_BASE)
rllm_vit_tiny_patch8_64 = _register("rllm_vit_tiny_patch8_64", patch_size=8, img_size=64, **_TINY)
rllm_vit_small_patch8_64 = _register("rllm_vit_small_patch8_64", patch_size=8, img_size=64, **_SMALL)
rllm_vit_micro_patch4_28 = _register("rllm_vit_micro_patch4_28", patch_size=4, img_size=28, **_MICRO)
rllm_vit_tiny_patch4_28 = _register("rllm_vit_tiny_patch4_28", patch_size=4, img_size=28, **_TINY)
rllm_vit_small_patch4_28 = _register("rllm_vit_small_patch4_28", patch_size=4, img_size=28, **_SMALL)
