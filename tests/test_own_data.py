"""Own data end to end: image folders, CSV, NIfTI datalists; predict; one preprocessing to package and bundle.

Everything runs on tiny generated files (PIL images, nibabel NIfTI) and a tiny random llama layer.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from rllm_zoo.cli import main
from rllm_zoo.data import DataError, Preprocessing, medmnist_preprocessing, scan

MICRO = {"depth": 2, "embed_dim": 32, "num_heads": 2}
CLASSES = ("benign", "malignant", "normal")


def make_image_folder(root: Path, per_class: int = 10) -> Path:
    """Class sub-folders of grey and RGB PNG / JPEG / TIFF images of various sizes; brightness = class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(20, 50, 2))
            a = (rng.integers(0, 60, (h, w)) + c * 80).clip(0, 255).astype(np.uint8)
            img = Image.fromarray(a, "L") if i % 2 else Image.fromarray(np.stack([a] * 3, -1), "RGB")
            img.save(root / name / f"img{i}.{('png', 'jpg', 'tif')[i % 3]}")
    return root


def make_nifti_datalist(root: Path, n: int = 20) -> Path:
    """Volumes of various shapes and spacings, labelled by intensity, in a datalist with all three splits."""
    import nibabel as nib

    rng = np.random.default_rng(1)
    (root / "vols").mkdir(parents=True, exist_ok=True)
    items: dict[str, list] = {"training": [], "validation": [], "test": []}
    for i in range(n):
        c = i % 2
        shape = tuple(int(v) for v in rng.integers(30, 44, 3))
        a = (rng.normal(0, 100, shape) + c * 300 - 500).astype(np.float32)
        nib.save(nib.Nifti1Image(a, np.diag([1.5, 1.2, 2.0, 1])), root / "vols" / f"case{i:02d}.nii.gz")
        key = "training" if i < n - 8 else "validation" if i < n - 4 else "test"
        items[key].append({"image": f"vols/case{i:02d}.nii.gz", "label": ["healthy", "lesion"][c]})
    path = root / "datalist.json"
    path.write_text(json.dumps(items, indent=1))
    return path


def _train_args(data: str, out: Path, llm: str, **extra: str) -> list[str]:
    args = {
        "data": data,
        "llm": llm,
        "epochs": "1",
        "batch-size": "8",
        "lr": "3e-3",
        "warmup-epochs": "0.5",
        "out": str(out),
        **extra,
    }
    return ["train", *[x for k, v in args.items() for x in (f"--{k}", v)]]


def _csv_scores(path: Path) -> np.ndarray:
    rows = list(csv.DictReader(open(path)))
    return np.array([[float(v) for k, v in r.items() if k.startswith("prob_")] for r in rows])


def _bundle(args: list[str], cwd: Path, llm_dir: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), RLLM_ZOO_LLM_PATH=str(llm_dir.parent), OMP_NUM_THREADS="2")
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def tiny_llm(tiny_llm_dir):
    return tiny_llm_dir("llama")


@pytest.fixture(scope="module")
def run2d(tmp_path_factory, tiny_llm):
    root = tmp_path_factory.mktemp("own2d")
    images = make_image_folder(root / "images")
    out = root / "run"
    args = _train_args(str(images), out, str(tiny_llm), **{"model-kwargs": json.dumps(MICRO), "epochs": "2"})
    assert main([*args, "--package"]) == 0
    return images, out


