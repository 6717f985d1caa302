"""``rllm-zoo predict``: class probabilities for your files, from any trained model.

MODEL is a run folder (``rllm-zoo train --out``), a packaged folder (``rllm-zoo package``: a timm
folder for 2D, a MONAI bundle for 3D), ``hf-hub:<repo>`` or a Hub repo id (``org/name[@rev]``).
Its recorded preprocessing (``preprocessing.json``, a package's ``config.json`` or a bundle's
``metadata.json``) is applied, so predictions equal the run's own (``test_predictions.npz``).

INPUTS are image or volume files, folders of them (searched recursively), or a CSV
(``path[,label][,split]``) or datalist JSON; ``split`` keeps only that split of a CSV / datalist.

Example:
    >>> predictor = load_predictor("runs/retina")                                  # doctest: +SKIP
    >>> rows = predict_files(predictor, ["scan1.png", "scan2.png"])                # doctest: +SKIP
    >>> rows.scores.shape                                                          # doctest: +SKIP
    (2, 5)
    >>> predict("runs/retina", ["my_images/"], out="predictions.csv", cam="cams/")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import IMAGE_SUFFIXES, DataError, DatasetInfo, ImageFiles, Preprocessing, cached_volumes, file_kind
from .data.own import label_text
from .monai.io import VOLUME_SUFFIXES

__all__ = [
    "Predictions",
    "Predictor",
    "list_inputs",
    "load_predictor",
    "predict",
    "predict_files",
    "predict_inputs_tensor",
]


@dataclass
class Predictor:
    """A model with what it needs to read inputs: preprocessing, classes, task."""

    model: nn.Module
    prep: Preprocessing
    info: DatasetInfo
    source: str


@dataclass
class Predictions:
    """Files, their labels (``None`` when unknown) and class probabilities ``(N, K)``."""

    paths: list[str]
    labels: list[int | None]
    scores: np.ndarray


def _info(class_names: list[str], task: str | None, is_3d: bool, channels: int, name: str) -> DatasetInfo:
    k = len(class_names)
    return DatasetInfo(
        flag=None,
        is_3d=is_3d,
        task=task or ("binary-class" if k == 2 else "multi-class"),
        n_channels=channels,
        n_classes=k,
        class_names=tuple(class_names),
        license=None,
        name=name,
    )


def _from_timm(model: nn.Module, config: dict[str, Any], name: str) -> Predictor:
    section = config.get("rllm_zoo") or {}
    prep = (
        Preprocessing.from_dict(section["preprocessing"])
        if section.get("preprocessing")
        else Preprocessing.from_timm(model.pretrained_cfg)
    )
    names = config.get("label_names") or model.pretrained_cfg.get("label_names")
    names = list(names) if names else [str(i) for i in range(model.num_classes)]
    return Predictor(model.eval(), prep, _info(names, section.get("task"), False, prep.channels, name), name)


def _from_bundle(model: nn.Module, name: str) -> Predictor:
    from .bundles.writer import PREPROCESSING_KEY
    from .data import medmnist_preprocessing

    meta = getattr(model, "bundle_metadata", None) or {}
    if PREPROCESSING_KEY in meta:
        prep = Preprocessing.from_dict(meta[PREPROCESSING_KEY])
    else:  # bundles from before the record: the MedMNIST scaling at the network's size
        prep = medmnist_preprocessing("adrenalmnist3d", int(model.img_size[0]))
    out = meta.get("network_data_format", {}).get("outputs", {}).get("pred", {})
    channel_def = out.get("channel_def") or {}
    names = [channel_def[k] for k in sorted(channel_def, key=int)] or [
        str(i) for i in range(model.num_classes)
    ]
    return Predictor(model.eval(), prep, _info(names, None, True, prep.channels, name), name)


def load_predictor(model: str | os.PathLike) -> Predictor:
    """A :class:`Predictor` for a run folder, a packaged folder, ``hf-hub:<repo>`` or a Hub repo id."""
    from .hub import load_from_folder, load_from_hub

    ref = str(model)
    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / "config.yaml").is_file():
            from .training.run import open_run

            run = open_run(path)
            return Predictor(run.model, run.prep, run.info, str(path))
        net = load_from_folder(path)
        if (path / "configs" / "metadata.json").is_file():
            return _from_bundle(net, path.name)
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        return _from_timm(net, config, path.name)
    repo = ref.removeprefix("hf-hub:")
    if ref.startswith(("/", ".", "~")) or repo.count("/") != 1:
        raise FileNotFoundError(
            f"{ref}: not a folder, nor a Hub repo id; MODEL is a run folder, a packaged folder, "
            "hf-hub:<org/name> or org/name"
        )
    net = load_from_hub(repo)
    if getattr(net, "bundle_metadata", None) is not None:
        return _from_bundle(net, repo)
    from huggingface_hub import hf_hub_download

    repo_id, _, revision = repo.partition("@")
    config = json.loads(Path(hf_hub_download(repo_id, "config.json", revision=revision or None)).read_text())
    return _from_timm(net, config, repo)


def _table_inputs(path: Path, split: str | None) -> list[tuple[str, str | None]]:
    rows: list[tuple[str, str | None]] = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if "path" not in [c.strip() for c in reader.fieldnames or []]:
                raise DataError(f"{path}: missing column 'path'; a CSV of inputs needs a header with path")
            for r in reader:
                r = {(k or "").strip(): (v or "").strip() for k, v in r.items()}
                if split and (r.get("split") or "").lower() not in (
                    split,
                    {"val": "validation"}.get(split, split),
                ):
                    continue
                rows.append((str((path.parent / r["path"]).resolve()), r.get("label") or None))
        return rows
    from monai.data import load_decathlon_datalist

    data = json.loads(path.read_text(encoding="utf-8"))
    keys = {"train": "training", "val": "validation", "test": "test"}
    for key in (
        [keys.get(split, split)] if split else [k for k in ("training", "validation", "test") if k in data]
    ):
        if key not in data:
            raise DataError(f"{path}: no {key!r} list in this datalist")
        for item in load_decathlon_datalist(str(path), is_segmentation=False, data_list_key=key):
            label = item.get("label")
            rows.append(
                (str(Path(item["image"]).resolve()), None if label is None else label_text(label, str(path)))
            )
    return rows


def list_inputs(inputs: list[str], is_3d: bool, split: str | None = None) -> list[tuple[str, str | None]]:
    """``(path, label name or None)`` for every input file, folders searched recursively."""
    suffixes = VOLUME_SUFFIXES if is_3d else IMAGE_SUFFIXES
    kind = "volume" if is_3d else "image"
    rows: list[tuple[str, str | None]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))
            if not found:
                raise DataError(f"{path}: no {kind} files ({', '.join(suffixes)}) in this folder")
            rows += [(str(p.resolve()), None) for p in found]
        elif path.is_file() and path.suffix.lower() in (".csv", ".json"):
            rows += _table_inputs(path, split)
        elif path.is_file():
            if file_kind(path.name) != kind:
                raise DataError(
                    f"{path}: not a{'' if is_3d else 'n'} {kind} file ({', '.join(suffixes)}); this model takes {kind}s"
                )
            rows.append((str(path.resolve()), None))
        else:
            raise DataError(f"{path}: no such file or folder")
    if not rows:
        raise DataError("no input files" + (f" in split {split!r}" if split else ""))
    return rows


def predict_files(
    predictor: Predictor, paths: list[str], labels: list[int | None] | None = None, batch_size: int = 256
) -> Predictions:
    """Class probabilities of ``paths`` (read through the predictor's preprocessing)."""
    from .training.evaluation import probabilities

    labels = labels if labels is not None else [None] * len(paths)
    fill = [0 if v is None else v for v in labels]
    if predictor.info.is_3d:
        records = [{"image": p, "label": y, "id": p} for p, y in zip(paths, fill)]
        ds = cached_volumes(records, predictor.prep, what="inputs", progress=False)
    else:
        ds = ImageFiles(paths, fill, predictor.prep, what="inputs", progress=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size)
    model = predictor.model.eval()
    device = next(iter(model.parameters())).device
    scores = []
    with torch.no_grad():
        for x, _ in loader:
            scores.append(probabilities(predictor.info, model(x.to(device)).float()).cpu().numpy())
    return Predictions(list(paths), list(labels), np.concatenate(scores))


def _csv_text(pred: Predictions, class_names: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    with_labels = any(v is not None for v in pred.labels)
    w.writerow(
        ["path", "predicted", *(["label"] if with_labels else []), *[f"prob_{c}" for c in class_names]]
    )
    for path, label, row in zip(pred.paths, pred.labels, pred.scores):
        truth = ([class_names[label] if label is not None else ""]) if with_labels else []
        probs = [f"{v:.9g}" for v in row]  # 9 significant digits: float32 round-trips exactly
        w.writerow([path, class_names[int(row.argmax())], *truth, *probs])
    return buf.getvalue()


def _cams(predictor: Predictor, pred: Predictions, folder: Path) -> list[Path]:
    from .cam import grad_cam, save_overlays

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (path, row) in enumerate(zip(pred.paths, pred.scores)):
        one = predict_inputs_tensor(predictor, path)
        maps = grad_cam(predictor.model, one)
        name = f"{i:04d}_{Path(path).name.split('.')[0]}_cam.png"  # numbered: names repeat across folders
        title = f"{Path(path).name[:24]}: {predictor.info.class_names[int(row.argmax())]} ({row.max():.2f})"
        written.append(save_overlays(one, maps, folder / name, [title]))
    return written


def predict_inputs_tensor(predictor: Predictor, path: str) -> torch.Tensor:
    """One file as the model's input batch ``(1, C, *size)``."""
    if predictor.info.is_3d:
        return cached_volumes([{"image": path, "label": 0}], predictor.prep, progress=False)[0][0][None]
    return ImageFiles([path], [0], predictor.prep, progress=False)[0][0][None]


def predict(
    model: str | os.PathLike,
    inputs: list[str],
    out: str | os.PathLike = "predictions.csv",
    *,
    split: str | None = None,
    cam: str | os.PathLike | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Predict ``inputs`` with ``model``; write the CSV ``out`` (and Grad-CAM PNGs into ``cam``).

    Returns a summary: the number of files, the output paths and, when the inputs carry labels of
    every class, ACC and AUC (``medmnist``'s evaluator functions).
    """
    from .atomic import atomic_write_text

    predictor = load_predictor(model)
    rows = list_inputs(inputs, predictor.info.is_3d, split)
    index = {c: i for i, c in enumerate(predictor.info.class_names)}
    labels: list[int | None] = []
    for path, name in rows:
        if name is not None and name not in index:
            raise DataError(f"{path}: label {name!r} is not among the model's classes ({', '.join(index)})")
        labels.append(None if name is None else index[name])
    pred = predict_files(predictor, [p for p, _ in rows], labels, batch_size)
    atomic_write_text(out, _csv_text(pred, predictor.info.class_names))
    summary: dict[str, Any] = {"model": predictor.source, "files": len(rows), "out": str(out)}
    known = [v for v in labels if v is not None]
    if len(known) == len(labels) and len(set(known)) == predictor.info.n_classes:
        from medmnist.evaluator import getACC, getAUC

        y = np.array(known).reshape(-1, 1)
        summary["auc"] = float(getAUC(y, pred.scores, predictor.info.task))
        summary["acc"] = float(getACC(y, pred.scores, predictor.info.task))
    if cam is not None:
        summary["cam"] = [str(p) for p in _cams(predictor, pred, Path(cam))]
    return summary
