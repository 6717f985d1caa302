"""The MONAI bundle configs (train, multi-GPU train, evaluate, inference) for a 3D data set.

The data set is a 3D MedMNIST flag or the user's own volumes (a datalist); the preprocessing is the
run's :class:`~rllm_zoo.data.Preprocessing`, written as the same MONAI transforms training ran.

Each function returns a JSON-ready dict; :func:`rllm_zoo.bundles.write_bundle` writes them under ``configs/``.
Every value a user may want to change is a top-level key, overridable on the command line
(``--epochs 3``, ``--dataset_dir DIR``, ``--llm random:smollm2``, ``--use_booster False``...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..data import Preprocessing

#: the network every generated bundle trains (CPU-friendly; the paper's sizes are other presets)
NETWORK = "rllm_vit3d_small"
FROM_PRED_LABEL = "$monai.handlers.from_engine(['pred', 'label'])"


@dataclass(frozen=True)
class DataSpec:
    """What the configs need to know of the data: MedMNIST ``flag`` (or ``None``), classes, preprocessing."""

    flag: str | None
    class_names: tuple[str, ...]
    preprocessing: Preprocessing


def common(spec: DataSpec) -> dict[str, Any]:
    """Keys shared by every config: paths, data set, device and the network."""
    prep = spec.preprocessing
    return {
        "imports": [
            "$import os",
            "$import torch",
            "$import ignite",
            "$import rllm_zoo",
            "$import rllm_zoo.bundles",
            "$import rllm_zoo.monai",
        ],
        "bundle_root": ".",
        "ckpt_dir": "$@bundle_root + '/models'",
        "ckpt_path": "$@ckpt_dir + '/model.pt'",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$os.path.expanduser('~/.medmnist')" if spec.flag else ".",
        "datalist": "" if spec.flag else "$@dataset_dir + '/datalist.json'",
        "input_dir": "",
        "download": False,
        "data_flag": spec.flag,
        "class_names": list(spec.class_names),
        "num_classes": len(spec.class_names),
        "in_channels": prep.channels,
        "image_size": list(prep.size),
        "batch_size": 32,
        "num_workers": 0,
        "seed": 0,
        "amp": False,
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_name": NETWORK,
        "llm": "smollm2",
        "llm_layer": -1,
        "booster": "residual",
        "use_booster": True,
        "network_def": {
            "_target_": "rllm_zoo.monai.create_network",
            "name": "@network_name",
            "in_channels": "@in_channels",
            "img_size": "@image_size",
            "num_classes": "@num_classes",
            "use_booster": "@use_booster",
            "llm": "@llm",
            "llm_layer": "@llm_layer",
            "booster": "@booster",
        },
        "network": "$@network_def.to(@device)",
    }


def _records(split: str, limit_ref: str, files: bool = False) -> str:
    """The records expression (:func:`rllm_zoo.bundles.bundle_records`); ``files``: honour ``input_dir``."""
    return (
        f"$rllm_zoo.bundles.bundle_records(@data_flag, @dataset_dir, {split}, datalist=@datalist, "
        f"input_dir={'@input_dir' if files else repr('')}, class_names=@class_names, download=@download, "
        f"limit={limit_ref})"
    )


def _preprocessing(prep: Preprocessing, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"_target_": "Compose", "transforms": [*prep.monai_transforms(), *(extra or [])]}


def _scored_postprocessing() -> dict[str, Any]:
    """Softmax probabilities in ``pred``, one-hot argmax in ``pred_class``, one-hot ``label``."""
    return {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "CopyItemsd", "keys": "pred", "names": "pred_class"},
            {"_target_": "AsDiscreted", "keys": "pred_class", "argmax": True, "to_onehot": "@num_classes"},
            {"_target_": "AsDiscreted", "keys": "label", "to_onehot": "@num_classes"},
        ],
    }


def _auc() -> dict[str, Any]:
    return {"_target_": "ROCAUC", "output_transform": FROM_PRED_LABEL}


def _acc() -> dict[str, Any]:
    # one-hot prediction vs one-hot label, exact match per sample = plain accuracy
    return {
        "_target_": "ignite.metrics.Accuracy",
        "is_multilabel": True,
        "output_transform": "$monai.handlers.from_engine(['pred_class', 'label'])",
    }


def train(spec: DataSpec) -> dict[str, Any]:
    """train.json: SupervisedTrainer on the train split, model selection on the val split's AUC."""
    cfg = common(spec)
    cfg.update(
        {
            "epochs": 5,
            "val_interval": 1,
            "learning_rate": 0.0003,
            "weight_decay": 0.05,
            "train_limit": 0,
            "val_limit": 0,
            "loss": {"_target_": "torch.nn.CrossEntropyLoss"},
            "optimizer": {
                "_target_": "torch.optim.AdamW",
                "params": "$@network_def.trainable_parameters()",
                "lr": "@learning_rate",
                "weight_decay": "@weight_decay",
            },
            "train": {
                "preprocessing": _preprocessing(
                    spec.preprocessing,
                    [
                        {"_target_": "RandFlipd", "keys": "image", "prob": 0.5, "spatial_axis": 0},
                        {"_target_": "RandFlipd", "keys": "image", "prob": 0.5, "spatial_axis": 1},
                        {"_target_": "RandFlipd", "keys": "image", "prob": 0.5, "spatial_axis": 2},
                        {
                            "_target_": "RandAffined",
                            "keys": "image",
                            "prob": 0.5,
                            "rotate_range": [0.26, 0.26, 0.26],
                            "scale_range": [0.1, 0.1, 0.1],
                            "mode": "bilinear",
                            "padding_mode": "zeros",
                        },
                    ],
                ),
                "dataset": {
                    "_target_": "Dataset",
                    "data": _records("'train'", "@train_limit"),
                    "transform": "@train#preprocessing",
                },
                "dataloader": {
                    "_target_": "DataLoader",
                    "dataset": "@train#dataset",
                    "batch_size": "@batch_size",
                    "shuffle": True,
                    "num_workers": "@num_workers",
                },
                "inferer": {"_target_": "SimpleInferer"},
                "postprocessing": _scored_postprocessing(),
                "key_metric": {"train_acc": _acc()},
                "handlers": [
                    {
                        "_target_": "ValidationHandler",
                        "validator": "@validate#evaluator",
                        "epoch_level": True,
                        "interval": "@val_interval",
                    },
                    {
                        "_target_": "StatsHandler",
                        "tag_name": "train_loss",
                        "output_transform": "$monai.handlers.from_engine(['loss'], first=True)",
                    },
                ],
                "trainer": {
                    "_target_": "SupervisedTrainer",
                    "max_epochs": "@epochs",
                    "device": "@device",
                    "train_data_loader": "@train#dataloader",
                    "network": "@network",
                    "loss_function": "@loss",
                    "optimizer": "@optimizer",
                    "inferer": "@train#inferer",
                    "postprocessing": "@train#postprocessing",
                    "key_train_metric": "@train#key_metric",
                    "train_handlers": "@train#handlers",
                    "amp": "@amp",
                },
            },
            "validate": {
                "preprocessing": _preprocessing(spec.preprocessing),
                "dataset": {
                    "_target_": "Dataset",
                    "data": _records("'val'", "@val_limit"),
                    "transform": "@validate#preprocessing",
                },
                "dataloader": {
                    "_target_": "DataLoader",
                    "dataset": "@validate#dataset",
                    "batch_size": "@batch_size",
                    "shuffle": False,
                    "num_workers": "@num_workers",
                },
                "inferer": {"_target_": "SimpleInferer"},
                "postprocessing": _scored_postprocessing(),
                "key_metric": {"val_auc": _auc()},
                "additional_metrics": {"val_acc": _acc()},
                "handlers": [
                    {"_target_": "StatsHandler", "iteration_log": False},
                    {
                        "_target_": "CheckpointSaver",
                        "save_dir": "@ckpt_dir",
                        "save_dict": {"model": "@network"},
                        "save_key_metric": True,
                        "key_metric_filename": "model.pt",
                    },
                ],
                "evaluator": {
                    "_target_": "SupervisedEvaluator",
                    "device": "@device",
                    "val_data_loader": "@validate#dataloader",
                    "network": "@network",
                    "inferer": "@validate#inferer",
                    "postprocessing": "@validate#postprocessing",
                    "key_val_metric": "@validate#key_metric",
                    "additional_metrics": "@validate#additional_metrics",
                    "val_handlers": "@validate#handlers",
                    "amp": "@amp",
                },
            },
            "initialize": ["$monai.utils.set_determinism(seed=@seed)"],
            "run": ["$@train#trainer.run()"],
        }
    )
    return cfg