def test_2d_folder_run_records_its_data_and_preprocessing(run2d, capsys):
    images, out = run2d
    for name in (
        "splits.csv",
        "dataset.json",
        "preprocessing.json",
        "config.yaml",
        "metrics.json",
        "package",
    ):
        assert (out / name).exists(), name
    info = json.loads((out / "dataset.json").read_text())["info"]
    assert info["class_names"] == list(CLASSES) and info["n_channels"] == 3 and info["task"] == "multi-class"
    prep = Preprocessing.load(out / "preprocessing.json")
    assert prep == Preprocessing(2, (28, 28), 3)  # the model's input size, RGB because some images are
    again = scan(out / "splits.csv")  # the recorded split reads back to the same split and classes
    first = scan(images, seed=0)
    assert again.classes == first.classes
    assert {(s.path, s.label, s.split) for s in again.samples} == {
        (s.path, s.label, s.split) for s in first.samples
    }
    assert first.counts() == {"train": 21, "val": 3, "test": 6}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == list(CLASSES) and metrics["llm_sha256"] and metrics["llm_layer"] == 3
    assert main(["eval", str(out), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["auc"] == pytest.approx(metrics["test"]["auc"])


def test_2d_package_is_timm_with_the_runs_preprocessing(run2d, tiny_llm, monkeypatch):
    import timm
    from PIL import Image

    from rllm_zoo.data import ImageFiles

    images, out = run2d
    monkeypatch.setenv("RLLM_ZOO_LLM_PATH", str(tiny_llm.parent))
    model = timm.create_model(f"local-dir:{out / 'package'}", pretrained=True).eval()
    assert model.pretrained_cfg["label_names"] == list(CLASSES)
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg["input_size"] == (3, 28, 28) and cfg["crop_mode"] == "squash" and cfg["crop_pct"] == 1.0
    timm_tf = timm.data.create_transform(**cfg)
    prep = Preprocessing.load(out / "preprocessing.json")
    for path in sorted(images.rglob("*.*"))[:6]:  # any size, grey or RGB, through timm's own transform
        x_timm = timm_tf(Image.open(path).convert("RGB"))
        x_ours = ImageFiles([str(path)], [0], prep, progress=False)[0][0]
        torch.testing.assert_close(x_timm, x_ours, rtol=0, atol=0)
    text = "".join(p.read_text(errors="ignore") for p in (out / "package").rglob("*") if p.is_file())
    assert str(out) not in text and str(images) not in text and str(tiny_llm) not in text


def test_predict_reproduces_the_runs_test_predictions(run2d, tiny_llm, tmp_path, monkeypatch, capsys):
    images, out = run2d
    monkeypatch.setenv("RLLM_ZOO_LLM_PATH", str(tiny_llm.parent))
    saved = np.load(out / "test_predictions.npz")["scores"]
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    for model in (out, out / "package"):  # run folder and packaged timm folder
        csv_out = tmp_path / f"{model.name}.csv"
        assert (
            main(["predict", str(model), str(out / "splits.csv"), "--split", "test", "--out", str(csv_out)])
            == 0
        )
        summary = json.loads(capsys.readouterr().out)
        np.testing.assert_allclose(_csv_scores(csv_out), saved, atol=1e-6)
        assert summary["acc"] == metrics["acc"] and summary["auc"] == pytest.approx(metrics["auc"])
    # a folder of files, with Grad-CAM overlays
    cams = tmp_path / "cams"
    assert (
        main(
            [
                "predict",
                str(out),
                str(images / "normal"),
                "--out",
                str(tmp_path / "f.csv"),
                "--cam",
                str(cams),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(open(tmp_path / "f.csv")))
    assert len(rows) == 10 and set(rows[0]) == {"path", "predicted", *(f"prob_{c}" for c in CLASSES)}
    assert len(list(cams.glob("*_cam.png"))) == 10


def test_csv_source_with_split_column_and_numeric_labels(tmp_path):
    from PIL import Image

    (tmp_path / "img").mkdir()
    lines = ["path,label,split"]
    for i in range(12):
        Image.fromarray(np.full((8, 8), i * 10, np.uint8)).save(tmp_path / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,{(0, 2, 10)[i % 3]},{('train', 'train', 'val', 'test')[i % 4]}")
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    data = scan(tmp_path / "d.csv", require_labels_everywhere=False)
    assert data.classes == ("0", "2", "10")  # numbers sort as numbers
    assert data.kind == "csv" and not data.is_3d and data.counts() == {"train": 6, "val": 3, "test": 3}
    assert all(Path(s.path).is_absolute() and Path(s.path).is_file() for s in data.samples)


def _bad(tmp_path: Path, capsys, args: list[str], expect: str) -> None:
    out = tmp_path / "never"
    assert main([*args, "--out", str(out)] if args[0] == "train" else args) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()  # nothing written


def test_bad_data_gets_one_line_before_anything_is_written(tmp_path, tiny_llm, capsys):
    from PIL import Image

    llm = str(tiny_llm)
    root = make_image_folder(tmp_path / "ok", per_class=4)
    train = ["train", "--llm", llm, "--epochs", "1"]
    # a corrupt (truncated) image
    broken = tmp_path / "broken"
    make_image_folder(broken, per_class=4)
    data = (broken / "normal" / "img1.jpg").read_bytes()
    (broken / "normal" / "img1.jpg").write_bytes(data[: len(data) // 3])
    _bad(tmp_path, capsys, [*train, "--data", str(broken)], "img1.jpg: cannot read this image")
    # an empty class folder
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "empty" / "a" / "x.png")
    _bad(tmp_path, capsys, [*train, "--data", str(tmp_path / "empty")], "empty class folder")
    # a CSV missing a column, and one with a missing file
    (tmp_path / "nolabel.csv").write_text("path,split\nx.png,train\n")
    _bad(tmp_path, capsys, [*train, "--data", str(tmp_path / "nolabel.csv")], "missing column 'label'")
    (tmp_path / "missing.csv").write_text("path,label\nnowhere.png,a\n")
    _bad(tmp_path, capsys, [*train, "--data", str(tmp_path / "missing.csv")], "nowhere.png: file not found")
    # a class absent from the test split (AUC needs every class)
    rows = ["path,label,split"] + [
        f"{p},{p.parent.name},{'test' if p.parent.name == 'benign' and i < 2 else 'val' if i < 2 else 'train'}"
        for p in sorted(root.rglob("*.*"))
        for i in [int(p.stem[3:]) % 4]
    ]
    (tmp_path / "lacking.csv").write_text("\n".join(rows) + "\n")
    _bad(tmp_path, capsys, [*train, "--data", str(tmp_path / "lacking.csv")], "has no file of class")
    # mixed 2D / 3D, a datalist item without a label, a bad split string, flag and data together
    (tmp_path / "v.nii.gz").write_bytes(b"")
    (tmp_path / "mixed.csv").write_text(f"path,label\nv.nii.gz,a\n{next(root.rglob('*.png'))},b\n")
    _bad(tmp_path, capsys, [*train, "--data", str(tmp_path / "mixed.csv")], "mixes 2D images and 3D volumes")
    (tmp_path / "dl.json").write_text(json.dumps({"training": [{"image": "v.nii.gz"}]}))
    _bad(tmp_path, capsys, [*train, "--data", str(tmp_path / "dl.json")], "needs 'image' and 'label'")
    _bad(tmp_path, capsys, [*train, "--data", str(root), "--split", "0.5,0.5"], "--split '0.5,0.5'")
    _bad(tmp_path, capsys, [*train, "--data", str(root), "--flag", "retinamnist"], "not both")
    _bad(tmp_path, capsys, [*train, "--data", str(tmp_path / "nothing")], "no such file or folder")
    # predict: a label the model does not know, an input of the wrong kind
    (tmp_path / "unknown.csv").write_text(f"path,label\n{next(root.rglob('*.png'))},zebra\n")
    assert main([*_train_args(str(root), tmp_path / "r", llm, **{"model-kwargs": json.dumps(MICRO)})]) == 0
    capsys.readouterr()
    _bad(
        tmp_path,
        capsys,
        ["predict", str(tmp_path / "r"), str(tmp_path / "unknown.csv")],
        "label 'zebra' is not among",
    )
    _bad(
        tmp_path,
        capsys,
        ["predict", str(tmp_path / "r"), str(tmp_path / "v.nii.gz")],
        "this model takes images",
    )


def test_3d_nifti_datalist_at_64_bundle_and_predict_reproduce_the_run(
    tmp_path, tiny_llm, monkeypatch, capsys, local_hub
):
    datalist = make_nifti_datalist(tmp_path / "nii")
    out = tmp_path / "run"
    args = _train_args(
        str(datalist), out, str(tiny_llm), size="64", **{"model-kwargs": json.dumps({"num_layers": 1})}
    )
    assert main([*args, "--package"]) == 0  # default preset rllm_vit3d_small, no patch flag
    assert "\r" not in capsys.readouterr().err  # piped output: plain progress lines
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "rllm_vit3d_small"
    prep = Preprocessing.load(out / "preprocessing.json")
    assert prep.size == (64, 64, 64) and prep.intensity is None  # own volumes: min-max per volume
    bundle = out / "package"
    net = json.loads((bundle / "configs" / "inference.json").read_text())
    assert net["image_size"] == [64, 64, 64] and net["network_def"]["patch_size"] == [16, 16, 16]
    assert net["preprocessing"]["transforms"] == prep.monai_transforms()
    # the bundle's own evaluate.json reproduces the run's test metrics
    _bundle(
        ["--config_file", "configs/evaluate.json", "--datalist", str(out / "datalist.json")], bundle, tiny_llm
    )
    got = json.loads((bundle / "eval" / "metrics.json").read_text())["metrics"]
    assert got["test_acc"] == pytest.approx(metrics["test"]["acc"]) and got["test_auc"] == pytest.approx(
        metrics["test"]["auc"]
    )
    # its inference.json runs on a plain folder of the user's NIfTI files
    _bundle(
        ["--config_file", "configs/inference.json", "--input_dir", str(tmp_path / "nii" / "vols")],
        bundle,
        tiny_llm,
    )
    assert len((bundle / "eval" / "predictions.csv").read_text().splitlines()) == 20
    # predict (packaged bundle) reproduces test_predictions.npz
    monkeypatch.setenv("RLLM_ZOO_LLM_PATH", str(tiny_llm.parent))
    csv_out = tmp_path / "p.csv"
    assert (
        main(["predict", str(bundle), str(out / "datalist.json"), "--split", "test", "--out", str(csv_out)])
        == 0
    )
    saved = np.load(out / "test_predictions.npz")["scores"]
    np.testing.assert_allclose(_csv_scores(csv_out), saved, atol=1e-6)
    # pushed as a bundle repo and predicted from the Hub: the same
    repo = local_hub.new_repo_id()
    assert main(["push", str(out), "--repo-id", repo]) == 0
    assert main(["predict", repo, str(out / "datalist.json"), "--split", "test", "--out", str(csv_out)]) == 0
    np.testing.assert_allclose(_csv_scores(csv_out), saved, atol=1e-6)


def test_3d_medmnist_bundle_uses_the_runs_scaling_and_size(medmnist_root, tiny_llm, tmp_path):
    """The reported bug: a packaged 3D run's bundle scaled to [0, 1] (training: [-1, 1])."""
    out = tmp_path / "run"
    args = _train_args("x", out, str(tiny_llm), **{"model-kwargs": json.dumps({"num_layers": 1})})
    args[args.index("--data") : args.index("--data") + 2] = [
        "--flag",
        "nodulemnist3d",
        "--data-root",
        str(medmnist_root),
    ]
    assert main([*args, "--package"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    bundle = out / "package"
    _bundle(["--config_file", "configs/evaluate.json", "--dataset_dir", str(medmnist_root)], bundle, tiny_llm)
    got = json.loads((bundle / "eval" / "metrics.json").read_text())["metrics"]
    assert got["test_acc"] == pytest.approx(metrics["test"]["acc"]) and got["test_auc"] == pytest.approx(
        metrics["test"]["auc"]
    )
    scale = json.loads((bundle / "configs" / "evaluate.json").read_text())["preprocessing"]["transforms"][-1]
    assert (scale["b_min"], scale["b_max"]) == (-1.0, 1.0)


def test_medmnist_3d_scaling_is_unchanged():
    """[-1, 1] from uint8, bit-identical to the previous float64 /255 then x*2-1 pipeline."""
    prep = medmnist_preprocessing("adrenalmnist3d")
    vol = (np.arange(28**3) % 256).astype(np.uint8).reshape(1, 28, 28, 28)  # every value, at the file's size
    x = prep.volume_transform()({"image": vol})["image"]
    old = torch.as_tensor(vol / 255.0).float() * 2 - 1
    assert torch.equal(torch.as_tensor(x), old)


def test_preprocessing_record_validates():
    p = Preprocessing(3, 32, 1, intensity=(-1000, 400))
    assert p.size == (32, 32, 32) and Preprocessing.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="intensity must be"):
        Preprocessing(3, 32, 1, intensity=(1, 1))
    with pytest.raises(ValueError, match=r"grayscale \(1\) or RGB \(3\)"):
        Preprocessing(2, 28, 2)
    with pytest.raises(ValueError, match="unknown preprocessing keys"):
        Preprocessing.from_dict({**p.to_dict(), "resize": "x"})
    with pytest.raises(DataError, match="three positive fractions"):
        from rllm_zoo.data import parse_split

        parse_split("0.7,0.3")


def test_seeds_share_one_split(tmp_path):
    """--seeds varies the model, not the data: the split follows split_seed only."""
    from rllm_zoo.training import TrainConfig
    from rllm_zoo.training.run import open_training_data

    images = make_image_folder(tmp_path / "images", per_class=6)
    splits = [
        {(s.path, s.split) for s in open_training_data(TrainConfig(data=str(images), **kw)).data.samples}
        for kw in ({"seed": 0}, {"seed": 3}, {"seed": 0, "split_seed": 1})
    ]
    assert splits[0] == splits[1] and splits[0] != splits[2]


def test_push_then_predict_from_the_hub_reproduces_the_run(
    run2d, tiny_llm, local_hub, tmp_path, monkeypatch, capsys
):
    """A pushed own-data run (rllm-zoo push) keeps its classes and preprocessing: predict hf-hub:<repo> = the run."""
    _, out = run2d
    monkeypatch.setenv("RLLM_ZOO_LLM_PATH", str(tiny_llm.parent))
    repo = local_hub.new_repo_id()
    assert main(["push", str(out), "--repo-id", repo]) == 0
    capsys.readouterr()
    csv_out = tmp_path / "hub.csv"
    assert (
        main(["predict", f"hf-hub:{repo}", str(out / "splits.csv"), "--split", "test", "--out", str(csv_out)])
        == 0
    )
    np.testing.assert_allclose(
        _csv_scores(csv_out), np.load(out / "test_predictions.npz")["scores"], atol=1e-6
    )
    assert (
        json.loads(capsys.readouterr().out)["acc"]
        == json.loads((out / "metrics.json").read_text())["test"]["acc"]
    )
    header = open(csv_out).readline().strip().split(",")
    assert header[3:] == [f"prob_{c}" for c in CLASSES]
    # the packaged folder pushed as such keeps them too
    repo2 = local_hub.new_repo_id()
    assert main(["push", str(out / "package"), "--repo-id", repo2]) == 0
    capsys.readouterr()
    assert main(["predict", repo2, str(out / "splits.csv"), "--split", "test", "--out", str(csv_out)]) == 0
    np.testing.assert_allclose(
        _csv_scores(csv_out), np.load(out / "test_predictions.npz")["scores"], atol=1e-6
    )
