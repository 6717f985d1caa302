"""Push a boosted model to a Hugging Face Hub repo (a training run: ``rllm_zoo.training.push_run``).

Example:
    >>> import timm, rllm_zoo
    >>> model = timm.create_model("rllm_vit_micro_patch4_28", num_classes=5)   # doctest: +SKIP
    >>> rllm_zoo.push_to_hub(model, "me/retina-r-llm", dataset_flag="retinamnist")  # doctest: +SKIP
    PushResult(repo_id='me/retina-r-llm', commit='…', weights='full', ...)
    >>> rllm_zoo.push_run("runs/retina", "me/retina-r-llm")                    # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..data import DatasetInfo, Preprocessing
from .errors import hub_errors
from .folders import is_3d_model, save_pretrained

__all__ = ["PushResult", "push_to_hub"]


@dataclass
class PushResult:
    """What a push produced: the repo, the commit, the weight mode and the files' sizes."""

    repo_id: str
    commit: str
    url: str
    weights: str
    weights_bytes: int
    files: dict[str, int] = field(default_factory=dict)
    tag: str | None = None


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    weights: str = "auto",
    dataset_flag: str | None = None,
    metrics: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    run_dir: str | os.PathLike | None = None,
    model_args: dict[str, Any] | None = None,
    timm_tag: str | None = None,
    extra_files: Sequence[str | os.PathLike] = (),
    dataset: DatasetInfo | None = None,
    preprocessing: Preprocessing | None = None,
    tag: str | None = None,
    revision: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
) -> PushResult:
    """Upload ``model`` to ``repo_id`` (created if needed) with a model card; return the commit.

    2D timm models become timm repos (``timm.create_model("hf-hub:<repo>", pretrained=True)``);
    3D rllm_zoo.monai networks become MONAI bundles (``monai.bundle.download(...,
    source="huggingface_hub", repo=<repo>)``), tagged with the bundle version so MONAI finds it.

    Args:
        model: the trained model.
        repo_id: ``"org/name"``.
        weights: ``"auto"`` (full unless the LLM's licence forbids redistribution), ``"full"``
            (self-contained) or ``"delta"`` (trainable weights + a sha256-checked LLM reference).
        dataset_flag, metrics, train_config, run_dir, model_args, timm_tag, extra_files, dataset,
            preprocessing: see :func:`rllm_zoo.hub.save_pretrained` (card content, labels, plots,
            the run's preprocessing).
        tag: a git tag to put on the new commit (3D: default the bundle version).
        revision: branch to commit to (default ``main``).
        private: create the repo private.
        commit_message: default ``"Upload <architecture> (<weights> weights)"``.
        token: Hub token (default: the logged-in one / ``HF_TOKEN``).
    """
    from huggingface_hub import HfApi

    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="rllm_zoo_push_") as tmp:
        folder = Path(tmp) / repo_id.split("/")[-1]
        saved = save_pretrained(
            model,
            folder,
            weights=weights,
            dataset_flag=dataset_flag,
            metrics=metrics,
            train_config=train_config,
            run_dir=run_dir,
            repo_id=repo_id,
            timm_tag=timm_tag,
            model_args=model_args,
            extra_files=extra_files,
            dataset=dataset,
            preprocessing=preprocessing,
        )
        if tag is None and is_3d_model(model):
            from ..bundles import BUNDLE_VERSION

            tag = BUNDLE_VERSION
        message = (
            commit_message or f"Upload {type(model).__name__} ({saved['weights']} weights) with rllm_zoo"
        )
        with hub_errors(repo_id, "pushing to", revision):
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision and revision != "main":
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=folder, revision=revision, commit_message=message
            )
            commit = info.oid
            if tag:
                refs = api.list_repo_refs(repo_id)
                if any(t.name == tag for t in refs.tags):
                    api.delete_tag(repo_id, tag=tag)  # the version now names this commit
                api.create_tag(repo_id, tag=tag, revision=commit)
    return PushResult(
        repo_id=repo_id,
        commit=commit,
        url=str(info.commit_url),
        weights=saved["weights"],
        weights_bytes=saved["weights_bytes"],
        files=saved["files"],
        tag=tag,
    )
