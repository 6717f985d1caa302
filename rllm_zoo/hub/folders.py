"""Write a boosted model as a Hub repo folder: timm layout for 2D, MONAI bundle for 3D.

2D (timm): ``config.json`` (``architecture``, ``model_args``, ``pretrained_cfg``) and
``model.safetensors``, so ``timm.create_model("hf-hub:<repo>", pretrained=True)`` rebuilds
it once ``rllm_zoo`` is imported. 3D (MONAI): the repo root is a bundle root (``configs/``,
``models/model.pt``, ``docs/``), whose ``network_def`` pins the same LLM layer.

Both get a ``README.md`` model card (``hub_cards/``) and, from a run, its ``metrics.json``
and plots. Folders are assembled in a temporary sibling and renamed into place.

Example:
    >>> info = save_pretrained(model, "out/retina-r-llm", dataset_flag="retinamnist")   # doctest: +SKIP
    >>> info["weights"], sorted(info["files"])[:2]                                     # doctest: +SKIP
    ('full', ['README.md', 'config.json'])
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..data import DatasetInfo, Preprocessing
from .cards import BACKBONE_CARD, render_model_card
from .weights import llm_reference, rebuild_args, resolve_weights_mode, weights_for

__all__ = ["PLOT_FILES", "is_3d_model", "save_pretrained"]

#: Run outputs embedded in cards and uploaded with the weights.
PLOT_FILES = ("curves.png", "roc.png")
_WEIGHTS_META = "rllm_zoo.weights"


def _is_monai_network(model: nn.Module) -> bool:
    """A MONAI network built by ``create_network("<MONAI name>", ...)`` (ViT, UNETR, SwinUNETR, BasicUNet)."""
    from ..monai.networks import MONAI_NETWORKS

    return getattr(model, "network_name", None) in MONAI_NETWORKS and type(model).__module__.startswith(
        "monai."
    )


def is_3d_model(model: nn.Module) -> bool:
    """True for rllm_zoo.monai networks and boosted MONAI networks (published as MONAI bundles)."""
    from ..monai import BoostedNetwork

    return isinstance(model, BoostedNetwork) or _is_monai_network(model)


def _is_zoo_vit(model: nn.Module) -> bool:
    from ..timm_vit import BoostedVisionTransformer

    return isinstance(model, BoostedVisionTransformer)


def _check_model(model: nn.Module) -> None:
    if is_3d_model(model):
        if not hasattr(model, "network_name"):
            raise ValueError(
                f"this {type(model).__name__} was not built by rllm_zoo.monai.create_network, so its bundle "
                "cannot name how to rebuild it; build it with create_network('<preset>', ...)"
            )
        return
    if not hasattr(model, "booster_args") or not hasattr(model, "pretrained_cfg"):
        raise TypeError(
            f"{type(model).__name__} is not an rllm_zoo model: push a timm 'rllm_*' model, a timm model boosted "
            "by rllm_zoo.boost (or timm.create_model('r_llm_boost', base=...)), or an rllm_zoo.monai network "
            "(create_network)"
        )


_LAYOUT_TEXT = {
    "tokens": "tokens",
    "channels_first": "feature map, flattened to tokens",
    "channels_last": "channels-last feature map, flattened to tokens",
}


def _site_text(model: nn.Module) -> str:
    site = getattr(model, "boost_site", None)
    if site is None or getattr(model, "booster", None) is None:
        return "no booster"
    return f"booster after `{site.name}` ({_LAYOUT_TEXT[site.layout]}, width {site.dim})"


def _vit_description(model: nn.Module) -> tuple[str, str, tuple[int, ...]]:
    """(architecture name, one-line encoder description, spatial input shape)."""
    if _is_monai_network(model):
        args = model.network_overrides
        dims = int(args.get("spatial_dims", 3))
        size = args.get("img_size")
        if size is None:  # SwinUNETR / BasicUNet take any size divisible by 32 / 16
            size = 64 if model.network_name == "SwinUNETR" else 32
        shape = tuple(int(s) for s in size) if isinstance(size, (list, tuple)) else (int(size),) * dims
        return model.network_name, f"MONAI {type(model).__name__}, {_site_text(model)}", shape
    if is_3d_model(model):
        shape = tuple(int(s) for s in model.img_size)
        if hasattr(model, "blocks"):
            depth = f"{len(model.blocks)} blocks"
        else:  # ViViT: a spatial and a temporal encoder
            depth = f"{len(model.spatial_blocks)} spatial + {len(model.temporal_blocks)} temporal blocks"
        desc = (
            f"MONAI {type(model).__name__}, width {model.hidden_size}, {depth}, "
            f"{'×'.join(map(str, model.patch_size))} patches"
        )
        return model.network_name, desc, shape
    if not _is_zoo_vit(model):  # a timm backbone boosted by rllm_zoo.boost / r_llm_boost
        shape = tuple(int(s) for s in model.pretrained_cfg["input_size"][1:])
        base = model.booster_args.get("base") or "?"
        desc = f"timm {type(model).__name__} `{base}`, {_site_text(model)}"
        return model.pretrained_cfg.get("architecture", type(model).__name__), desc, shape
    pe = model.patch_embed
    shape = tuple(int(s) for s in pe.img_size)
    desc = (
        f"timm VisionTransformer, width {model.embed_dim}, depth {len(model.blocks)}, "
        f"{model.blocks[0].attn.num_heads} heads, {pe.patch_size[0]} px patches"
    )
    return model.pretrained_cfg.get("architecture", type(model).__name__), desc, shape


def _card_context(model: nn.Module, shape: tuple[int, ...]) -> dict[str, Any] | None:
    """Template and extra card fields for backbones boosted by rllm_zoo.boost (``None``: the zoo's card)."""
    if not _is_monai_network(model) and (is_3d_model(model) or _is_zoo_vit(model)):
        return None
    bundle = _is_monai_network(model)
    args = model.network_overrides if bundle else {}
    in_chans = int(args.get("in_channels", 1)) if bundle else int(model.pretrained_cfg["input_size"][0])
    kind = "volume" if len(shape) == 3 else "image"
    segmentation = bundle and model.network_name != "ViT"
    tags = ["medical", "r-llm", "monai" if bundle else "timm", f"{len(shape)}d"]
    tags.append("image-segmentation" if segmentation else "image-classification")
    return {
        "template": BACKBONE_CARD,
        "summary": (
            f"MONAI `{model.network_name}` boosted by one frozen LLM layer (R-LLM)."
            if bundle
            else f"timm `{model.booster_args.get('base')}` boosted by one frozen LLM layer (R-LLM)."
        ),
        "context": {
            "is_bundle": bundle,
            "site": _site_text(model),
            "in_chans": in_chans,
            "input_description": f"{in_chans}-channel {'×'.join(map(str, shape))} {kind}",
            "input_shape": ", ".join(map(str, shape)),
            "library_name": "monai" if bundle else "timm",
            "pipeline_tag": "image-segmentation" if segmentation else "image-classification",
            "tags": tags,
            "segmentation": segmentation,
        },
    }


def _atomic_folder(dest: Path):
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))


