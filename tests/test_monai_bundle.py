"""The MONAI bundle in examples/bundles: generator, metadata schema, network I/O, and a real run.

The real run trains one epoch on a subset of AdrenalMNIST3D (../shared/medmnist) with the
committed configs (real SmolLM2 layer), then evaluates and infers with the checkpoint, all in a
copy of the bundle under tmp_path so the repository stays clean.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rllm_zoo.bundles import writer as bundle_writer
from rllm_zoo.data import FLAGS_3D

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ROOT / "examples" / "bundles"
BUNDLE = BUNDLES / "adrenalmnist3d"
MEDMNIST = ROOT.parent / "shared" / "medmnist"
SCHEMA = ROOT.parent / "shared" / "monai" / "meta_schema_20240725.json"
RUN_OUTPUTS = shutil.ignore_patterns("models", "eval")  # never copy outputs of an in-place run
FLAGS = FLAGS_3D  # every 3D MedMNIST flag

needs_schema = pytest.mark.skipif(not SCHEMA.is_file(), reason=f"MONAI bundle schema not found at {SCHEMA}")
needs_adrenal = pytest.mark.skipif(
    not (MEDMNIST / "adrenalmnist3d.npz").is_file(),
    reason=f"real AdrenalMNIST3D data not found at {MEDMNIST / 'adrenalmnist3d.npz'}",
)


def env(threads: int = 2) -> dict[str, str]:
    """Subprocess environment: the repo importable, quiet telemetry, ``threads`` threads per process."""
    e = dict(os.environ, HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return e


def run_cli(args: list[str], cwd: Path, timeout: int = 300, threads: int = 2) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env(threads), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc


def load_generator():
    spec = importlib.util.spec_from_file_location("make_bundle", BUNDLES / "make_bundle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of a bundle's files, leaving out run outputs (models/, eval/)."""
    files = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and rel.parts[0] not in ("models", "eval"):
            files[str(rel)] = p.read_bytes()
    return files


# ---------------------------------------------------------------- generator and metadata


def test_generator_reproduces_the_committed_bundle(tmp_path, capsys):
    out = tmp_path / "adrenalmnist3d"
    assert load_generator().main(["--flag", "adrenalmnist3d", "--out", str(out)]) == 0
    assert "configs/train.json" in capsys.readouterr().out
    generated, committed = tree(out), tree(BUNDLE)
    assert sorted(generated) == sorted(committed), "file lists differ: regenerate with make_bundle.py"
    differ = [name for name in generated if generated[name] != committed[name]]
    assert differ == [], (
        f"regenerate the bundle: python examples/bundles/make_bundle.py --flag adrenalmnist3d --out {BUNDLE}"
    )


def test_generator_covers_every_3d_flag():
    import medmnist

    gen = load_generator()
    assert tuple(gen.FLAGS) == FLAGS
    for flag in FLAGS:
        info = medmnist.INFO[flag]
        files = gen.bundle_files(flag)
        train = json.loads(files["configs/train.json"])
        meta = json.loads(files["configs/metadata.json"])
        assert train["num_classes"] == len(info["label"])
        assert (
            train["data_flag"] == flag
            and "rllm_zoo.bundles.bundle_records" in train["train"]["dataset"]["data"]
        )
        assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == len(info["label"])
        assert info["python_class"] in files["docs/README.md"]
    with pytest.raises(ValueError, match="choose one of adrenalmnist3d, fracturemnist3d"):
        bundle_writer.flag_info("chestmnist")
    with pytest.raises(SystemExit):
        gen.main(["--flag", "chestmnist", "--out", "unused"])


