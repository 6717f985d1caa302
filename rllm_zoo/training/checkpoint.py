"""Run checkpoints: trainable weights only (the frozen LLM block is re-read from its source),
written atomically and read back with ``weights_only=True``."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..booster import frozen_state_names

__all__ = [
    "TEMP_PREFIX",
    "frozen_names",
    "llm_fingerprint",
    "load_checkpoint",
    "load_weights",
    "remove_stale_temps",
    "save_checkpoint",
    "trainable_state",
]

#: Start of the name of :func:`save_checkpoint`'s temporary file (``<TEMP_PREFIX><name>.XXXXXXXX``
#: in the checkpoint's folder); a process killed while writing leaves one behind.
TEMP_PREFIX = ".rllm-zoo-partial."
#: Keys every run checkpoint holds.
REQUIRED_KEYS = ("model", "epoch")


def frozen_names(model: nn.Module) -> set[str]:
    """State-dict names of the frozen LLM block (buffers) and of frozen parameters: not stored in checkpoints."""
    return frozen_state_names(model)


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed :func:`save_checkpoint` left in ``folder``; return their paths.

    Call it only while no other process writes checkpoints into ``folder`` (e.g. when resuming).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(TEMP_PREFIX) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _damaged(path: Path, reason: str) -> ValueError:
    """The one-line error for an unreadable checkpoint, with the fix for the file it is."""
    if path.name == "best.pt":
        fix = "delete it and train again, or evaluate last.pt instead (--checkpoint last)"
    elif path.name == "last.pt":
        fix = "delete it and train again into a fresh --out (--resume cannot continue from it)"
    else:
        fix = "delete it and train again"
    reason = " ".join(reason.split())
    if len(reason) > 160:
        reason = reason[:157] + "..."
    return ValueError(f"{path} is damaged or not an rllm-zoo checkpoint ({reason}); {fix}")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a run checkpoint; only tensors and plain containers are accepted.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        ValueError: the file is truncated, not a torch archive, holds pickled Python objects,
            or lacks the checkpoint's keys (``model``, ``epoch``); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist{' (it is a folder)' if path.is_dir() else ''}; "
            "train the run first, or point to the run folder that holds it"
        )
    if path.stat().st_size == 0:
        raise _damaged(path, "the file is empty")
    if not zipfile.is_zipfile(path):
        raise _damaged(path, "not a torch zip archive: cut short while copying, or another kind of file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's weights_only refusal
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            reason = (
                f"it holds pickled Python objects such as {found.group(1)}, which rllm-zoo never unpickles"
            )
        else:  # torch's own text suggests loading without weights_only: never repeat that advice
            detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(e))
            reason = f"unreadable pickle data: {detail.group(1) if detail else type(e).__name__}"
        raise _damaged(path, reason) from None
    except (FileNotFoundError, MemoryError):
        raise
    except Exception as e:
        text = str(e).split(". ")[0] or type(e).__name__
        raise _damaged(path, f"unreadable: {type(e).__name__}: {text}") from e
    if not isinstance(ckpt, dict):
        raise _damaged(path, f"it holds a {type(ckpt).__name__}, not a dict of weights")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise _damaged(path, f"it lacks {', '.join(repr(k) for k in missing)}")
    if not isinstance(ckpt["model"], dict) or not all(
        isinstance(v, torch.Tensor) for v in ckpt["model"].values()
    ):
        raise _damaged(path, "its 'model' entry is not a dict of tensors")
    if isinstance(ckpt["epoch"], bool) or not isinstance(ckpt["epoch"], int):
        raise _damaged(path, f"its 'epoch' entry is {ckpt['epoch']!r}, not an int")
    return ckpt


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
