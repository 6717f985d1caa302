"""Your own data: a folder of class sub-folders, a CSV (``path,label[,split]``) or a MONAI datalist.

:func:`scan` lists the files, their classes and their split without reading any pixel:

* a **folder** ``root/<class>/<file>``, or already split ``root/{train,val,test}/<class>/<file>``;
* a **CSV** with columns ``path,label`` and an optional ``split`` column (paths relative to the CSV);
* a **datalist JSON** in MONAI's form, ``{"training": [{"image": "a.nii.gz", "label": 1}, ...],
  "validation": [...], "test": [...]}`` (paths relative to the JSON; read with
  ``monai.data.load_decathlon_datalist``).

2D images (PNG, JPEG, TIFF, BMP) and 3D volumes (NIfTI and what MONAI's ``LoadImage`` reads) are told
apart by their file endings. Without a split, a seeded stratified split is made (default
70/10/20); :func:`write_file_list` records the result in the run folder, as a CSV (2D) or a datalist
(3D) that :func:`scan` reads back to the same split. Class names come from the folder names or label
values (numbers sorted numerically, names alphabetically).

Example:
    >>> data = scan("my_images/", split=(0.7, 0.1, 0.2), seed=0)          # doctest: +SKIP
    >>> data.classes, data.is_3d, data.counts()                            # doctest: +SKIP
    (('benign', 'malignant'), False, {'train': 70, 'val': 10, 'test': 20})
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..monai.io import VOLUME_SUFFIXES
from .errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "SPLITS",
    "OwnData",
    "Sample",
    "file_kind",
    "label_text",
    "parse_split",
    "scan",
    "write_file_list",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SPLITS = ("train", "val", "test")
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val"}
_SPLIT_NAMES["test"] = "test"
_DATALIST_KEYS = {"training": "train", "validation": "val", "test": "test", "train": "train", "val": "val"}


_GENERIC_LIST_NAMES = {"datalist", "dataset", "data", "splits", "labels", "list", "files"}


@dataclass(frozen=True)
class Sample:
    """One file: absolute ``path``, class index ``label``, ``split`` (train / val / test)."""

    path: str
    label: int
    split: str


@dataclass
class OwnData:
    """The files of a data set, with classes and splits (see :func:`scan`)."""

    source: str
    kind: str  # folder | csv | datalist
    samples: list[Sample]
    classes: tuple[str, ...]
    is_3d: bool
    split_note: str = "given"
    extra: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def counts(self) -> dict[str, int]:
        return {name: len(self.split(name)) for name in SPLITS}

    @property
    def name(self) -> str:
        """The folder's name, or the list file's (its folder's for generic names like datalist.json)."""
        p = Path(self.source)
        if not p.is_file():
            return p.name
        return p.parent.name if p.stem.lower() in _GENERIC_LIST_NAMES else p.stem


def file_kind(path: str) -> str | None:
    """``"image"``, ``"volume"`` or ``None`` from a file name's ending."""
    low = path.lower()
    if low.endswith(IMAGE_SUFFIXES):
        return "image"
    if low.endswith(VOLUME_SUFFIXES):
        return "volume"
    return None


def parse_split(text: str | tuple[float, ...]) -> tuple[float, float, float]:
    """``"0.7,0.1,0.2"`` -> fractions of train / val / test (must be positive and sum to 1)."""
    try:
        parts = tuple(float(v) for v in (text.split(",") if isinstance(text, str) else text))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) <= 0 or abs(sum(parts) - 1) > 1e-6:
        raise DataError(
            f"--split {text!r}: give three positive fractions train,val,test that sum to 1, e.g. 0.7,0.1,0.2"
        )
    return parts  # type: ignore[return-value]


def _class_order(values: list[str]) -> tuple[str, ...]:
    unique = set(values)
    try:
        return tuple(sorted(unique, key=lambda v: float(v)))
    except ValueError:
        return tuple(sorted(unique))


def label_text(value: Any, where: str) -> str:
    """A label value as its class-name text (``1``, ``1.0`` and ``"1"`` are the same class)."""
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise DataError(
            f"{where}: label {value!r} is not a class name or number (multi-label data is not supported)"
        )
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if not text:
        raise DataError(f"{where}: empty label; every file needs its class")
    return text


