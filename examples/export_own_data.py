#!/usr/bin/env python
"""Write real MedMNIST data as "your own data": a PNG class folder, a CSV, and a NIfTI datalist.

The three formats ``rllm-zoo train --data`` reads, made from the official RetinaMNIST and
AdrenalMNIST3D files, so the README's own-data commands run on real images offline::

    python examples/export_own_data.py --data-root ../shared/medmnist --out own_data
    # own_data/retina/<class>/*.png           class sub-folders, no split (rllm-zoo makes one)
    # own_data/retina.csv                     path,label,split with the official split
    # own_data/adrenal/datalist.json + *.nii.gz  MONAI datalist with the official split

``--limit N`` keeps the first N images of each split (quick runs).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

SPLITS = {"train": "training", "val": "validation", "test": "test"}


def export_retina(root: Path, out: Path, limit: int) -> int:
    from PIL import Image

    data = np.load(root / "retinamnist.npz")
    rows = []
    for split in SPLITS:
        images, labels = data[f"{split}_images"][: limit or None], data[f"{split}_labels"][: limit or None]
        for i, (img, lab) in enumerate(zip(images, labels[:, 0])):
            rel = Path("retina") / f"grade{lab}" / f"{split}_{i:04d}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(out / rel)
            rows.append([str(rel), rel.parent.name, split])
    with open(out / "retina.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "split"], *rows])
    return len(rows)


def export_adrenal(root: Path, out: Path, limit: int) -> int:
    import nibabel as nib

    data = np.load(root / "adrenalmnist3d.npz")
    folder = out / "adrenal"
    folder.mkdir(parents=True, exist_ok=True)
    doc: dict[str, list] = {}
    for split, key in SPLITS.items():
        vols, labels = data[f"{split}_images"][: limit or None], data[f"{split}_labels"][: limit or None]
        doc[key] = []
        for i, (vol, lab) in enumerate(zip(vols, labels[:, 0])):
            name = f"{split}_{i:04d}.nii.gz"
            nib.save(nib.Nifti1Image(vol.astype(np.uint8), np.eye(4)), folder / name)
            doc[key].append({"image": name, "label": ["normal", "hyperplasia"][int(lab)]})
    (folder / "datalist.json").write_text(json.dumps(doc, indent=1) + "\n")
    return sum(len(v) for v in doc.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-root", default="../shared/medmnist", help="folder with the MedMNIST .npz files"
    )
    parser.add_argument("--out", default="own_data")
    parser.add_argument("--limit", type=int, default=0, help="first N items of each split (0: all)")
    args = parser.parse_args(argv)
    root, out = Path(args.data_root), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"{export_retina(root, out, args.limit)} RetinaMNIST images -> {out / 'retina'}, {out / 'retina.csv'}"
    )
    print(
        f"{export_adrenal(root, out, args.limit)} AdrenalMNIST3D volumes -> {out / 'adrenal' / 'datalist.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
