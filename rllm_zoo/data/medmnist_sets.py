"""MedMNIST data through the ``medmnist`` package: datasets, transforms and task facts.

Example:
    >>> from rllm_zoo.data import dataset_info, build_dataset
    >>> dataset_info("retinamnist").task                                   # doctest: +SKIP
    'ordinal-regression'
    >>> ds = build_dataset("retinamnist", "train", root="../shared/medmnist")  # doctest: +SKIP
    >>> x, y = ds[0]; x.shape, y                                           # doctest: +SKIP
    (torch.Size([3, 28, 28]), tensor([0]))
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import medmnist
import numpy as np
import torch

from .cache import cached_volumes, image_pipeline
from .errors import DataError
from .preprocessing import Preprocessing

__all__ = [
    "FLAGS_2D",
    "FLAGS_3D",
    "DataError",
    "DatasetInfo",
    "build_dataset",
    "dataset_info",
    "default_root",
    "medmnist_class",
    "medmnist_preprocessing",
]

FLAGS_3D: tuple[str, ...] = tuple(sorted(f for f in medmnist.INFO if f.endswith("3d")))
FLAGS_2D: tuple[str, ...] = tuple(sorted(f for f in medmnist.INFO if not f.endswith("3d")))
SIZES = (28, 64, 128, 224)


@dataclass(frozen=True)
class DatasetInfo:
    """The task a run learns: a MedMNIST flag, or the user's own data (``flag=None``, ``name`` set)."""

    flag: str | None
    is_3d: bool
    task: str  # "multi-class", "binary-class", "multi-label, binary-class", "ordinal-regression"
    n_channels: int
    n_classes: int
    class_names: tuple[str, ...]
    license: str | None
    name: str = ""

    @property
    def multi_label(self) -> bool:
        return self.task.startswith("multi-label")

    @property
    def title(self) -> str:
        """The MedMNIST flag, or the own data set's name."""
        return self.flag or self.name

    def to_dict(self) -> dict:
        """JSON-ready (``dataset.json`` in a run folder)."""
        d = dataclasses.asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> DatasetInfo:
        return cls(**{**data, "class_names": tuple(data["class_names"])})


def dataset_info(flag: str) -> DatasetInfo:
    """Facts about a MedMNIST flag (``retinamnist``, ``adrenalmnist3d``...)."""
    flag = flag.lower()
    if flag not in medmnist.INFO:
        raise DataError(f"unknown MedMNIST flag {flag!r}; choose one of {', '.join(FLAGS_2D + FLAGS_3D)}")
    info = medmnist.INFO[flag]
    labels = info["label"]
    names = tuple(labels[str(i)] for i in range(len(labels)))
    return DatasetInfo(
        flag=flag,
        is_3d=flag in FLAGS_3D,
        task=info["task"],
        n_channels=int(info["n_channels"]),
        n_classes=len(names),
        class_names=names,
        license=info.get("license", "CC BY 4.0"),
        name=flag,
    )


def default_root() -> str:
    """medmnist's default data root (``~/.medmnist``)."""
    return medmnist.info.DEFAULT_ROOT


def npz_path(flag: str, root: str | os.PathLike, size: int) -> Path:
    return Path(root) / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")


def check_available(flag: str, root: str | os.PathLike | None, size: int, download: bool = False) -> str:
    """Return the root to use, with ``<flag>[_size].npz`` present and sound (downloaded first with
    ``download``); a :class:`DataError` names the file and the fix otherwise."""
    if size not in SIZES:
        raise DataError(f"size must be one of {SIZES}, got {size}")
    root = str(root or default_root())
    path = npz_path(flag, root, size)
    if not path.is_file() and download:
        _download(flag, root, size)
    if not path.is_file():
        raise DataError(
            f"{path} not found. Pass --data-root pointing at a folder that holds {path.name}, "
            "or --download to fetch it (needs internet access to Zenodo)."
        )
    check_npz(path, dataset_info(flag), size)
    return root


def _download(flag: str, root: str, size: int) -> None:
    """medmnist's download into ``root``; on failure nothing is left behind (not even an empty root)."""
    created = not Path(root).exists()
    Path(root).mkdir(parents=True, exist_ok=True)
    try:
        getattr(medmnist, medmnist.INFO[flag]["python_class"])(
            split="train", root=root, size=size, download=True
        )
    except Exception as e:
        partial = npz_path(flag, root, size)
        partial.unlink(missing_ok=True)
        if created and not any(Path(root).iterdir()):
            Path(root).rmdir()
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise DataError(
            f"could not download {partial.name} ({reason}); without internet access, copy the file into "
            f"--data-root (MedMNIST on Zenodo, record 10519652)"
        ) from e


def _npy_header(zf, name: str) -> tuple[tuple[int, ...], np.dtype]:
    with zf.open(name) as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return tuple(shape), np.dtype(dtype)


def check_npz(path: Path, info: DatasetInfo, size: int) -> None:
    """A MedMNIST ``.npz`` is complete and fits ``info`` at ``size`` (array headers and labels only).

    Raises :class:`DataError` for a damaged archive, a missing split, images of another size or
    channel count, an empty split, or labels outside ``0..n_classes-1``.
    """
    import zipfile

    fix = f"replace it with the official {path.name} (or --download it)"
    spatial = (size,) * (3 if info.is_3d else 2)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            for split in ("train", "val", "test"):
                for key in (f"{split}_images", f"{split}_labels"):
                    if f"{key}.npy" not in names:
                        raise DataError(f"{path}: no {key} array; {fix}")
                shape, _ = _npy_header(zf, f"{split}_images.npy")
                if shape[0] == 0:
                    raise DataError(f"{path}: the {split} split is empty; {fix}")
                if tuple(shape[1 : 1 + len(spatial)]) != spatial:
                    raise DataError(
                        f"{path}: {split} images are {'x'.join(map(str, shape[1:]))}, not {size} px; "
                        f"pass --size {shape[1]} or {fix}"
                    )
                with zf.open(f"{split}_labels.npy") as f:
                    labels = np.lib.format.read_array(f, allow_pickle=False)
                bound = 2 if info.multi_label else info.n_classes
                if labels.shape[0] != shape[0] or (
                    labels.size and (labels.min() < 0 or labels.max() >= bound)
                ):
                    raise DataError(
                        f"{path}: {split} labels do not fit {info.flag} ({labels.shape[0]} labels for {shape[0]} "
                        f"images, values {labels.min()}..{labels.max()}, expected 0..{bound - 1}); {fix}"
                    )
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: damaged or not a MedMNIST .npz ({type(e).__name__}: {e}); {fix}") from e


def medmnist_preprocessing(
    flag: str, size: int = 28, mean: tuple[float, ...] = (0.5,), std: tuple[float, ...] = (0.5,)
) -> Preprocessing:
    """The preprocessing of a MedMNIST flag: 8-bit data scaled to [0, 1], then ``(x - mean) / std``.

    Example:
        >>> medmnist_preprocessing("adrenalmnist3d").size
        (28, 28, 28)
    """
    info = dataset_info(flag)
    dims = 3 if info.is_3d else 2
    return Preprocessing(dims, (size,) * dims, info.n_channels, mean=mean, std=std)


class _Targets:
    """medmnist labels (np arrays of shape (L,)) as torch tensors."""

    def __init__(self, multi_label: bool) -> None:
        self.multi_label = multi_label

    def __call__(self, target: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(target))
        return t.float() if self.multi_label else t.long().view(-1)[:1]


def _sized(cls: type) -> type:
    """The medmnist class, with its length read from the file rather than checked against INFO.

    medmnist asserts the official split sizes; subsets and locally made files in the same
    format (smaller, or re-split) are legitimate inputs too.
    """
    return type(
        cls.__name__, (cls,), {"__len__": lambda self: int(self.imgs.shape[0]), "__module__": __name__}
    )


def medmnist_class(flag: str) -> type:
    """The medmnist dataset class of ``flag``, accepting files of any split size (subsets, re-splits)."""
    return _sized(getattr(medmnist, medmnist.INFO[dataset_info(flag).flag]["python_class"]))


def build_dataset(
    flag: str,
    split: str,
    root: str | os.PathLike | None = None,
    size: int = 28,
    train_aug: str = "none",
    download: bool = False,
    preprocessing: Preprocessing | None = None,
) -> torch.utils.data.Dataset:
    """A MedMNIST split yielding ``(input tensor, label tensor)`` through ``preprocessing``
    (default: :func:`medmnist_preprocessing`); ``train_aug`` in ``none``/``light``/``strong``
    applies to the train split only. 3D volumes go through MONAI's ``CacheDataset``."""
    if split not in ("train", "val", "test"):
        raise DataError(f"split must be train, val or test, got {split!r}")
    if train_aug not in ("none", "light", "strong"):
        raise DataError(f"train_aug must be none, light or strong, got {train_aug!r}")
    info = dataset_info(flag)
    root = check_available(info.flag, root, size, download)
    prep = preprocessing or medmnist_preprocessing(info.flag, size)
    cls = medmnist_class(info.flag)
    aug = train_aug if split == "train" else "none"
    if info.is_3d:
        from ..monai import medmnist_records

        ds = cls(split=split, root=root, size=size, download=download)
        return cached_volumes(medmnist_records(ds), prep, aug, what=f"{info.flag} {split}")
    return cls(
        split=split,
        root=root,
        size=size,
        download=download,
        transform=image_pipeline(prep, aug),
        target_transform=_Targets(info.multi_label),
    )