def save_pretrained(
    model: nn.Module,
    folder: str | os.PathLike,
    *,
    weights: str = "auto",
    dataset_flag: str | None = None,
    metrics: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    run_dir: str | os.PathLike | None = None,
    repo_id: str | None = None,
    timm_tag: str | None = None,
    revision: str | None = None,
    model_args: dict[str, Any] | None = None,
    extra_files: Sequence[str | os.PathLike] = (),
    dataset: DatasetInfo | None = None,
    preprocessing: Preprocessing | None = None,
) -> dict[str, Any]:
    """Write ``model`` as a Hub repo folder (see the module docstring); return what was written.

    Args:
        model: a timm ``rllm_*`` model, a timm model boosted by :func:`rllm_zoo.boost` (or
            ``timm.create_model("r_llm_boost", base=...)``), or a network from
            ``rllm_zoo.monai.create_network`` (a preset, or a boosted MONAI ``ViT`` / ``UNETR`` /
            ``SwinUNETR`` / ``BasicUNet``, written as a network bundle: ``configs/inference.json``
            with ``network_def``, ``configs/metadata.json``, ``models/model.pt``).
        folder: output folder (replaced atomically if it exists).
        weights: ``"auto"`` (full unless the LLM's licence forbids redistribution), ``"full"``
            or ``"delta"``.
        dataset_flag: the MedMNIST flag the model was trained on (labels, card, bundle configs).
        metrics, train_config: a run's ``metrics.json`` and resolved config (for the card).
        run_dir: a run folder: its plots are copied and embedded in the card.
        repo_id: the repo the card's snippets load from (default: ``<user>/<folder name>``).
        timm_tag: a ``name.tag`` the card mentions (zoo tags).
        revision: a revision the card's snippets pin.
        model_args: extra constructor arguments to record (2D, e.g. a run's ``model_kwargs``).
        extra_files: more files to copy into the folder.
        dataset: the task of own data (classes, channels); MedMNIST runs may give ``dataset_flag``.
        preprocessing: the run's preprocessing; 2D: stored in ``pretrained_cfg`` (input size,
            mean, std, interpolation, squash resize) and ``config.json``; 3D: the bundle's
            transforms. Default: the MedMNIST flag's (or the model's own for 2D).

    Returns:
        ``{"weights": mode, "files": {relative path: bytes}, "weights_bytes": n, "folder": path}``.
    """
    _check_model(model)
    if dataset is None and dataset_flag:
        from ..data import dataset_info

        dataset = dataset_info(dataset_flag)
    dataset_flag = dataset.flag if dataset is not None else dataset_flag
    ref = llm_reference(model)
    mode = resolve_weights_mode(weights, ref)
    dest = Path(folder)
    repo_id = repo_id or f"user/{dest.name}"
    tmp = _atomic_folder(dest)
    try:
        plots = []
        if run_dir is not None:
            for name in PLOT_FILES:
                src = Path(run_dir) / name
                if src.is_file():
                    shutil.copy2(src, tmp / name)
                    plots.append(name)
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        for f in extra_files:
            shutil.copy2(f, tmp / Path(f).name)
        if _is_monai_network(model):
            weights_file = _write_network_bundle(model, tmp, mode, dataset_flag)
        elif is_3d_model(model):
            weights_file = _write_bundle(model, tmp, mode, dataset, preprocessing, metrics)
        else:
            weights_file = _write_timm(model, tmp, mode, dataset, preprocessing, model_args or {})
        arch, desc, shape = _vit_description(model)
        extra = _card_context(model, shape) or {}
        license = "apache-2.0"
        if mode == "full" and ref and ref.get("source") and not ref.get("random_init"):
            from ..llm import may_redistribute

            if not may_redistribute(ref.get("license")):
                license = "other"  # the LLM layer's own terms apply to this repo
        card = render_model_card(
            model,
            repo_id=repo_id,
            weights_mode=mode,
            architecture=arch,
            vit_description=desc,
            input_shape=shape,
            dataset_flag=dataset_flag,
            metrics=metrics,
            train_config=train_config,
            plots=plots,
            bundle_name=repo_id.split("/")[-1],
            timm_tag=timm_tag,
            revision=revision,
            license=license,
            **extra,
        )
        card.save(tmp / "README.md")
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"weights": mode, "files": files, "weights_bytes": files[weights_file], "folder": str(dest)}


