"""Release the zoo: the best-on-validation seed of each boosted results-table arm, as a Hub folder.

Example:
    >>> release_zoo("runs/table", "benchmarks/results/table", "zoo")       # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..hub.folders import is_3d_model, save_pretrained
from ..hub.zoo import ZOO_ARMS, ZOO_MODELS, select_best_seed, zoo_name
from ..timm_vit import default_hub_org
from .package import load_run

__all__ = ["release_zoo"]


def release_zoo(
    runs: str | os.PathLike = "runs/table",
    results: str | os.PathLike = "benchmarks/results/table",
    out: str | os.PathLike = "zoo",
    flags: tuple[str, ...] = tuple(ZOO_MODELS),
) -> list[dict[str, Any]]:
    """Write each zoo member (best seed on val of each boosted arm) to ``out/<name>/`` as delta weights.

    ``runs`` holds the checkpoints (``<flag>/<arm>/seed<k>/best.pt``), ``results`` the committed
    metrics that select the seed. Also writes ``out/index.json`` with every candidate's scores.
    """
    out = Path(out)
    index = []
    for flag in flags:
        for arm in ZOO_ARMS:
            seed, metrics = select_best_seed(results, flag, arm)
            run = Path(runs, flag, arm, f"seed{seed}")
            model, cfg, _ = load_run(run)
            name = zoo_name(flag, arm)
            saved = save_pretrained(
                model,
                out / name,
                weights="delta",
                dataset_flag=flag,
                metrics=metrics,
                train_config=cfg.to_dict(),
                run_dir=run,
                repo_id=f"{default_hub_org}/{name}",
                timm_tag=None if is_3d_model(model) else name,
                model_args=None if is_3d_model(model) else dict(cfg.model_kwargs),
                extra_files=[run / "config.yaml"],
            )
            candidates = {
                p.parent.name: json.loads(p.read_text())["val"]
                for p in sorted(Path(results, flag, arm).glob("seed*/metrics.json"))
            }
            index.append(
                {
                    "name": name,
                    "flag": flag,
                    "arm": arm,
                    "seed": seed,
                    "val_candidates": candidates,
                    "weights": saved["weights"],
                    "weights_bytes": saved["weights_bytes"],
                }
            )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "index.json", json.dumps(index, indent=2) + "\n")
    return index