def _folder(root: Path) -> tuple[list[tuple[str, str, str | None]], str]:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise DataError(f"{root}: no class sub-folders; lay files out as {root}/<class>/<file>")
    names = {p.name.lower() for p in subdirs}
    presplit = "train" in names and names <= set(_SPLIT_NAMES)
    rows: list[tuple[str, str, str | None]] = []
    for top in subdirs:
        split = _SPLIT_NAMES[top.name.lower()] if presplit else None
        class_dirs = (
            sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith("."))
            if presplit
            else [top]
        )
        if presplit and not class_dirs:
            raise DataError(f"{top}: no class sub-folders; lay files out as {top}/<class>/<file>")
        for cdir in class_dirs:
            files = sorted(
                p for p in cdir.rglob("*") if p.is_file() and not p.name.startswith(".") and file_kind(p.name)
            )
            if not files:
                raise DataError(
                    f"{cdir}: empty class folder (no {', '.join(IMAGE_SUFFIXES + VOLUME_SUFFIXES)} files); "
                    "add files or remove the folder"
                )
            rows += [(str(f.resolve()), cdir.name, split) for f in files]
    return rows, "folder"


def _csv(path: Path) -> tuple[list[tuple[str, str, str | None]], str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in ("path", "label") if c not in columns]
            if missing:
                raise DataError(
                    f"{path}: missing column {', '.join(repr(c) for c in missing)}; a CSV needs a header "
                    f"with path,label and optionally split (has: {', '.join(columns) or 'no header'})"
                )
            table = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text CSV ({e})") from e
    base = path.parent
    rows = []
    for i, r in enumerate(table, start=2):
        if not r.get("path"):
            raise DataError(f"{path} line {i}: empty path")
        split = r.get("split") or None
        rows.append((str((base / r["path"]).resolve()), label_text(r["label"], f"{path} line {i}"), split))
    return rows, "csv"


def _datalist(path: Path) -> tuple[list[tuple[str, str, str | None]], str]:
    from monai.data import load_decathlon_datalist

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    keys = [k for k in data if k in _DATALIST_KEYS] if isinstance(data, dict) else []
    if not keys:
        raise DataError(
            f"{path}: a datalist needs a 'training' list (and optionally 'validation', 'test') of "
            '{"image": ..., "label": ...} items'
        )
    rows = []
    for key in keys:
        items = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key=key)
        for i, item in enumerate(items):
            where = f"{path} {key}[{i}]"
            if not isinstance(item, dict) or "image" not in item or "label" not in item:
                raise DataError(f"{where}: each item needs 'image' and 'label'")
            rows.append(
                (str(Path(item["image"]).resolve()), label_text(item["label"], where), _DATALIST_KEYS[key])
            )
    return rows, "datalist"


def _stratified(rows: list[tuple[str, str]], fractions: tuple[float, float, float], seed: int) -> list[str]:
    """A split per row: per class, shuffled with ``seed``, at least one file in each split."""
    by_class: dict[str, list[int]] = {}
    for i, (_, label) in enumerate(rows):
        by_class.setdefault(label, []).append(i)
    splits = [""] * len(rows)
    rng = random.Random(seed)
    for label, idx in sorted(by_class.items()):
        n = len(idx)
        if n < 3:
            raise DataError(
                f"class {label!r} has {n} file(s); splitting into train/val/test needs at least 3 per class "
                "(add files, or give the split yourself)"
            )
        idx = list(idx)
        rng.shuffle(idx)
        n_val = max(1, round(n * fractions[1]))
        n_test = max(1, round(n * fractions[2]))
        n_val, n_test = min(n_val, n - 2), min(n_test, n - 1 - min(n_val, n - 2))
        for j, i in enumerate(idx):
            splits[i] = "val" if j < n_val else "test" if j < n_val + n_test else "train"
    return splits


