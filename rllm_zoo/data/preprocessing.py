"""The one definition of how a file or array becomes a model input, recorded once per run.

A :class:`Preprocessing` is written into every run folder (``preprocessing.json``) and is the
single source for training, ``eval``, ``predict``, ``package`` / ``push`` and MONAI bundles:

* **2D** (timm): read with PIL as 8-bit grayscale (``channels=1``) or RGB (``channels=3``),
  resized to ``size`` (bilinear, aspect ratio not kept: timm's ``crop_mode="squash"``), then
  ``ToTensor`` and ``Normalize(mean, std)``. :meth:`Preprocessing.timm_data_config` gives the
  same steps as a timm data config, stored in a packaged model's ``pretrained_cfg`` so that
  ``timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))`` reproduces them.
* **3D** (MONAI): read with MONAI's ``LoadImage`` (channel first, ``orientation`` axcodes), resized
  to ``size`` (trilinear), then intensities mapped to ``[0, 1]`` from a fixed ``intensity`` range
  (clipped) or per volume (``intensity=None``: min-max), then ``(x - mean) / std``.
  :meth:`Preprocessing.monai_transforms` gives the steps as MONAI bundle config items; training
  instantiates exactly those items, and bundles carry them verbatim.

Example:
    >>> p = Preprocessing(spatial_dims=3, size=(64, 64, 64), channels=1, intensity=None)
    >>> [t["_target_"] for t in p.monai_transforms()]
    ['rllm_zoo.monai.ReadVolumed', 'EnsureTyped', 'Resized', 'ScaleIntensityd']
    >>> Preprocessing.from_dict(p.to_dict()) == p
    True
    >>> Preprocessing(spatial_dims=2, size=(28, 28), channels=3).timm_data_config()["input_size"]
    (3, 28, 28)
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PREPROCESSING_FILE", "Preprocessing"]

#: The file a run (and a packaged 2D model's config.json, under ``rllm_zoo``) records it in.
PREPROCESSING_FILE = "preprocessing.json"
_UINT8 = (0.0, 255.0)


@dataclass(frozen=True)
class Preprocessing:
    """How inputs are read, resized and scaled (see the module docstring).

    Args:
        spatial_dims: 2 (images, timm models) or 3 (volumes, MONAI networks).
        size: the model's input size, ``(H, W)`` or ``(D, H, W)``.
        channels: the model's input channels; 2D images are converted to ``L`` (1) or ``RGB`` (3).
        intensity: the stored value range mapped to ``[0, 1]`` (clipped); ``None`` scales each
            volume by its own min and max (3D only; 2D images are 8-bit, ``(0, 255)``).
        mean, std: per-channel normalisation after scaling to ``[0, 1]``.
        orientation: axcodes volumes read from files are reoriented to (3D; ``None`` keeps them).
    """

    spatial_dims: int
    size: tuple[int, ...]
    channels: int
    intensity: tuple[float, float] | None = _UINT8
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    orientation: str | None = "RAS"

    def __post_init__(self) -> None:
        size = tuple(int(s) for s in (self.size if isinstance(self.size, (list, tuple)) else [self.size]))
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if len(size) == 1:
            size = size * self.spatial_dims
        if len(size) != self.spatial_dims or min(size) < 1:
            raise ValueError(f"size must be {self.spatial_dims} positive integers, got {self.size}")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if self.spatial_dims == 2 and self.channels not in (1, 3):
            raise ValueError(f"2D images are read as grayscale (1) or RGB (3) channels, got {self.channels}")
        intensity = None if self.intensity is None else tuple(float(v) for v in self.intensity)
        if intensity is not None and (len(intensity) != 2 or not intensity[0] < intensity[1]):
            raise ValueError(f"intensity must be (low, high) with low < high, got {self.intensity}")
        if self.spatial_dims == 2 and intensity != _UINT8:
            raise ValueError("2D images are read as 8-bit: intensity must be (0, 255)")

        def per_channel(v, name):
            v = tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else [v]))
            if len(v) == 1:
                v = v * self.channels
            if len(v) < self.channels:
                raise ValueError(f"{name} needs {self.channels} values, got {len(v)}")
            return v[: self.channels]

        mean, std = per_channel(self.mean, "mean"), per_channel(self.std, "std")
        if any(s <= 0 or not math.isfinite(s) for s in std):
            raise ValueError(f"std must be positive, got {std}")
        if self.spatial_dims == 3 and (len(set(mean)) > 1 or len(set(std)) > 1):
            raise ValueError("3D volumes take one mean and one std for all channels")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "intensity", intensity)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    # ------------------------------------------------------------------ records

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists for tuples)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """The record back from :meth:`to_dict` (unknown keys are an error)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def save(self, path: str | Path) -> None:
        """Write ``preprocessing.json`` atomically."""
        from ..atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Preprocessing:
        """Read a ``preprocessing.json``; a damaged file names itself."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: not a valid preprocessing record ({e})") from e

    # ------------------------------------------------------------------ 2D

    @property
    def pil_mode(self) -> str:
        """PIL mode 2D images are converted to."""
        return "L" if self.channels == 1 else "RGB"

    def read_image(self, path: str | Path):
        """Open a 2D image file as a PIL image in :attr:`pil_mode` at :attr:`size`.

        16-bit and floating-point images are scaled by their own min and max to 8 bits first.
        """
        from PIL import Image

        with Image.open(path) as img:
            img.load()
            return self.prepare_image(img)

    def prepare_image(self, img):
        """A PIL image converted to :attr:`pil_mode` and resized to :attr:`size` (no-op when it fits)."""
        import numpy as np
        from PIL import Image

        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            a = np.asarray(img, dtype=np.float64)
            lo, hi = float(a.min()), float(a.max())
            a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
            img = Image.fromarray(np.round(a).astype(np.uint8), mode="L")
        if img.mode != self.pil_mode:
            img = img.convert(self.pil_mode)
        h, w = self.size
        if img.size != (w, h):
            from torchvision.transforms import InterpolationMode
            from torchvision.transforms import functional as F

            img = F.resize(img, [h, w], interpolation=InterpolationMode.BILINEAR)
        return img

    def image_transform(self, train_aug: str = "none"):
        """torchvision transform from a prepared PIL image to the normalised tensor.

        ``train_aug``: ``none``, ``light`` (random resized crop 0.85-1, horizontal flip) or
        ``strong`` (crop 0.7-1, both flips, RandAugment).
        """
        from torchvision import transforms as T

        h, w = self.size
        steps: list = []
        if train_aug == "light":
            steps += [
                T.RandomResizedCrop((h, w), scale=(0.85, 1.0), ratio=(0.95, 1.05)),
                T.RandomHorizontalFlip(),
            ]
        elif train_aug == "strong":
            steps += [
                T.RandomResizedCrop((h, w), scale=(0.7, 1.0)),
                T.RandomHorizontalFlip(),
                T.RandomVerticalFlip(),
                T.RandAugment(num_ops=2, magnitude=7),
            ]
        elif train_aug != "none":
            raise ValueError(f"train_aug must be none, light or strong, got {train_aug!r}")
        steps += [T.ToTensor(), T.Normalize(self.mean, self.std)]
        return T.Compose(steps)

    def timm_data_config(self) -> dict[str, Any]:
        """The 2D steps as timm data-config keys (for a model's ``pretrained_cfg``)."""
        if self.spatial_dims != 2:
            raise ValueError("timm_data_config is for 2D preprocessing")
        return {
            "input_size": (self.channels, *self.size),
            "interpolation": "bilinear",
            "mean": self.mean,
            "std": self.std,
            "crop_pct": 1.0,
            "crop_mode": "squash",
        }

    @classmethod
    def from_timm(cls, pretrained_cfg: dict[str, Any]) -> Preprocessing:
        """The 2D record from a timm ``pretrained_cfg`` (input_size, mean, std)."""
        c, h, w = pretrained_cfg["input_size"]
        return cls(2, (h, w), c, mean=tuple(pretrained_cfg["mean"]), std=tuple(pretrained_cfg["std"]))

    # ------------------------------------------------------------------ 3D

    def _scaled_range(self) -> tuple[float, float]:
        return (0.0 - self.mean[0]) / self.std[0], (1.0 - self.mean[0]) / self.std[0]

    def monai_transforms(self, key: str = "image") -> list[dict[str, Any]]:
        """The 3D steps as MONAI config items (``{"_target_": ...}``), for bundles and training.

        Records may hold a file path (read with ``LoadImage``) or a channel-first array.
        """
        if self.spatial_dims != 3:
            raise ValueError("monai_transforms is for 3D preprocessing")
        lo, hi = self._scaled_range()
        items: list[dict[str, Any]] = [
            {"_target_": "rllm_zoo.monai.ReadVolumed", "keys": key, "axcodes": self.orientation},
            {"_target_": "EnsureTyped", "keys": key, "dtype": "$torch.float32", "track_meta": False},
            {
                "_target_": "Resized",
                "keys": key,
                "spatial_size": list(self.size),
                "mode": "trilinear",
                "anti_aliasing": True,
            },
        ]
        if self.intensity is None:
            items.append({"_target_": "ScaleIntensityd", "keys": key, "minv": lo, "maxv": hi})
        else:
            a, b = self.intensity
            items.append(
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": key,
                    "a_min": a,
                    "a_max": b,
                    "b_min": lo,
                    "b_max": hi,
                    "clip": True,
                }
            )
        return items

    def volume_transform(self, train_aug: str = "none", key: str = "image"):
        """The MONAI ``Compose`` of :meth:`monai_transforms` (plus train augmentation), instantiated
        through ``monai.bundle.ConfigParser`` from the very items a bundle stores."""
        from monai.bundle import ConfigParser

        items = self.monai_transforms(key)
        if train_aug in ("light", "strong"):
            items.append({"_target_": "RandFlipd", "keys": key, "prob": 0.5, "spatial_axis": 2})
        if train_aug == "strong":
            items.append(
                {
                    "_target_": "RandAffined",
                    "keys": key,
                    "prob": 0.5,
                    "rotate_range": [0.15, 0.15, 0.15],
                    "scale_range": [0.1, 0.1, 0.1],
                }
            )
        elif train_aug not in ("none", "light"):
            raise ValueError(f"train_aug must be none, light or strong, got {train_aug!r}")
        parser = ConfigParser({"t": {"_target_": "Compose", "transforms": items}})
        return parser.get_parsed_content("t")
