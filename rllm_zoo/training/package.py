"""Turn a finished run into a publishable folder, or push it (``rllm-zoo package`` / ``rllm-zoo push``).

Example:
    >>> folder = package_run("runs/demo-retinamnist")                       # doctest: +SKIP
    >>> timm.create_model(f"local-dir:{folder}", pretrained=True)          # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from ..hub import PushResult, push_to_hub, save_pretrained
from .config import TrainConfig
from .run import Run, open_run

__all__ = ["load_run", "package_run", "push_run"]


def _finished(run_dir: str | os.PathLike) -> Run:
    run = Path(run_dir)
    if not (run / "config.yaml").is_file() or not (run / "best.pt").is_file():
        raise FileNotFoundError(
            f"{run} is not a finished rllm-zoo run (needs config.yaml and best.pt); train one with "
            "`rllm-zoo train --out DIR ...`"
        )
    return open_run(run)


def load_run(run_dir: str | os.PathLike) -> tuple[nn.Module, TrainConfig, dict[str, Any] | None]:
    """(model with the run's best weights, its config, its ``metrics.json`` or ``None``)."""
    opened = _finished(run_dir)
    return opened.model, opened.cfg, opened.metrics


#: config / metrics keys that name places on the training machine, never packaged
_LOCAL_KEYS = ("out", "data_root", "device", "workers", "progress")


def _portable(record: dict[str, Any]) -> dict[str, Any]:
    """A config or metrics dict without this machine's paths (own data: its folder name only)."""
    from ..llm.sources import portable_source

    out = {k: v for k, v in record.items() if k not in _LOCAL_KEYS}
    if out.get("data"):
        out["data"] = Path(out["data"]).name
    if isinstance(out.get("llm"), str):
        out["llm"] = portable_source(out["llm"])[0]
    return out


def publish_args(run_dir: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """A finished run's model and the :func:`rllm_zoo.hub.save_pretrained` arguments that describe it
    (task, preprocessing, portable metrics and config, plots): one definition for package and push."""
    run = _finished(run_dir)
    return run.model, dict(
        dataset=run.info,
        preprocessing=run.prep,
        metrics=_portable(run.metrics) if run.metrics else None,
        train_config=_portable(run.cfg.to_dict()),
        run_dir=run_dir,
        model_args=dict(run.cfg.model_kwargs) if not run.info.is_3d else None,
    )


def package_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    weights: str = "auto",
    repo_id: str | None = None,
) -> Path:
    """Write ``<run>/package`` (or ``out``): the run as a Hub repo folder with its model card.

    2D runs give a timm folder (``timm.create_model("local-dir:<folder>", pretrained=True)``);
    3D runs give a MONAI bundle. The folder is assembled in a temporary sibling and renamed
    into place, so a failure never leaves a half-written package.
    """
    model, kwargs = publish_args(run_dir)
    dest = Path(out) if out is not None else Path(run_dir) / "package"
    save_pretrained(model, dest, weights=weights, repo_id=repo_id, **kwargs)
    return dest


def push_run(run_dir: str | os.PathLike, repo_id: str, **kwargs: Any) -> PushResult:
    """Push a finished ``rllm-zoo train`` run: its best checkpoint, metrics, config and plots.

    Example:
        >>> push_run("runs/demo-retinamnist", "me/retina-r-llm", weights="delta")   # doctest: +SKIP
    """
    model, args = publish_args(run_dir)
    return push_to_hub(model, repo_id, **args, **kwargs)