def multi_gpu_train() -> dict[str, Any]:
    """multi_gpu_train.json: overrides of train.json for torchrun + DDP + DistributedSampler."""
    return {
        "backend": "nccl",
        "device": "$torch.device('cuda:' + os.environ['LOCAL_RANK']) if torch.cuda.is_available() "
        "else torch.device('cpu')",
        "network": {
            "_target_": "torch.nn.parallel.DistributedDataParallel",
            "module": "$@network_def.to(@device)",
            "device_ids": "$[@device] if @device.type == 'cuda' else None",
        },
        "train#sampler": {
            "_target_": "DistributedSampler",
            "dataset": "@train#dataset",
            "even_divisible": True,
            "shuffle": True,
        },
        "train#dataloader#sampler": "@train#sampler",
        "train#dataloader#shuffle": False,
        "train#trainer#train_handlers": "$@train#handlers[: -1 if dist.get_rank() > 0 else None]",
        "validate#sampler": {
            "_target_": "DistributedSampler",
            "dataset": "@validate#dataset",
            "even_divisible": False,
            "shuffle": False,
        },
        "validate#dataloader#sampler": "@validate#sampler",
        "validate#evaluator#val_handlers": "$None if dist.get_rank() > 0 else @validate#handlers",
        "initialize": [
            "$import torch.distributed as dist",
            "$dist.is_initialized() or dist.init_process_group(backend=@backend)",
            "$torch.cuda.set_device(@device) if torch.cuda.is_available() else None",
            "$monai.utils.set_determinism(seed=@seed)",
        ],
        "run": ["$@train#trainer.run()"],
        "finalize": ["$dist.is_initialized() and dist.destroy_process_group()"],
    }


