"""Read a volume record for MONAI pipelines: a file path through ``LoadImage``, or an array as it is.

Example:
    >>> import numpy as np
    >>> rec = ReadVolumed(keys="image")({"image": np.zeros((1, 4, 4, 4), np.uint8)})
    >>> rec["image"].shape
    (1, 4, 4, 4)
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.transforms import LoadImage, MapTransform, Orientation

__all__ = ["VOLUME_SUFFIXES", "ReadVolumed"]

#: File endings MONAI's readers open as volumes (NIfTI, NRRD, MetaImage, NumPy).
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".npy", ".npz")


class ReadVolumed(MapTransform):
    """Turn a path into a channel-first volume (``LoadImage``, then ``Orientation(axcodes)``).

    Channel-first arrays (e.g. :func:`medmnist_records`) pass through unchanged, so one
    preprocessing serves files and in-memory data sets. A file that cannot be read raises a
    ``ValueError`` that names it.

    Args:
        keys: record keys to read.
        axcodes: orientation of volumes read from files (``None``: as stored).
    """

    def __init__(self, keys: Hashable | Sequence[Hashable], axcodes: str | None = "RAS") -> None:
        super().__init__(keys)
        self.loader = LoadImage(image_only=True, ensure_channel_first=True)
        self.orient = Orientation(axcodes=axcodes) if axcodes else None

    def read(self, path: str | os.PathLike) -> Any:
        """One file as a channel-first volume."""
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such volume file; fix the path in your data list")
        try:
            img = self.loader(str(path))
        except Exception as e:  # MONAI tries several readers and reports them all
            reason = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"{path}: cannot read this volume ({reason}); check that the file is complete and is "
                f"one of {', '.join(VOLUME_SUFFIXES)}"
            ) from e
        if img.ndim != 4:
            raise ValueError(
                f"{path}: expected a 3D volume (optionally with channels), got shape {tuple(img.shape[1:])}"
            )
        return self.orient(img) if self.orient is not None else img

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, os.PathLike)):
                d[key] = self.read(d[key])
        return d
