"""Build the network a run asks for: a timm name (2D) or an rllm_zoo.monai preset (3D).

2D: an ``rllm_*`` name is the zoo's boosted ViT; any other timm name is boosted through the
``r_llm_boost`` architecture (:mod:`rllm_zoo.timm_boost`) unless ``booster`` is ``"off"``, which
gives the plain timm model.
"""

from __future__ import annotations

from torch import nn

from ..data import DatasetInfo
from .config import TrainConfig

__all__ = ["DEFAULT_MODELS", "build_model", "input_norm"]

#: The model a run trains when the config names none (2D: False, 3D: True).
DEFAULT_MODELS = {False: "rllm_vit_tiny_patch4_28", True: "rllm_vit3d_small"}


def _booster_kwargs(cfg: TrainConfig) -> dict:
    return {
        "llm": cfg.llm,
        "llm_layer": cfg.llm_layer,
        "booster": False if cfg.booster == "off" else cfg.booster,
        "freeze_llm": cfg.freeze_llm,
        "llm_post_norm": cfg.llm_post_norm,
    }


def build_model(cfg: TrainConfig, info: DatasetInfo) -> nn.Module:
    """The model for ``cfg`` with ``info``'s channels and classes at ``cfg.size``."""
    if cfg.model is None:
        cfg = type(cfg)(**{**cfg.to_dict(), "model": DEFAULT_MODELS[info.is_3d]})
    if info.is_3d:
        from ..monai import create_network, list_networks

        if cfg.model not in list_networks():
            raise ValueError(
                f"{info.flag} is a 3D dataset: model must be one of the rllm_zoo.monai presets "
                f"({', '.join(list_networks())}), got {cfg.model!r}"
            )
        kw = _booster_kwargs(cfg)
        booster = kw.pop("booster")
        if booster is False:
            kw["use_booster"] = False
        else:
            kw["booster"] = booster
        if cfg.size is not None:  # None: the preset's own size
            kw["img_size"] = cfg.size
        return create_network(
            cfg.model, in_channels=info.n_channels, num_classes=info.n_classes, **kw, **cfg.model_kwargs
        )
    import timm

    if not timm.is_model(cfg.model):
        raise ValueError(
            f"unknown model {cfg.model!r}; see timm.list_models('rllm_*') for the boosted family"
        )
    name = timm.models.split_model_name_tag(cfg.model)[0]
    zoo = name.startswith("rllm_")
    kw: dict = dict(num_classes=info.n_classes, in_chans=info.n_channels, drop_path_rate=cfg.drop_path)
    if cfg.size is not None and (zoo or _fixed_input_size(name)):  # None: the model's own input size
        kw["img_size"] = cfg.size  # (models without a fixed input size, e.g. CNNs, take any size)
    if zoo:
        kw.update(_booster_kwargs(cfg), vit_pretrained=cfg.vit_pretrained)
    elif cfg.booster != "off":  # any other timm model, boosted: r_llm_boost(base=<model>)
        from ..timm_boost import ARCHITECTURE

        kw.update(_booster_kwargs(cfg), **_base_weights(cfg, name))
        kw.update(cfg.model_kwargs)
        return timm.create_model(ARCHITECTURE, **kw)
    kw.update(cfg.model_kwargs)
    return timm.create_model(cfg.model, **kw)


def _fixed_input_size(name: str) -> bool:
    """True when the timm model takes an ``img_size`` argument that fixes its input size (ViTs)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    return bool(cfg is not None and cfg.fixed_input_size)


_WEIGHT_FILES = (".safetensors", ".pth", ".pt", ".bin", ".npz")


def _base_weights(cfg: TrainConfig, name: str) -> dict:
    """``base`` / ``base_pretrained`` of r_llm_boost from ``model`` and ``vit_pretrained``."""
    import timm

    source = cfg.vit_pretrained
    if not source:
        return {"base": cfg.model}
    if source.endswith(_WEIGHT_FILES):
        return {"base": cfg.model, "base_pretrained": source}
    if timm.models.split_model_name_tag(source)[0] == name:  # the model's own pretrained tag
        return {"base": source, "base_pretrained": True}
    raise ValueError(
        f"vit_pretrained={source!r} does not fit model {cfg.model!r}: give a weights file or a pretrained "
        f"tag of the same model (e.g. {name}.<tag>, see timm.list_pretrained('{name}*'))"
    )


def input_norm(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean / std a 2D model expects (its timm pretrained_cfg), else MedMNIST's 0.5 / 0.5."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", (0.5,) * 3)), tuple(cfg.get("std", (0.5,) * 3))