def scan(
    source: str | os.PathLike,
    split: tuple[float, float, float] | str = (0.7, 0.1, 0.2),
    seed: int = 0,
    classes: tuple[str, ...] | None = None,
    require_labels_everywhere: bool = True,
) -> OwnData:
    """List a data set's files, classes and splits (see the module docstring); reads no pixel.

    Args:
        source: a folder, a ``.csv`` or a datalist ``.json``.
        split: train/val/test fractions for data that carries no split.
        seed: seed of that split.
        classes: the class names in model order (a trained run's); labels outside are an error.
        require_labels_everywhere: every class must appear in val and test (ACC/AUC need it).

    Raises:
        DataError: one line naming the file and the fix (missing path, empty class folder,
            missing CSV column, unknown label, mixed 2D/3D files, a class missing from a split).
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"{source}: no such file or folder; --data takes a folder, a .csv or a datalist .json"
        )
    if path.is_dir():
        rows, kind = _folder(path)
    elif path.suffix.lower() == ".csv":
        rows, kind = _csv(path)
    elif path.suffix.lower() == ".json":
        rows, kind = _datalist(path)
    else:
        raise DataError(f"{source}: --data takes a folder of class sub-folders, a .csv or a datalist .json")
    if not rows:
        raise DataError(f"{source}: no files listed")
    kinds = Counter(file_kind(p) for p, _, _ in rows)
    if None in kinds:
        bad = next(p for p, _, _ in rows if file_kind(p) is None)
        raise DataError(
            f"{bad}: unknown file type; images end in {', '.join(IMAGE_SUFFIXES)}, volumes in "
            f"{', '.join(VOLUME_SUFFIXES)}"
        )
    if len(kinds) > 1:
        raise DataError(f"{source}: mixes 2D images and 3D volumes; train on one kind at a time")
    for p, _, _ in rows:
        if not os.path.isfile(p):
            raise DataError(f"{p}: file not found (listed in {source}); fix the path or remove the entry")
    given = [s for _, _, s in rows]
    note = "given"
    if all(s is None for s in given):
        fractions = parse_split(split)
        given = _stratified([(p, lab) for p, lab, _ in rows], fractions, seed)
        note = f"stratified {'/'.join(f'{f:g}' for f in fractions)}, seed {seed}"
    else:
        for p, _, s in rows:
            if s is None or s.lower() not in _SPLIT_NAMES:
                raise DataError(
                    f"{source}: {p} has split {s!r}; use train, val or test for every entry (or none)"
                )
        given = [_SPLIT_NAMES[s.lower()] for s in given]  # type: ignore[union-attr]
    order = tuple(classes) if classes is not None else _class_order([lab for _, lab, _ in rows])
    index = {c: i for i, c in enumerate(order)}
    for p, lab, _ in rows:
        if lab not in index:
            raise DataError(
                f"{p}: label {lab!r} is not among the classes ({', '.join(order)}); fix the label"
            )
    samples = [Sample(p, index[lab], s) for (p, lab, _), s in zip(rows, given)]
    data = OwnData(str(path), kind, samples, order, is_3d="volume" in kinds, split_note=note)
    if len(order) < 2:
        raise DataError(f"{source}: only one class ({order[0]}); classification needs at least two")
    for name in SPLITS:
        present = {s.label for s in data.split(name)}
        if not present:
            raise DataError(f"{source}: the {name} split is empty; every split needs files")
        if require_labels_everywhere and len(present) < len(order):
            lacking = [order[i] for i in range(len(order)) if i not in present]
            raise DataError(
                f"{source}: the {name} split has no file of class {', '.join(map(repr, lacking))}; AUC needs "
                "every class in val and test: add files or change the split"
            )
    return data


def write_file_list(data: OwnData, folder: str | os.PathLike) -> Path:
    """Record the files, labels and splits in ``folder``: ``splits.csv`` (2D) or ``datalist.json``
    (3D), either readable by :func:`scan` to the same split. Written atomically."""
    from ..atomic import atomic_write_text

    folder = Path(folder)
    if data.is_3d:
        keys = {"train": "training", "val": "validation", "test": "test"}
        doc = {
            keys[name]: [{"image": s.path, "label": data.classes[s.label]} for s in data.split(name)]
            for name in SPLITS
        }
        out = folder / "datalist.json"
        atomic_write_text(out, json.dumps(doc, indent=1) + "\n")
        return out
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "split"])
    for s in data.samples:
        w.writerow([s.path, data.classes[s.label], s.split])
    out = folder / "splits.csv"
    atomic_write_text(out, buf.getvalue())
    return out
