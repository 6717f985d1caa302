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
from .cards import render_model_card
from .weights import llm_reference, rebuild_args, resolve_weights_mode, weights_for

__all__ = ["PLOT_FILES", "is_3d_model", "save_pretrained"]

#: Run outputs embedded in cards and uploaded with the weights.
PLOT_FILES = ("curves.png", "roc.png")
_WEIGHTS_META = "rllm_zoo.weights"


def is_3d_model(model: nn.Module) -> bool:
    """True for rllm_zoo.monai networks (published as MONAI bundles)."""
    from ..monai import BoostedNetwork

    return isinstance(model, BoostedNetwork)


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
            f"{type(model).__name__} is not an rllm_zoo model: push a timm 'rllm_*' model "
            "(timm.create_model) or an rllm_zoo.monai network (create_network)"
        )


def _vit_description(model: nn.Module) -> tuple[str, str, tuple[int, ...]]:
    """(architecture name, one-line encoder description, spatial input shape)."""
    if is_3d_model(model):
        shape = tuple(int(s) for s in model.img_size)
        desc = (
            f"MONAI {type(model).__name__}, width {model.hidden_size}, {len(model.blocks)} blocks, "
            f"{'×'.join(map(str, model.patch_size))} patches"
        )
        return model.network_name, desc, shape
    pe = model.patch_embed
    shape = tuple(int(s) for s in pe.img_size)
    desc = (
        f"timm VisionTransformer, width {model.embed_dim}, depth {len(model.blocks)}, "
        f"{model.blocks[0].attn.num_heads} heads, {pe.patch_size[0]} px patches"
    )
    return model.pretrained_cfg.get("architecture", type(model).__name__), desc, shape


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
        model: a timm ``rllm_*`` model or an ``rllm_zoo.monai`` network (from ``create_network``).
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
        if is_3d_model(model):
            weights_file = _write_bundle(model, tmp, mode, dataset, preprocessing, metrics)
        else:
            weights_file = _write_timm(model, tmp, mode, dataset, preprocessing, model_args or {})
        arch, desc, shape = _vit_description(model)
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

    from ..data import Preprocessing
    from ..timm_vit import booster_args

    if prep is None:
        prep = Preprocessing.from_timm(model.pretrained_cfg)
    if prep.spatial_dims != 2 or prep.channels != model.patch_embed.proj.in_channels:
        raise ValueError(f"preprocessing {prep.to_dict()} does not fit this 2D model's input")
    # the run's preprocessing, as timm data config: resolve_data_config + create_transform reproduce it
    model.pretrained_cfg = {**model.pretrained_cfg, **prep.timm_data_config()}

    pinned = ("llm_revision", "llm_sha256", "llm_config", "llm_license", "llm_width")
    args = {k: v for k, v in booster_args(model).items() if v is not None and k not in pinned}
    # explicit None: timm would otherwise keep the factory's recorded values (e.g. a previous llm_config)
    args.update(dict.fromkeys(pinned), **rebuild_args(model, mode))
    pe = model.patch_embed
    args.update(in_chans=pe.proj.in_channels, img_size=int(pe.img_size[0]), **model_args)
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
