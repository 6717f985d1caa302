"""Hugging Face cache hygiene shared by every layer that downloads (model families and the hub).

Example:
    >>> remove_partial_downloads("nobody/nothing-here")
    []
"""

from __future__ import annotations

import contextlib
from pathlib import Path

__all__ = ["remove_partial_downloads", "repo_storage"]


def repo_storage(repo_id: str, repo_type: str = "model") -> Path:
    """The cache folder huggingface_hub keeps for ``repo_id`` (``models--org--name``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def remove_partial_downloads(repo_id: str, repo_type: str = "model") -> list[Path]:
    """Delete ``*.incomplete`` blobs of ``repo_id`` in the Hugging Face cache; return them.

    huggingface_hub keeps an interrupted download to resume it later; a failed pull here leaves
    nothing half-written instead.
    """
    folder = repo_storage(repo_id, repo_type) / "blobs"
    removed = []
    if folder.is_dir():
        for p in folder.glob("*.incomplete"):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed
