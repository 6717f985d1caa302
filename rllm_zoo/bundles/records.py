"""The records a bundle's configs read: MedMNIST, a datalist, or a folder of volumes.

One helper serves train.json, evaluate.json and inference.json of every generated bundle:

* ``input_dir`` set: every volume file under it (sorted; no labels), for inference on your files;
* ``datalist`` set: the split's items of a MONAI datalist JSON (``training`` / ``validation`` /
  ``test``; labels mapped to ``class_names``);
* otherwise the MedMNIST ``flag``'s split from ``dataset_dir``.

Example:
    >>> recs = bundle_records(None, ".", "test", input_dir="my_volumes/")      # doctest: +SKIP
    >>> recs[0]                                                               # doctest: +SKIP
    {'image': '/abs/my_volumes/case_001.nii.gz', 'id': '/abs/my_volumes/case_001.nii.gz'}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data import DataError
from ..data.own import label_text
from ..monai.io import VOLUME_SUFFIXES

__all__ = ["bundle_records"]

_DATALIST_KEY = {"train": "training", "val": "validation", "test": "test"}


def _folder_records(input_dir: str) -> list[dict[str, Any]]:
    root = Path(input_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"input_dir {input_dir}: no such folder; pass a folder of volume files")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))
    if not files:
        raise DataError(f"input_dir {input_dir}: no volume files ({', '.join(VOLUME_SUFFIXES)})")
    return [{"image": str(p.resolve()), "id": str(p.resolve())} for p in files]


def _datalist_records(datalist: str, split: str, class_names: list[str] | None) -> list[dict[str, Any]]:
    from monai.data import load_decathlon_datalist

    if not Path(datalist).is_file():
        raise DataError(f"datalist {datalist}: no such file; pass --datalist /path/to/datalist.json")
    key = _DATALIST_KEY.get(split, split)
    try:
        items = load_decathlon_datalist(datalist, is_segmentation=False, data_list_key=key)
    except ValueError as e:
        raise DataError(f"datalist {datalist}: {e}") from e
    index = {c: i for i, c in enumerate(class_names or [])}
    records = []
    for i, item in enumerate(items):
        rec = {"image": str(Path(item["image"]).resolve()), "id": str(item["image"])}
        if "label" in item:
            name = label_text(item["label"], f"{datalist} {key}[{i}]")
            if index and name not in index:
                raise DataError(
                    f"{datalist} {key}[{i}]: label {name!r} is not among the classes {list(index)}"
                )
            rec["label"] = index[name] if index else int(name)
        records.append(rec)
    return records


def bundle_records(
    flag: str | None,
    dataset_dir: str,
    split: str,
    *,
    datalist: str = "",
    input_dir: str = "",
    class_names: list[str] | None = None,
    download: bool = False,
    limit: int = 0,
) -> list[dict[str, Any]]:
    """Records ``{"image", "label"?, "id"}`` for a bundle config (see the module docstring)."""
    if input_dir:
        records = _folder_records(input_dir)
    elif datalist:
        records = _datalist_records(datalist, split, class_names)
    elif flag:
        from ..data import medmnist_class
        from ..monai import medmnist_records

        cls = medmnist_class(flag)
        return medmnist_records(cls(split=split, root=dataset_dir, download=download), limit=limit)
    else:
        raise DataError(
            "this bundle reads your data: pass --datalist /path/to/datalist.json or --input_dir DIR"
        )
    return records[:limit] if limit and limit > 0 else records