def test_committed_bundle_contents():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["schema"].endswith("/0.8.1/meta_schema_20240725.json")
    assert "rllm_zoo" in meta["required_packages_version"]
    assert meta["eval_metrics"] == {} and "PLACEHOLDER" in meta["eval_metrics_note"]
    assert any("2403.17343" in r for r in meta["references"]) and any(
        "MedMNIST v2" in r for r in meta["references"]
    )
    assert meta["label_classes"] == "0: normal, 1: hyperplasia"
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    assert train["network_def"]["_target_"] == "rllm_zoo.monai.create_network"
    assert train["llm"] == "smollm2" and train["network_name"] == "rllm_vit3d_small"
    assert train["optimizer"]["params"] == "$@network_def.trainable_parameters()"
    assert train["validate"]["handlers"][1]["key_metric_filename"] == "model.pt"
    multi = json.loads((BUNDLE / "configs" / "multi_gpu_train.json").read_text())
    assert multi["train#sampler"]["_target_"] == "DistributedSampler"
    assert multi["network"]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
    license_text = (BUNDLE / "LICENSE").read_text()
    assert "Apache License, Version 2.0" in license_text and "CC BY 4.0" in license_text
    readme = (BUNDLE / "docs" / "README.md").read_text()
    for cmd in ("configs/train.json", "configs/evaluate.json", "configs/inference.json", "torchrun"):
        assert cmd in readme


def test_medmnist_records_layouts():
    import numpy as np

    from rllm_zoo.monai import medmnist_records

    class FakeMNIST3D:  # the attributes medmnist datasets expose
        flag, split, as_rgb, info = "fakemnist3d", "test", False, {"task": "binary-class"}
        imgs = np.arange(3 * 4 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4, 4)
        labels = np.array([[1], [0], [1]])

    class FakeMNIST:
        flag, split, as_rgb, info = "fakemnist", "val", False, {"task": "multi-label, binary-class"}
        imgs = np.zeros((2, 5, 5, 3), dtype=np.uint8)
        labels = np.array([[1, 0, 1], [0, 0, 1]])

    recs = medmnist_records(FakeMNIST3D(), limit=2)
    assert [r["id"] for r in recs] == ["fakemnist3d_test_0000", "fakemnist3d_test_0001"]
    assert (
        recs[0]["image"].shape == (1, 4, 4, 4) and recs[0]["label"] == 1 and isinstance(recs[0]["label"], int)
    )
    rgb = FakeMNIST3D()
    rgb.as_rgb = True
    assert medmnist_records(rgb, limit=0)[2]["image"].shape == (3, 4, 4, 4)
    recs2d = medmnist_records(FakeMNIST())
    assert recs2d[1]["image"].shape == (3, 5, 5) and recs2d[1]["label"].tolist() == [0.0, 0.0, 1.0]


@needs_schema
def test_verify_metadata_offline(tmp_path):
    from monai.bundle import verify_metadata

    schema_copy = tmp_path / "schema.json"  # verify_metadata must not touch shared/
    shutil.copy(SCHEMA, schema_copy)
    verify_metadata(meta_file=str(BUNDLE / "configs" / "metadata.json"), filepath=str(schema_copy))
    gen = load_generator()
    for flag in FLAGS:  # every generated bundle's metadata passes the schema too
        meta = tmp_path / f"{flag}.json"
        meta.write_text(gen.bundle_files(flag)["configs/metadata.json"])
        verify_metadata(meta_file=str(meta), filepath=str(schema_copy))


def test_verify_net_in_out():
    from monai.bundle import verify_net_in_out

    for config in ("inference.json", "train.json"):
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(BUNDLE / "configs" / "metadata.json"),
            config_file=str(BUNDLE / "configs" / config),
            device="cpu",
        )


# ---------------------------------------------------------------- real training run


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory):
    """A copy of the bundle after `monai.bundle run` of train.json: 1 epoch on 64 train / 32 val volumes."""
    if not (MEDMNIST / "adrenalmnist3d.npz").is_file():
        pytest.skip(f"real AdrenalMNIST3D data not found at {MEDMNIST / 'adrenalmnist3d.npz'}")
    bundle = tmp_path_factory.mktemp("bundles") / "adrenalmnist3d"
    shutil.copytree(BUNDLE, bundle, ignore=RUN_OUTPUTS)
    proc = run_cli(
        [
            "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
            "--dataset_dir", str(MEDMNIST), "--epochs", "1", "--train_limit", "64", "--val_limit", "32",
        ],
        cwd=bundle,
    )  # fmt: skip
    assert "val_auc" in proc.stdout + proc.stderr
    return bundle