def _test_set(cfg: dict[str, Any], spec: DataSpec, files: bool) -> None:
    cfg.update(
        {
            "split": "test",
            "limit": 0,
            "preprocessing": _preprocessing(spec.preprocessing),
            "dataset": {
                "_target_": "Dataset",
                "data": _records("@split", "@limit", files=files),
                "transform": "@preprocessing",
            },
            "dataloader": {
                "_target_": "DataLoader",
                "dataset": "@dataset",
                "batch_size": "@batch_size",
                "shuffle": False,
                "num_workers": "@num_workers",
            },
            "inferer": {"_target_": "SimpleInferer"},
        }
    )


def _load_checkpoint() -> dict[str, Any]:
    return {
        "_target_": "CheckpointLoader",
        "load_path": "@ckpt_path",
        "load_dict": {"model": "@network"},
        "map_location": "@device",
    }


def _evaluator(metrics: bool) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "_target_": "SupervisedEvaluator",
        "device": "@device",
        "val_data_loader": "@dataloader",
        "network": "@network",
        "inferer": "@inferer",
        "postprocessing": "@postprocessing",
        "val_handlers": "@handlers",
        "amp": "@amp",
    }
    if metrics:
        ev.update({"key_val_metric": "@key_metric", "additional_metrics": "@additional_metrics"})
    return ev


def evaluate(spec: DataSpec) -> dict[str, Any]:
    """evaluate.json: test-split AUC and accuracy of models/model.pt, written to eval/metrics.json."""
    cfg = common(spec)
    _test_set(cfg, spec, files=False)
    cfg.update(
        {
            "postprocessing": _scored_postprocessing(),
            "key_metric": {"test_auc": _auc()},
            "additional_metrics": {"test_acc": _acc()},
            "handlers": [
                _load_checkpoint(),
                {"_target_": "StatsHandler", "iteration_log": False},
                {
                    "_target_": "rllm_zoo.monai.MetricsJSONSaver",
                    "filepath": "$@output_dir + '/metrics.json'",
                    "extra": {
                        "data_flag": "@data_flag",
                        "split": "@split",
                        "checkpoint": "@ckpt_path",
                        "network": "@network_name",
                        "llm": "@llm",
                        "use_booster": "@use_booster",
                    },
                },
            ],
            "evaluator": _evaluator(metrics=True),
            "initialize": ["$monai.utils.set_determinism(seed=@seed)"],
            "run": ["$@evaluator.run()"],
        }
    )
    return cfg


def inference(spec: DataSpec) -> dict[str, Any]:
    """inference.json: class probabilities of every test volume (or of every volume file under
    ``--input_dir``), written to eval/predictions.csv."""
    cfg = common(spec)
    _test_set(cfg, spec, files=True)
    cfg.update(
        {
            "postprocessing": {
                "_target_": "Compose",
                "transforms": [{"_target_": "Activationsd", "keys": "pred", "softmax": True}],
            },
            "handlers": [
                _load_checkpoint(),
                {"_target_": "StatsHandler", "iteration_log": False},
                {
                    "_target_": "ClassificationSaver",
                    "output_dir": "@output_dir",
                    "filename": "predictions.csv",
                    "batch_transform": "$lambda batch: [{'filename_or_obj': item['id']} for item in batch]",
                    "output_transform": "$monai.handlers.from_engine(['pred'])",
                },
            ],
            "evaluator": _evaluator(metrics=False),
            "initialize": ["$monai.utils.set_determinism(seed=@seed)"],
            "run": ["$@evaluator.run()"],
        }
    )
    return cfg
