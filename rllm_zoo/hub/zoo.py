"""The zoo's pretrained weights: released from the results table, published in one go.

The results table (``benchmarks/results_table.py``) trains every arm with several seeds.
For each *boosted* arm (R-LLM with SmolLM2, the mlp control, R-LLM with a random block) the
seed with the best validation score becomes a zoo member: ``rllm_zoo.training.release_zoo`` writes it as a
repo folder under ``zoo/`` (delta weights: small, and rebuilt from the embedded SmolLM2
with a sha256 check), and :func:`publish_zoo` pushes every member with its own card, in the
weight mode its LLM licence allows. 2D members are timm pretrained tags
(``timm.create_model("rllm_vit_micro_patch4_28.retinamnist_r_llm", pretrained=True)``); 3D
members are MONAI bundles (``rllm_zoo.load_from_hub("rllm-zoo/rllm_vit3d_small.adrenalmnist3d_r_llm")``).

Example:
    >>> publish_zoo("zoo", dry_run=True)[0]["repo_id"]                    # doctest: +SKIP
    'rllm-zoo/rllm_vit3d_small.adrenalmnist3d_mlp'
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..progress import progress as progress_bar
from ..timm_vit import default_hub_org
from .folders import is_3d_model
from .pull import load_from_folder
from .push import push_to_hub

__all__ = ["ZOO_ARMS", "ZOO_MODELS", "publish_zoo", "select_best_seed", "zoo_name"]

#: Boosted arms of the results table that become pretrained tags.
ZOO_ARMS = ("r_llm", "mlp", "r_llm_random")
#: The network each results-table dataset trains.
ZOO_MODELS = {"retinamnist": "rllm_vit_micro_patch4_28", "adrenalmnist3d": "rllm_vit3d_small"}


def zoo_name(flag: str, arm: str) -> str:
    """Repo name (and timm ``name.tag``) of a zoo member, e.g. ``rllm_vit_micro_patch4_28.retinamnist_r_llm``."""
    return f"{ZOO_MODELS[flag]}.{flag}_{arm}"


def select_best_seed(results: str | os.PathLike, flag: str, arm: str) -> tuple[int, dict[str, Any]]:
    """(seed, metrics) of the run with the best validation score (the run's own selection metric).

    Ties go to the lower seed. Test scores are never looked at.
    """
    runs = sorted(Path(results, flag, arm).glob("seed*/metrics.json"))
    if not runs:
        raise FileNotFoundError(
            f"no finished runs in {Path(results, flag, arm)}; run benchmarks/results_table.py --only {flag}"
        )
    scored = []
    for path in runs:
        m = json.loads(path.read_text())
        key = str(m.get("select_metric", "val_auc")).removeprefix("val_")
        value = float(m["val"][key])
        scored.append((-value if key == "loss" else value, -int(m["seed"]), m))
    best = max(scored, key=lambda t: (t[0], t[1]))
    return int(best[2]["seed"]), best[2]


def _member_sizes(model) -> dict[str, int]:
    """Bytes of the weights file in full and in delta mode (written in the repo's format, then measured)."""
    import torch
    from safetensors.torch import save_file

    from .weights import weights_for

    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("full", "delta"):
            # the repo's own file name: torch.save records it inside the archive, so it counts
            path = Path(tmp, mode, "model.pt" if is_3d_model(model) else "model.safetensors")
            path.parent.mkdir()
            if is_3d_model(model):
                torch.save(weights_for(model, mode), path)
            else:
                save_file(weights_for(model, mode), str(path))
            sizes[mode] = path.stat().st_size
    return sizes


def publish_zoo(
    zoo: str | os.PathLike = "zoo",
    *,
    org: str = default_hub_org,
    weights: str = "auto",
    dry_run: bool = False,
    token: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Push every member of ``zoo`` to ``<org>/<name>`` with its card; return one row per member.

    Each member is rebuilt from its folder (delta members re-read their LLM layer and check its
    sha256), then pushed in ``weights`` mode (``auto``: full when the LLM's licence allows).
    Rows give the repo, the mode pushed, the commit, and the weights' size in both modes.
    ``dry_run`` skips the upload (sizes only).
    """
    zoo = Path(zoo)
    members = (
        sorted(p for p in zoo.iterdir() if p.is_dir() and (p / "README.md").is_file()) if zoo.is_dir() else []
    )
    if not members:
        raise FileNotFoundError(
            f"no zoo members in {zoo}; write them with `python benchmarks/zoo_release.py` (after the results table)"
        )
    rows = []
    for folder in progress_bar(members, desc="publish", unit="model", disable=not progress):
        model = load_from_folder(folder)
        metrics = (
            json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else None
        )
        train = (
            yaml.safe_load((folder / "config.yaml").read_text())
            if (folder / "config.yaml").is_file()
            else None
        )
        flag = (metrics or {}).get("flag") or (train or {}).get("flag")
        row: dict[str, Any] = {
            "name": folder.name,
            "repo_id": f"{org}/{folder.name}",
            "flag": flag,
            **{f"{k}_bytes": v for k, v in _member_sizes(model).items()},
        }
        if not dry_run:
            res = push_to_hub(
                model,
                row["repo_id"],
                weights=weights,
                dataset_flag=flag,
                metrics=metrics,
                train_config=train,
                run_dir=folder,
                timm_tag=None if is_3d_model(model) else folder.name,
                extra_files=[folder / "config.yaml"] if (folder / "config.yaml").is_file() else (),
                token=token,
            )
            row.update(weights=res.weights, commit=res.commit, url=res.url)
        rows.append(row)
    return rows