@pytest.mark.slow
@needs_adrenal
def test_train_writes_a_weights_only_state_dict(trained_bundle):
    from rllm_zoo.monai import create_network

    state = torch.load(trained_bundle / "models" / "model.pt", weights_only=True, map_location="cpu")
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert any(k.startswith("booster.block.") for k in state) and "head.weight" in state
    net = create_network("rllm_vit3d_small", num_classes=2, llm="random:smollm2")
    net.load_state_dict(state)  # strict: every key matches the preset


def run_in_process(bundle: Path, config: str, **overrides) -> None:
    """``monai.bundle.run`` from python, as ``python -m monai.bundle run --config_file ...`` does."""
    import monai.bundle

    cwd = os.getcwd()
    os.chdir(bundle)
    try:
        monai.bundle.run(config_file=f"configs/{config}", logging_file=False, **overrides)
    finally:
        os.chdir(cwd)


@pytest.mark.slow
@needs_adrenal
def test_evaluate_and_inference_on_the_checkpoint(trained_bundle):
    run_in_process(trained_bundle, "evaluate.json", dataset_dir=str(MEDMNIST), limit=48)
    result = json.loads((trained_bundle / "eval" / "metrics.json").read_text())
    assert result["split"] == "test" and result["num_samples"] == 48 and result["llm"] == "smollm2"
    assert 0.0 <= result["metrics"]["test_acc"] <= 1.0 and 0.0 <= result["metrics"]["test_auc"] <= 1.0

    run_in_process(trained_bundle, "inference.json", dataset_dir=str(MEDMNIST), limit=40)
    rows = list(csv.reader((trained_bundle / "eval" / "predictions.csv").open()))
    assert len(rows) == 40 and rows[0][0] == "adrenalmnist3d_test_0000"
    probs = torch.tensor([[float(v) for v in r[1:]] for r in rows])
    assert probs.shape == (40, 2)
    torch.testing.assert_close(probs.sum(1), torch.ones(40), atol=1e-4, rtol=0)


@pytest.mark.slow
@needs_adrenal
def test_bundle_load_rebuilds_the_trained_network(trained_bundle):
    import monai.bundle
    from monai.bundle import ConfigParser

    loaded = monai.bundle.load(
        name="adrenalmnist3d", bundle_dir=str(trained_bundle.parent), workflow_type="train", device="cpu"
    ).eval()
    parser = ConfigParser()
    parser.read_config(str(trained_bundle / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def").eval()
    net.load_state_dict(torch.load(trained_bundle / "models" / "model.pt", weights_only=True))
    x = torch.rand(2, 1, 28, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
    assert loaded.llm_info["source"] == "smollm2"


@pytest.mark.slow
@needs_adrenal
def test_multi_gpu_config_runs_ddp_on_cpu(tmp_path):
    """multi_gpu_train.json under torchrun: 2 CPU processes (gloo), DistributedSampler, DDP."""
    bundle = tmp_path / "adrenalmnist3d"
    shutil.copytree(BUNDLE, bundle, ignore=RUN_OUTPUTS)
    run_cli(
        [
            "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
            "-m", "monai.bundle", "run", "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
            "--dataset_dir", str(MEDMNIST), "--backend", "gloo", "--llm", "random:smollm2",
            "--epochs", "1", "--train_limit", "32", "--val_limit", "16", "--batch_size", "8",
        ],
        cwd=bundle,
        threads=1,  # two processes on two cores
    )  # fmt: skip
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # saved unwrapped from DDP
