"""Model cards for published boosted models, rendered from the templates in ``hub_cards/``.

The card is built from the run's own files (``metrics.json``, ``config.yaml``, plots) through
``huggingface_hub.ModelCard.from_template``: YAML metadata (library, tags, licence, datasets,
base model, ``model-index`` when metrics exist) and a body saying what the model is, how it
was trained, how it scored and how to load it.

Example:
    >>> card = render_model_card(model, repo_id="me/retina-r-llm", metrics=metrics)   # doctest: +SKIP
    >>> card.data.library_name                                                         # doctest: +SKIP
    'timm'
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from torch import nn

from ..booster import parameter_counts
from ..environment import describe
from ..llm.sources import LLM_PATH_ENV
from .weights import llm_reference

__all__ = ["BACKBONE_CARD", "CARD_TEMPLATE", "MEDMNIST_DATASET", "render_model_card", "template_path"]

CARD_TEMPLATE = "model_card.md"
#: The card of backbones boosted by rllm_zoo.boost (timm ``r_llm_boost``, boosted MONAI networks).
BACKBONE_CARD = "backbone_card.md"
#: The MedMNIST v2 dataset on the Hub (for cards' ``datasets`` metadata).
MEDMNIST_DATASET = "albertvillanova/medmnist-v2"
PROJECT_URL = "https://github.com/rllm-zoo/rllm_zoo"
_LLM_CITATIONS = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": """@misc{allal2025smollm2,
  title  = {SmolLM2: When Smol Goes Big -- Data-Centric Training of a Small Language Model},
  author = {Allal, Loubna Ben and others},
  year   = {2025},
  eprint = {2502.02737},
  archivePrefix = {arXiv}
}""",
}


def template_path(name: str = CARD_TEMPLATE) -> Path:
    """Path of a card template shipped with rllm_zoo (``hub_cards/`` in the source tree)."""
    path = Path(str(importlib.resources.files("rllm_zoo.hub_cards") / name))
    if not path.is_file():
        raise FileNotFoundError(f"card template {name!r} not found at {path}; reinstall rllm_zoo")
    return path


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * float(x):.2f}"


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"


def _local_kind(name: str) -> str:
    """``"GGUF file"`` or ``"model folder"``: what a local LLM source of that base name is."""
    return "GGUF file" if name.endswith(".gguf") else "model folder"


def _dataset(flag: str | None) -> tuple[str, list[str], int | None, bool]:
    """(python class name, class labels, channels, is 3D) of a MedMNIST flag."""
    if not flag:
        return "MedMNIST", [], None, False
    import medmnist

    info = medmnist.INFO[flag]
    labels = [v for _, v in sorted(info["label"].items(), key=lambda kv: int(kv[0]))]
    return info["python_class"], labels, info["n_channels"], flag.endswith("3d")


def render_model_card(
    model: nn.Module,
    *,
    repo_id: str,
    weights_mode: str,
    architecture: str,
    vit_description: str,
    input_shape: tuple[int, ...],
    dataset_flag: str | None = None,
    metrics: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    plots: list[str] = (),
    bundle_name: str | None = None,
    timm_tag: str | None = None,
    revision: str | None = None,
    license: str = "apache-2.0",
    template: str | Path | None = None,
    summary: str | None = None,
    context: dict[str, Any] | None = None,
) -> ModelCard:
    """Render the model card of a boosted model (see the module docstring).

    Args:
        model: the trained timm model or MONAI network.
        repo_id: the Hub repo the card is for (its snippets load from there).
        weights_mode: ``"full"`` or ``"delta"``.
        architecture: timm model name or MONAI preset name.
        vit_description: one line on the encoder (width, depth, patches).
        input_shape: spatial input shape, e.g. ``(28, 28)`` or ``(28, 28, 28)``.
        dataset_flag: the MedMNIST flag trained on.
        metrics: a run's ``metrics.json`` (``val`` / ``test`` dicts with ``acc`` and ``auc``).
        train_config: a run's resolved ``config.yaml`` as a dict.
        plots: file names in the repo to embed (training curves, ROC).
        bundle_name: for 3D models, the bundle name MONAI downloads it under.
        timm_tag: the ``name.tag`` a zoo tag is also reachable by.
        revision: the revision the snippets pin, if any.
        license: licence of the repo's content.
        template: another template file, or the name of one shipped in ``hub_cards/`` (default:
            ``model_card.md``).
        summary: the card's first sentence (default: built from the dataset).
        context: more template variables (they override the computed ones); ``library_name``,
            ``pipeline_tag`` and ``tags`` there also set the card's metadata.
    """
    ref = llm_reference(model)
    booster = getattr(model, "booster", None)
    name, labels, n_channels, is_3d = _dataset(dataset_flag)
    trainable, frozen = parameter_counts(model)
    llm = None
    base_model = None
    if ref and ref.get("source"):
        base_model = ref.get("hub_id")
        label = ref["source"]
        file_name = ref["source"].removeprefix("random:")
        if ref.get("random_init"):
            label = f"a randomly initialised layer with the architecture of `{file_name}`"
        elif base_model:
            label = f"[{base_model}](https://huggingface.co/{base_model})"
        elif ref.get("local_file"):
            label = f"`{file_name}` (a local {_local_kind(file_name)}, see below)"
        llm = {**ref, "source_label": label, "file_name": file_name, "local_kind": _local_kind(file_name)}
    if booster is None:
        booster_description = "none: the plain ViT baseline"
    elif ref and ref.get("source") is None:
        booster_description = f"`mlp` control: the two adapters (width {ref['width']}) without any LLM layer"
    else:
        booster_description = f"`{booster.variant}`" + (" (R-LLM)" if booster.variant == "residual" else "")
    metric_rows = []
    eval_results = []
    results_note = None
    if metrics:
        for split in ("val", "test"):
            m = metrics.get(split) or {}
            if m:
                metric_rows.append({"split": split, "acc": _pct(m.get("acc")), "auc": _pct(m.get("auc"))})
        test = metrics.get("test") or {}
        for key, mtype, mname in (("acc", "accuracy", "ACC"), ("auc", "roc_auc", "AUC")):
            if test.get(key) is not None:
                eval_results.append(
                    EvalResult(
                        task_type="image-classification",
                        dataset_type=MEDMNIST_DATASET,
                        dataset_name=f"{name} (MedMNIST v3)",
                        dataset_config=dataset_flag,
                        dataset_split="test",
                        metric_type=mtype,
                        metric_name=mname,
                        metric_value=round(100 * float(test[key]), 2),
                    )
                )
        results_note = metrics.get("note")
    tags = ["image-classification", "medical", "medmnist", "r-llm", "vision-transformer"]
    tags += ["monai", "3d"] if is_3d else ["timm"]
    if dataset_flag:
        tags.append(dataset_flag)
    context = dict(context or {})
    data = ModelCardData(
        library_name=context.pop("library_name", "monai" if is_3d else "timm"),
        pipeline_tag=context.pop("pipeline_tag", "image-classification"),
        license=license,
        tags=context.pop("tags", tags),
        datasets=[MEDMNIST_DATASET] if dataset_flag else None,
        base_model=base_model,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
    )
    weights_description = (
        "every tensor, the frozen LLM layer included (self-contained)"
        if weights_mode == "full"
        else "the trainable tensors only; the LLM layer is re-read from its source and checked by sha256"
    )
    channels = n_channels or (model.in_channels if hasattr(model, "in_channels") else 3)
    kwargs = dict(
        title=f"{repo_id.split('/')[-1]}",
        summary=(
            f"An R-LLM boosted {'3D ' if is_3d else ''}vision transformer for {name}"
            + (f" ({', '.join(labels[:6])}{', ...' if len(labels) > 6 else ''})" if labels else "")
            + "."
        ),
        family_label="MONAI bundle" if is_3d else "timm model",
        project_url=PROJECT_URL,
        architecture=architecture,
        vit_description=vit_description,
        booster_description=booster_description,
        llm=llm,
        params_trainable=_count(trainable),
        params_frozen=_count(frozen),
        weights_mode=weights_mode,
        weights_description=weights_description,
        input_description=f"{channels}-channel {'×'.join(map(str, input_shape))} {'volume' if is_3d else 'image'}",
        classes=", ".join(f"{i}: {c}" for i, c in enumerate(labels)) or "see config",
        train=train_config,
        dataset_name=name,
        dataset_flag=dataset_flag,
        is_3d=is_3d,
        select_metric=(metrics or {}).get("select_metric", "validation metric"),
        selected_epoch=(metrics or {}).get("selected_epoch", "?"),
        trained_with=describe((metrics or {})["environment"]) if (metrics or {}).get("environment") else None,
        metrics=metric_rows,
        results_note=results_note,
        plots=[{"path": p, "alt": Path(p).stem.replace("_", " ")} for p in plots],
        repo_id=repo_id,
        revision=revision,
        bundle_name=bundle_name or repo_id.split("/")[-1],
        in_chans=channels,
        input_shape=", ".join(map(str, input_shape)),
        timm_tag=timm_tag,
        license=license,
        llm_citation=_LLM_CITATIONS.get(base_model or ""),
        llm_path_env=LLM_PATH_ENV,
    )
    if summary is not None:
        kwargs["summary"] = summary
    kwargs.update(context)
    if template is None:
        path = template_path()
    elif Path(template).is_file():
        path = Path(template)
    else:
        path = template_path(str(template))
    return ModelCard.from_template(data, template_str=path.read_text(encoding="utf-8"), **kwargs)