def _write_timm(
    model: nn.Module,
    out: Path,
    mode: str,
    dataset: DatasetInfo | None,
    prep: Preprocessing | None,
    model_args: dict[str, Any],
) -> str:
    from timm.models._hub import save_config_for_hf
    from timm.models._input import get_model_input_config

    from ..data import Preprocessing
    from ..timm_vit import booster_args

    if prep is None:
        prep = Preprocessing.from_timm(model.pretrained_cfg)
    in_chans = int(get_model_input_config(model)["input_size"][0])
    if prep.spatial_dims != 2 or prep.channels != in_chans:
        raise ValueError(f"preprocessing {prep.to_dict()} does not fit this 2D model's input")
    # the run's preprocessing, as timm data config: resolve_data_config + create_transform reproduce it
    model.pretrained_cfg = {**model.pretrained_cfg, **prep.timm_data_config()}

    pinned = ("llm_revision", "llm_sha256", "llm_config", "llm_license", "llm_width")
    args = {k: v for k, v in booster_args(model).items() if v is not None and k not in pinned}
    # explicit None: timm would otherwise keep the factory's recorded values (e.g. a previous llm_config)
    args.update(dict.fromkeys(pinned), **rebuild_args(model, mode))
    if _is_zoo_vit(model):
        pe = model.patch_embed
        args.update(in_chans=pe.proj.in_channels, img_size=int(pe.img_size[0]))
    else:  # r_llm_boost: the base's own weights come from this repo, never from the base's tag
        args.update(in_chans=in_chans, base_pretrained=None, base_pretrained_cfg_overlay=None)
    args.update(model_args)
    model_config: dict[str, Any] = {}
    if dataset is not None:
        model_config["label_names"] = list(dataset.class_names)
        model_config["rllm_zoo"] = {"dataset": dataset.title, "task": dataset.task}
    model_config.setdefault("rllm_zoo", {}).update(
        weights=mode, llm=llm_reference(model), preprocessing=prep.to_dict()
    )
    save_config_for_hf(model, str(out / "config.json"), model_config=model_config, model_args=args)
    save_file(
        weights_for(model, mode),
        str(out / "model.safetensors"),
        metadata={"format": "pt", _WEIGHTS_META: mode},
    )
    return "model.safetensors"


