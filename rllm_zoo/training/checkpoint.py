"""Run checkpoints: trainable weights only (the frozen LLM block is re-read from its source),
written atomically and read back with ``weights_only=True``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "frozen_names",
    "llm_fingerprint",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
    "trainable_state",
]


def frozen_names(model: nn.Module) -> set[str]:
    """State-dict names of frozen parameters (the LLM block): not stored in checkpoints."""
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without frozen parameters (buffers are kept)."""
    skip = frozen_names(model)
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in skip}


def llm_fingerprint(model: nn.Module) -> str | None:
    """sha256 of the booster's LLM block, if the model has one."""
    for m in model.modules():
        info = getattr(m, "info", None)
        if info is not None and getattr(info, "sha256", None):
            return info.sha256
    return None


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a run checkpoint; only tensors and plain containers are accepted."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_weights(model: nn.Module, ckpt: dict[str, Any]) -> None:
    """Load checkpoint weights into ``model``, checking the LLM block is the one trained with."""
    expected = ckpt.get("llm_sha256")
    have = llm_fingerprint(model)
    if expected and have and expected != have:
        raise ValueError(
            f"this checkpoint was trained with an LLM block of sha256 {expected[:12]}..., but the model "
            f"was built with {have[:12]}...; build it with the same llm / llm_layer / revision"
        )
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    bad = [k for k in missing if k not in frozen_names(model)]
    if bad or unexpected:
        raise ValueError(f"checkpoint does not fit the model: missing {bad[:5]}, unexpected {unexpected[:5]}")
