"""A run folder's records: the resolved config, the task, the preprocessing, the data to read back.

A run folder holds ``config.yaml`` (the resolved :class:`TrainConfig`), ``dataset.json`` (the task:
classes, channels, 2D/3D), ``preprocessing.json`` (:class:`~rllm_zoo.data.Preprocessing`) and, for
own data, its file list (``splits.csv`` or ``datalist.json``). Everything that uses a trained run
(``eval``, ``cam``, ``predict``, ``package``, ``push``) reads them through :func:`open_run`.

Example:
    >>> run = open_run("runs/retina")                                   # doctest: +SKIP
    >>> run.info.class_names, run.prep.size                             # doctest: +SKIP
    (('0', '1', '2', '3', '4'), (28, 28))
    >>> scores = run.model(x)                                           # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..data import (
    DATASET_FILE,
    PREPROCESSING_FILE,
    DatasetInfo,
    FileData,
    MedMNISTData,
    Preprocessing,
    RunData,
    dataset_info,
    medmnist_preprocessing,
    open_data,
    scan,
)
from .config import TrainConfig, intensity_range, load_config
from .models import DEFAULT_MODELS, build_model, input_norm

__all__ = ["DEFAULT_MODELS", "Run", "open_run", "open_training_data", "resolve_config", "run_preprocessing"]


def _default_size(model: str, is_3d: bool) -> int:
    if is_3d:
        from ..monai import preset_config

        size = preset_config(model)["args"].get("img_size", 28)
        return int(size[0] if isinstance(size, (list, tuple)) else size)
    import timm

    cfg = timm.models.get_pretrained_cfg(model.split(".")[0]) if timm.is_model(model) else None
    return int(cfg.input_size[-1]) if cfg is not None else 224


def open_training_data(cfg: TrainConfig, download: bool | None = None) -> RunData:
    """The data ``cfg`` names (scanned and checked; nothing is read yet)."""
    if cfg.flag is None and cfg.data is None:
        raise ValueError("no data: pass --flag <MedMNIST set> or --data <folder | CSV | datalist JSON>")
    return open_data(
        cfg.flag,
        cfg.data,
        data_root=cfg.data_root,
        size=cfg.size or 28,
        download=cfg.download if download is None else download,
        split=cfg.split,
        seed=cfg.split_seed,
    )


def resolve_config(cfg: TrainConfig, data: RunData) -> TrainConfig:
    """``cfg`` with what the data decides filled in: model, size, data root / absolute data path."""
    info = data.info
    values = cfg.to_dict()
    values["model"] = cfg.model or DEFAULT_MODELS[info.is_3d]
    if isinstance(data, MedMNISTData):
        values["size"], values["data_root"] = data.size, data.root
    else:
        values["data"] = str(Path(cfg.data).expanduser().resolve())
        values["size"] = cfg.size or _default_size(values["model"], info.is_3d)
    if not info.is_3d and cfg.intensity != "auto":
        raise ValueError("intensity applies to 3D volumes; 2D images are read as 8-bit")
    return TrainConfig(**values).validate()


def run_preprocessing(cfg: TrainConfig, info: DatasetInfo, model: nn.Module) -> Preprocessing:
    """The preprocessing a run trains with (and everything after it uses)."""
    size = int(cfg.size or 28)
    if info.flag is not None:
        mean, std = input_norm(model) if not info.is_3d else ((0.5,), (0.5,))
        return medmnist_preprocessing(info.flag, size, mean, std)
    if info.is_3d:
        window = intensity_range(cfg.intensity)
        return Preprocessing(3, (size,) * 3, info.n_channels, intensity=None if window == "auto" else window)
    mean, std = input_norm(model)
    return Preprocessing(2, (size, size), info.n_channels, mean=mean, std=std)


@dataclass
class Run:
    """A trained run, read back: its folder, config, task, preprocessing, model and metrics."""

    path: Path
    cfg: TrainConfig
    info: DatasetInfo
    prep: Preprocessing
    model: nn.Module | None
    metrics: dict[str, Any] | None

    def data(self) -> RunData:
        """The run's data again: the recorded file list (own data) or the MedMNIST flag."""
        if self.info.flag is not None:
            return MedMNISTData(self.info.flag, self.cfg.data_root, int(self.cfg.size or 28))
        for name in ("splits.csv", "datalist.json"):
            if (self.path / name).is_file():
                return FileData(scan(self.path / name, classes=self.info.class_names))
        raise FileNotFoundError(
            f"{self.path} has no splits.csv or datalist.json; the run's file list is missing"
        )


def open_run(run_dir: str | os.PathLike, checkpoint: str | None = "best") -> Run:
    """Read a run folder; with ``checkpoint`` (``best`` / ``last``) the model gets those weights."""
    from .checkpoint import load_checkpoint, load_weights

    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run} is not a run folder (no config.yaml); pass the --out of a train run")
    cfg = load_config(run / "config.yaml")
    if (run / DATASET_FILE).is_file():
        info = DatasetInfo.from_dict(json.loads((run / DATASET_FILE).read_text(encoding="utf-8"))["info"])
    elif cfg.flag is not None:  # runs from before dataset.json: MedMNIST only
        info = dataset_info(cfg.flag)
    else:
        raise FileNotFoundError(f"{run / DATASET_FILE} is missing; the run's task is unknown")
    if cfg.model is None:
        cfg.model = DEFAULT_MODELS[info.is_3d]
    model = None
    if checkpoint is not None:
        path = run / f"{checkpoint}.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found; a finished run has best.pt and last.pt (train one with `rllm-zoo train`)"
            )
        model = build_model(cfg, info)
        load_weights(model, load_checkpoint(path))
        model.eval()
    if (run / PREPROCESSING_FILE).is_file():
        prep = Preprocessing.load(run / PREPROCESSING_FILE)
    else:  # runs from before preprocessing.json: derive it as training did
        prep = run_preprocessing(cfg, info, model if model is not None else build_model(cfg, info))
    metrics_file = run / "metrics.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else None
    return Run(run, cfg, info, prep, model, metrics)