def _write_bundle(
    model: nn.Module,
    out: Path,
    mode: str,
    dataset: DatasetInfo | None,
    prep: Preprocessing | None,
    metrics: dict[str, Any] | None,
) -> str:
    from ..bundles import bundle_files

    if dataset is None:
        raise ValueError(
            "3D models are published as MONAI bundles, which need dataset_flag (a 3D MedMNIST flag) "
            "or dataset (the DatasetInfo of your own data)"
        )
    if prep is not None and tuple(prep.size) != tuple(int(s) for s in model.img_size):
        raise ValueError(
            f"preprocessing size {prep.size} does not fit the network's img_size {model.img_size}"
        )
    pinned = ("llm_revision", "llm_sha256", "llm_config", "llm_license", "llm_width")
    net_args = {k: v for k, v in model.network_overrides.items() if k not in pinned}
    net_args.update(rebuild_args(model, mode))
    booster = model.booster
    top = {"network_name": model.network_name, "use_booster": booster is not None}
    if booster is not None:
        top["booster"] = booster.variant
        if "llm" in net_args:
            top["llm"] = net_args.pop("llm")
            top["llm_layer"] = net_args.pop("llm_layer")
    for key in ("in_channels", "img_size", "num_classes", "use_booster", "booster", "llm", "llm_layer"):
        net_args.pop(key, None)
    for rel, text in bundle_files(dataset.flag, dataset=dataset, preprocessing=prep).items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".json") and rel != "configs/metadata.json":
            cfg = json.loads(text)
            if "network_def" in cfg:
                cfg.update(top)
                cfg["network_def"].update(net_args)
            if mode == "delta":  # models/model.pt leaves out the LLM block, which network_def re-reads
                for handler in cfg.get("handlers", []):
                    if handler.get("_target_") == "CheckpointLoader":
                        handler["strict"] = False
            text = json.dumps(cfg, indent=4, ensure_ascii=False) + "\n"
        elif rel == "configs/metadata.json":
            text = json.dumps(_bundle_metadata(json.loads(text), model, mode, metrics), indent=4) + "\n"
        path.write_text(text, encoding="utf-8")
    (out / "models").mkdir(exist_ok=True)
    torch.save(weights_for(model, mode), out / "models" / "model.pt")
    return "models/model.pt"


