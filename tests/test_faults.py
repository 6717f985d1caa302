"""Fault injection through the CLI: every bad input is one line (exit 2) naming the file or option and the
fix, and nothing is written. Each case is one row of docs/reliability.md (``make fault-table``)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import write_medmnist_npz

from rllm_zoo.cli import main


@dataclass
class Ctx:
    """What a case may use: a scratch folder, a MedMNIST root, a finished run, a tiny LLM."""

    tmp: Path
    root: Path
    run: Path
    llm: str

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def train(self, *extra: str) -> list[str]:
        return ["train", "--out", str(self.out), "--llm", self.llm, *extra]

    def medmnist(self, *extra: str) -> list[str]:
        return self.train("--flag", "dermamnist", "--data-root", str(self.root), *extra)

    def file(self, name: str, text: str | bytes) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    def copy_run(self) -> Path:
        dest = self.tmp / "run"
        shutil.copytree(self.run, dest)
        return dest


@dataclass
class Case:
    id: str
    category: str
    what: str
    expect: str
    argv: Callable[[Ctx], list[str]]


def _npz(ctx: Ctx, change: Callable[[dict], None], flag: str = "dermamnist") -> list[str]:
    root = ctx.tmp / "root"
    write_medmnist_npz(root, flag)
    arrays = dict(np.load(root / f"{flag}.npz"))
    change(arrays)
    np.savez(root / f"{flag}.npz", **arrays)
    return ctx.train("--flag", flag, "--data-root", str(root))


def _truncated_npz(ctx: Ctx) -> list[str]:
    root = ctx.tmp / "root"
    path = write_medmnist_npz(root, "dermamnist")
    path.write_bytes(path.read_bytes()[:400])
    return ctx.train("--flag", "dermamnist", "--data-root", str(root))


def _images(ctx: Ctx, spoil: Callable[[Path], None] = lambda p: None, classes=("a", "b")) -> str:
    from PIL import Image

    root = ctx.tmp / "images"
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    spoil(root)
    return str(root)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _nifti_list(ctx: Ctx, broken: bool) -> str:
    import nibabel as nib

    root = ctx.tmp / "vols"
    root.mkdir()
    items = {"training": [], "validation": [], "test": []}
    for i, key in enumerate(["training"] * 4 + ["validation"] * 2 + ["test"] * 2):
        name = f"v{i}.nii.gz"
        nib.save(nib.Nifti1Image(np.full((6, 6, 6), i, np.float32), np.eye(4)), root / name)
        items[key].append({"image": name, "label": i % 2})
    if broken:
        (root / "v5.nii.gz").write_bytes(b"not a volume at all")
    (root / "datalist.json").write_text(json.dumps(items))
    return str(root / "datalist.json")


def _image_csv(ctx: Ctx, split_of: Callable[[Path], str]) -> str:
    """A CSV of the images of :func:`_images`, labelled by folder, split by ``split_of(path)``."""
    rows = [f"{p},{p.parent.name},{split_of(p)}\n" for p in sorted(Path(_images(ctx)).rglob("*.png"))]
    return ctx.file("d.csv", "path,label,split\n" + "".join(rows))


def _mixed(ctx: Ctx) -> list[str]:
    ctx.file("v.nii.gz", b"")
    png = next(Path(_images(ctx)).rglob("*.png"))
    return ctx.train("--data", ctx.file("d.csv", f"path,label\nv.nii.gz,a\n{png},b\n"))


def _run_with(ctx: Ctx, name: str, content: bytes) -> list[str]:
    run = ctx.copy_run()
    (run / name).write_bytes(content)
    return ["eval", str(run)]


def _pickled_object() -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"model": {}, "epoch": 1, "payload": Ctx}, buf)  # a class: refused by weights_only
    return buf.getvalue()


CASES = [
    # --- config values
    Case(
        "yaml-float-epochs",
        "config",
        "`epochs: 2.5` in --config",
        "epochs must be an integer",
        lambda c: c.medmnist("--config", c.file("c.yaml", "epochs: 2.5\n")),
    ),
    Case(
        "yaml-bool-epochs",
        "config",
        "`epochs: true` (used to train 1 epoch silently)",
        "epochs must be an integer",
        lambda c: c.medmnist("--config", c.file("c.yaml", "epochs: true\n")),
    ),
    Case(
        "yaml-list-lr",
        "config",
        "`lr: [0.1]`",
        "lr must be a number",
        lambda c: c.medmnist("--config", c.file("c.yaml", "lr: [0.1]\n")),
    ),
    Case(
        "yaml-int-model-kwargs",
        "config",
        "`model_kwargs: 5`",
        "model_kwargs must be a mapping",
        lambda c: c.medmnist("--config", c.file("c.yaml", "model_kwargs: 5\n")),
    ),
    Case(
        "yaml-unknown-key",
        "config",
        "`epoch: 3` (typo)",
        "unknown config key 'epoch'",
        lambda c: c.medmnist("--config", c.file("c.yaml", "epoch: 3\n")),
    ),
    Case(
        "yaml-corrupt",
        "config",
        "--config that is not YAML",
        "not valid YAML",
        lambda c: c.medmnist("--config", c.file("c.yaml", "epochs: [1,\n  lr: }\n")),
    ),
    Case(
        "yaml-missing",
        "config",
        "--config that does not exist",
        "no such config file",
        lambda c: c.medmnist("--config", str(c.tmp / "nope.yaml")),
    ),
    Case("lr-nan", "config", "--lr nan", "lr must be a finite number", lambda c: c.medmnist("--lr", "nan")),
    Case("lr-zero", "config", "--lr 0", "lr must be > 0", lambda c: c.medmnist("--lr", "0")),
    Case(
        "epochs-text",
        "config",
        "--epochs ten",
        "epochs='ten' is not int",
        lambda c: c.medmnist("--epochs", "ten"),
    ),
    Case("epochs-zero", "config", "--epochs 0", "epochs must be >= 1", lambda c: c.medmnist("--epochs", "0")),
    Case(
        "seeds-empty",
        "config",
        '--seeds ",,," (used to exit 0 with a summary of NaNs)',
        "--seeds ',,,'",
        lambda c: c.medmnist("--seeds", ",,,"),
    ),
    Case(
        "seeds-repeated",
        "config",
        "--seeds 0,0",
        "a seed is repeated",
        lambda c: c.medmnist("--seeds", "0,0"),
    ),
    Case(
        "booster-typo",
        "config",
        "--booster resid",
        "booster='resid' is not one of",
        lambda c: c.medmnist("--booster", "resid"),
    ),
    Case(
        "label-smoothing",
        "config",
        "--label-smoothing 1.5",
        "label_smoothing and drop_path must be in",
        lambda c: c.medmnist("--label-smoothing", "1.5"),
    ),
    Case(
        "flag-and-data",
        "config",
        "--flag and --data together",
        "not both",
        lambda c: c.medmnist("--data", str(c.tmp)),
    ),
    Case("no-data", "config", "neither --flag nor --data", "pass --flag", lambda c: c.train()),
    Case(
        "intensity-window",
        "config",
        "--intensity 5,1",
        "LOW < HIGH",
        lambda c: c.medmnist("--intensity", "5,1"),
    ),
    Case(
        "medmnist-size",
        "config",
        "--size 30 with a MedMNIST flag",
        "size must be one of",
        lambda c: c.medmnist("--size", "30"),
    ),
    Case(
        "unknown-model",
        "config",
        "--model vit_nonexistent",
        "unknown model 'vit_nonexistent'",
        lambda c: c.medmnist("--model", "vit_nonexistent"),
    ),
    # --- MedMNIST files
    Case(
        "npz-missing",
        "medmnist",
        "no <flag>.npz in --data-root",
        "dermamnist.npz not found",
        lambda c: c.train("--flag", "dermamnist", "--data-root", str(c.tmp)),
    ),
    Case(
        "npz-truncated",
        "medmnist",
        "a truncated .npz (used to raise BadZipFile)",
        "damaged or not a MedMNIST .npz",
        _truncated_npz,
    ),
    Case(
        "npz-missing-split",
        "medmnist",
        "a .npz without test arrays (used to raise KeyError)",
        "no test_images array",
        lambda c: _npz(c, lambda a: [a.pop("test_images"), a.pop("test_labels")]),
    ),
    Case(
        "npz-wrong-size",
        "medmnist",
        "64 px images in the 28 px file (used to fail inside timm)",
        "not 28 px",
        lambda c: _npz(c, lambda a: a.update(train_images=np.zeros((4, 64, 64, 3), np.uint8))),
    ),
    Case(
        "npz-label-range",
        "medmnist",
        "a label 9 in a 7-class set (used to raise IndexError)",
        "labels do not fit",
        lambda c: _npz(c, lambda a: a["train_labels"].__setitem__(0, 9)),
    ),
    Case(
        "npz-empty-split",
        "medmnist",
        "an empty val split (used to fail in the scheduler)",
        "the val split is empty",
        lambda c: _npz(c, lambda a: a.update(val_images=a["val_images"][:0], val_labels=a["val_labels"][:0])),
    ),
    Case(
        "download-offline",
        "medmnist",
        "--download without network (used to leave an empty data root)",
        "could not download",
        lambda c: c.train("--flag", "dermamnist", "--data-root", str(c.tmp / "new"), "--download", "true"),
    ),
    # --- own data
    Case(
        "image-corrupt",
        "own data",
        "a truncated PNG in a class folder",
        "cannot read this image",
        lambda c: c.train("--data", _images(c, lambda r: _truncate(r / "a" / "1.png"))),
    ),
    Case(
        "image-not-image",
        "own data",
        "a text file named .png",
        "cannot read this image",
        lambda c: c.train("--data", _images(c, lambda r: (r / "b" / "2.png").write_text("hello"))),
    ),
    Case(
        "class-folder-empty",
        "own data",
        "an empty class folder",
        "empty class folder",
        lambda c: c.train("--data", _images(c, lambda r: (r / "c").mkdir())),
    ),
    Case(
        "single-class",
        "own data",
        "one class only",
        "at least two",
        lambda c: c.train("--data", _images(c, classes=("a",))),
    ),
    Case(
        "too-few-to-split",
        "own data",
        "a class of 2 files and no split",
        "needs at least 3 per class",
        lambda c: c.train("--data", _images(c, lambda r: [(r / "a" / f"{i}.png").unlink() for i in (0, 1)])),
    ),
    Case(
        "csv-missing-column",
        "own data",
        "a CSV without `label`",
        "missing column 'label'",
        lambda c: c.train("--data", c.file("d.csv", "path,split\na.png,train\n")),
    ),
    Case(
        "csv-missing-file",
        "own data",
        "a CSV row whose file does not exist",
        "file not found",
        lambda c: c.train("--data", c.file("d.csv", "path,label\nnowhere.png,a\n")),
    ),
    Case(
        "csv-bad-split",
        "own data",
        "a CSV split value `holdout`",
        "use train, val or test",
        lambda c: c.train("--data", _image_csv(c, lambda p: "holdout")),
    ),
    Case(
        "class-missing-in-test",
        "own data",
        "a class absent from the test split",
        "has no file of class",
        lambda c: c.train(
            "--data",
            _image_csv(
                c,
                lambda p: (
                    "test" if (p.parent.name, p.stem) == ("a", "0") else "val" if p.stem == "1" else "train"
                ),
            ),
        ),
    ),
    Case(
        "mixed-2d-3d", "own data", "a CSV listing a PNG and a NIfTI", "mixes 2D images and 3D volumes", _mixed
    ),
    Case(
        "datalist-no-label",
        "own data",
        "a datalist item without `label`",
        "needs 'image' and 'label'",
        lambda c: c.train("--data", c.file("dl.json", json.dumps({"training": [{"image": "x.nii.gz"}]}))),
    ),
    Case(
        "datalist-not-json",
        "own data",
        "a datalist that is not JSON",
        "not valid JSON",
        lambda c: c.train("--data", c.file("dl.json", "{training: oops")),
    ),
    Case(
        "volume-corrupt",
        "own data",
        "a NIfTI file that is garbage",
        "cannot read this volume",
        lambda c: c.train(
            "--data", _nifti_list(c, broken=True), "--size", "8", "--model-kwargs", '{"patch_size": 4}'
        ),
    ),
    Case(
        "data-missing",
        "own data",
        "--data pointing nowhere",
        "no such file or folder",
        lambda c: c.train("--data", str(c.tmp / "nowhere")),
    ),
    # --- runs
    Case(
        "run-exists",
        "runs",
        "train into a finished run without --resume",
        "already holds a run",
        lambda c: ["train", "--out", str(c.copy_run()), "--flag", "dermamnist", "--data-root", str(c.root)],
    ),
    Case(
        "resume-changed-config",
        "runs",
        "--resume a finished run with other epochs (used to exit 0 silently)",
        "is a finished run with other settings",
        lambda c: [
            "train",
            "--config",
            str(c.run / "config.yaml"),
            "--out",
            str(c.copy_run()),
            "--resume",
            "--epochs",
            "5",
        ],
    ),
    Case(
        "eval-not-a-run",
        "runs",
        "eval on a folder that is no run",
        "is not a run folder",
        lambda c: ["eval", str(c.tmp)],
    ),
    Case(
        "eval-corrupt-config",
        "runs",
        "eval with a corrupt config.yaml",
        "not valid YAML",
        lambda c: _run_with(c, "config.yaml", b"epochs: [1,\n  lr: }\n"),
    ),
    Case(
        "eval-truncated-checkpoint",
        "runs",
        "eval with a truncated best.pt",
        "best.pt is damaged or not an rllm-zoo checkpoint",
        lambda c: _run_with(c, "best.pt", (c.run / "best.pt").read_bytes()[:500]),
    ),
    Case(
        "eval-pickled-checkpoint",
        "runs",
        "eval with a best.pt holding a pickled class (never unpickled)",
        "which rllm-zoo never unpickles",
        lambda c: _run_with(c, "best.pt", _pickled_object()),
    ),
    Case(
        "package-not-a-run",
        "runs",
        "package a folder that is no run",
        "is not a finished rllm-zoo run",
        lambda c: ["package", str(c.tmp)],
    ),
    Case(
        "predict-unknown-label",
        "predict",
        "a CSV label the model does not know",
        "is not among the model's classes",
        lambda c: [
            "predict",
            str(c.run),
            c.file("p.csv", f"path,label\n{next(Path(_images(c)).rglob('*.png'))},zebra\n"),
            "--out",
            str(c.out / "p.csv"),
        ],
    ),
    Case(
        "predict-wrong-kind",
        "predict",
        "a volume given to a 2D model",
        "this model takes images",
        lambda c: ["predict", str(c.run), c.file("v.nii.gz", b"x"), "--out", str(c.out / "p.csv")],
    ),
    Case(
        "predict-no-model",
        "predict",
        "a MODEL path that does not exist",
        "not a folder, nor a Hub repo id",
        lambda c: ["predict", str(c.tmp / "nomodel"), c.file("x.png", b""), "--out", str(c.out / "p.csv")],
    ),
    Case(
        "predict-empty-folder",
        "predict",
        "an input folder without images",
        "no image files",
        lambda c: ["predict", str(c.run), str(c.tmp), "--out", str(c.out / "p.csv")],
    ),
]


@pytest.fixture(scope="module")
def finished_run(medmnist_root, tiny_llm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "run"
    llm = str(tiny_llm_dir("llama"))
    args = ["train", "--flag", "dermamnist", "--data-root", str(medmnist_root), "--llm", llm, "--out", str(out),
            "--model-kwargs", '{"depth": 1, "embed_dim": 32, "num_heads": 2}', "--epochs", "1", "--batch-size", "16",
            "--warmup-epochs", "0", "--progress", "false"]  # fmt: skip
    assert main(args) == 0
    return out, llm


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(case: Case, finished_run, medmnist_root, tmp_path, capsys, record_property):
    run, llm = finished_run
    ctx = Ctx(tmp_path, medmnist_root, run, llm)
    argv = case.argv(ctx)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}  # the case's own inputs are made
    capsys.readouterr()
    assert main(argv) == 2, f"{case.id}: expected exit 2"
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if "error" in line.lower()]  # progress lines may precede it
    assert len(errors) == 1 and errors[0].startswith("rllm-zoo ") and "Traceback" not in err, err
    assert case.expect in errors[0], err
    record_property("behaviour", errors[0].replace(str(tmp_path), "<tmp>"))
    assert not ctx.out.exists(), f"{case.id} wrote {ctx.out}"
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert after == before, f"{case.id} changed files: {sorted(set(after) ^ set(before))}"


def test_case_table_is_large_enough():
    assert len(CASES) >= 45 and len({c.id for c in CASES}) == len(CASES)


def test_debug_shows_the_traceback(finished_run, tmp_path):
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        main(["train", "--flag", "dermamnist", "--epochs", "0", "--out", str(tmp_path / "o"), "--debug"])


def test_reliability_table_lists_every_fault_case():
    """docs/reliability.md (make fault-table) has one row per fault test of the suite."""
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.run(
        [sys.executable, "tools/fault_table.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_fault_warmup_longer_than_the_run_is_mentioned(medmnist_root, tiny_llm_dir, tmp_path, capsys):
    """A warm-up longer than the run trains, with a note that lr is never reached."""
    args = ["train", "--flag", "dermamnist", "--data-root", str(medmnist_root), "--llm", str(tiny_llm_dir("llama")),
            "--out", str(tmp_path / "r"), "--model-kwargs", '{"depth": 1, "embed_dim": 32, "num_heads": 2}',
            "--epochs", "1", "--max-train-batches", "1", "--progress", "false"]  # fmt: skip
    assert main(args) == 0
    assert "note: warmup_epochs 2 >= epochs 1: the learning rate never reaches lr" in capsys.readouterr().err