def _write_network_bundle(model: nn.Module, out: Path, mode: str, dataset_flag: str | None) -> str:
    """A network bundle for a boosted MONAI network: metadata, inference.json (``network_def``), weights.

    No training or evaluation configs (the zoo's bundles are MedMNIST classification); ``network_def``
    pins the LLM layer like the presets' bundles, with literal arguments only.
    """
    from ..bundles.writer import BUNDLE_VERSION, REFERENCES, REQUIRED_PACKAGES, SCHEMA_URL, VERSIONS

    pinned = ("llm", "llm_layer", "llm_revision", "llm_sha256", "llm_config", "llm_license", "llm_width")
    net_args = {k: v for k, v in model.network_overrides.items() if k not in pinned}
    net_args.update(rebuild_args(model, mode))
    net_args["use_booster"] = model.booster is not None
    if model.booster is not None:
        net_args["booster"] = model.booster.variant
    network_def = {"_target_": "rllm_zoo.monai.create_network", "name": model.network_name, **net_args}
    try:
        json.dumps(network_def)
    except TypeError as e:
        raise ValueError(
            f"the network's arguments cannot be written to a bundle config ({e}); build it from plain values"
        ) from e
    inference = {
        "imports": ["$import torch", "$import rllm_zoo.monai"],
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
    }
    args = model.network_overrides
    _, _, shape = _vit_description(model)
    in_ch = int(args.get("in_channels", 1))
    out_ch = int(args.get("out_channels", args.get("num_classes", 2)))
    segmentation = model.network_name != "ViT"
    ref = llm_reference(model)
    block = (
        f"frozen layer {ref['layer']} of {ref['source']}"
        if ref and ref.get("source")
        else ("no LLM layer (mlp control)" if ref else "no booster (baseline)")
    )
    meta = {
        "schema": SCHEMA_URL,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"MONAI {model.network_name} boosted by rllm_zoo ({mode} weights)"},
        "monai_version": VERSIONS["monai"],
        "pytorch_version": VERSIONS["pytorch"],
        "numpy_version": VERSIONS["numpy"],
        "required_packages_version": dict(REQUIRED_PACKAGES),
        "supported_apps": {},
        "name": f"R-LLM {model.network_name}",
        "task": f"{'segmentation' if segmentation else 'classification'} ({model.network_name})",
        "description": (
            f"MONAI {model.network_name} with an R-LLM booster ({_site_text(model)}; {block}). Weights "
            f"({mode}) are in models/model.pt; configs/inference.json builds the network (network_def)."
            + (f" Trained on {dataset_flag}." if dataset_flag else "")
        ),
        "authors": "rllm_zoo developers",
        "copyright": "Copyright (c) 2026 rllm_zoo developers",
        "intended_use": "Research on LLM boosters for medical imaging; not for clinical use.",
        "references": list(REFERENCES),
        "license": "Apache-2.0 (bundle code and configs)",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "any",
                    "num_channels": in_ch,
                    "spatial_shape": list(shape),
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {str(i): f"channel {i}" for i in range(in_ch)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image" if segmentation else "logits",
                    "format": "segmentation" if segmentation else "classes",
                    "num_channels": out_ch,
                    "spatial_shape": list(shape) if segmentation else [out_ch],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {str(i): f"class {i}" for i in range(out_ch)},
                }
            },
        },
    }
    for rel, content in (("configs/inference.json", inference), ("configs/metadata.json", meta)):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "docs").mkdir(exist_ok=True)
    (out / "docs" / "README.md").write_text(meta["description"] + "\n", encoding="utf-8")
    (out / "models").mkdir(exist_ok=True)
    torch.save(weights_for(model, mode), out / "models" / "model.pt")
    return "models/model.pt"


def _bundle_metadata(meta: dict, model: nn.Module, mode: str, metrics: dict[str, Any] | None) -> dict:
    meta = dict(meta)
    meta.pop("eval_metrics_note", None)
    test = (metrics or {}).get("test") or {}
    meta["eval_metrics"] = {f"test_{k}": round(float(test[k]), 4) for k in ("acc", "auc") if k in test}
    ref = llm_reference(model)
    block = (
        f"frozen layer {ref['layer']} of {ref['source']}"
        if ref and ref.get("source")
        else ("no LLM layer (mlp control)" if ref else "no booster (baseline)")
    )
    meta["description"] = (
        meta["description"].split(" No trained weights are shipped")[0]
        + f" Network preset {model.network_name}, booster: {block}. Trained weights ({mode}: "
        + (
            "every tensor"
            if mode == "full"
            else "trainable tensors; the LLM layer is re-read and checked by sha256"
        )
        + ") are in models/model.pt."
    )
    return meta
