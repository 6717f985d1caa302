"""Training engine and CLI on small generated MedMNIST-format files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

from rllm_zoo.cli import main
from rllm_zoo.data import DataError, build_dataset, dataset_info
from rllm_zoo.training import RunExistsError, TrainConfig, evaluate_run, fit, load_config
from rllm_zoo.training.checkpoint import load_checkpoint
from rllm_zoo.training.evaluation import loss_fn, medmnist_metrics

MICRO = {"depth": 2, "embed_dim": 32, "num_heads": 2}


def _args(root, out, llm, **extra):
    args = {
        "flag": "dermamnist",
        "data-root": str(root),
        "model": "rllm_vit_tiny_patch4_28",
        "llm": llm,
        "model-kwargs": json.dumps(MICRO),
        "epochs": "2",
        "batch-size": "8",
        "lr": "3e-3",
        "warmup-epochs": "0.5",
        "out": str(out),
        "progress": "false",
        **extra,
    }
    return [x for k, v in args.items() for x in (f"--{k}", v)]


@pytest.fixture(scope="module")
def tiny_llm(tiny_llm_dir):
    return str(tiny_llm_dir("llama"))


def test_cli_train_eval_package(medmnist_root, tiny_llm, tmp_path, capsys):
    import timm

    out = tmp_path / "run"
    assert main(["train", *_args(medmnist_root, out, tiny_llm), "--package"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["select_metric"] == "val_auc" and 1 <= metrics["selected_epoch"] <= 2
    assert set(metrics["test"]) == {"acc", "auc", "loss"} and 0 <= metrics["test"]["auc"] <= 1
    env = metrics["environment"]  # where the numbers come from travels with them
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["threads"] >= 1
    assert env["rllm_zoo"] and (env["git_commit"] is not None) == (ROOT / ".git").exists()
    for name in (
        "config.yaml",
        "log.jsonl",
        "best.pt",
        "last.pt",
        "curves.png",
        "roc.png",
        "test_predictions.npz",
    ):
        assert (out / name).is_file(), name
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and sum(r["best"] for r in log) >= 1
    # the frozen block is not stored: it is re-read from its source and checked by sha256
    ckpt = load_checkpoint(out / "best.pt")
    assert not any(".block.layer." in k for k in ckpt["model"]) and ckpt["llm_sha256"]
    # the test split, evaluated again from the same checkpoint, gives the same numbers
    capsys.readouterr()
    assert main(["eval", str(out), "--split", "test"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["auc"] == pytest.approx(metrics["test"]["auc"]) and again["acc"] == metrics["test"]["acc"]
    # the package is a timm local-dir model with the trained weights
    model = timm.create_model(f"local-dir:{out / 'package'}", pretrained=True, llm=tiny_llm).eval()
    scores = np.load(out / "test_predictions.npz")["scores"]
    ds = build_dataset("dermamnist", "test", root=medmnist_root)
    with torch.no_grad():
        probs = torch.softmax(model(torch.stack([ds[i][0] for i in range(4)])), -1).numpy()
    np.testing.assert_allclose(probs, scores[:4], atol=1e-5)
    card = (out / "package" / "README.md").read_text()
    assert f"Trained with torch {torch.__version__} on cpu, {env['threads']} thread" in card
    # Grad-CAM overlays of the selected checkpoint
    assert main(["cam", str(out), "--n", "3"]) == 0
    assert (out / "cam_test.png").stat().st_size > 1000
    # an existing run is never overwritten
    assert main(["train", *_args(medmnist_root, out, tiny_llm)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_yaml_config_and_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("flag: pneumoniamnist\nepochs: 5\nbooster: mlp\nmodel_kwargs: {depth: 2}\n")
    cfg = load_config(cfg_file, {"epochs": "7", "freeze_llm": "false", "llm": "none"})
    assert (cfg.flag, cfg.epochs, cfg.booster, cfg.freeze_llm, cfg.llm) == (
        "pneumoniamnist",
        7,
        "mlp",
        False,
        None,
    )
    assert cfg.model_kwargs == {"depth": 2}
    with pytest.raises(ValueError, match="unknown config key 'epoch'"):
        load_config(None, {"epoch": 3})
    with pytest.raises(ValueError, match="booster='resid' is not one of"):
        load_config(None, {"booster": "resid"})


@pytest.mark.parametrize(
    ("flag", "task"),
    [
        ("dermamnist", "multi-class"),
        ("pneumoniamnist", "binary-class"),
        ("chestmnist", "multi-label, binary-class"),
        ("retinamnist", "ordinal-regression"),
    ],
)
def test_metrics_for_every_task_type(medmnist_root, flag, task):
    info = dataset_info(flag)
    assert info.task == task
    labels = np.load(medmnist_root / f"{flag}.npz")["test_labels"]
    if info.multi_label:
        perfect = labels.astype(float)
        assert isinstance(loss_fn(info), torch.nn.BCEWithLogitsLoss)
    else:
        perfect = np.eye(info.n_classes)[labels[:, 0]]
        assert isinstance(loss_fn(info), torch.nn.CrossEntropyLoss)
    m = medmnist_metrics(flag, "test", perfect, str(medmnist_root), 28)
    assert m["auc"] == pytest.approx(1.0) and m["acc"] == pytest.approx(1.0)
    flipped = medmnist_metrics(flag, "test", 1 - perfect, str(medmnist_root), 28)
    assert flipped["auc"] < 0.5


def test_data_errors(tmp_path):
    with pytest.raises(DataError, match="unknown MedMNIST flag 'retinamnst'"):
        dataset_info("retinamnst")
    with pytest.raises(DataError, match=r"retinamnist_64.npz not found. Pass --data-root"):
        build_dataset("retinamnist", "train", root=tmp_path, size=64)


def test_frozen_block_never_reaches_the_optimizer(medmnist_root, tiny_llm, tmp_path):
    from rllm_zoo.training.engine import _optimizer
    from rllm_zoo.training.models import build_model

    cfg = TrainConfig(flag="dermamnist", data_root=str(medmnist_root), llm=tiny_llm, model_kwargs=MICRO)
    model = build_model(cfg, dataset_info("dermamnist"))
    opt = _optimizer(model, cfg)
    handed = {id(p) for g in opt.param_groups for p in g["params"]}
    # the frozen block is held as buffers: in the state dict, never a parameter
    assert not list(model.booster.block.parameters())
    block = list(model.booster.block.buffers())
    assert block and not handed & {id(p) for p in block}
    assert handed == {id(p) for p in model.parameters()}
    assert {f"booster.block.{n}" for n, _ in model.booster.block.named_buffers()} <= set(model.state_dict())


def _run(args, env=None, check=True):
    return subprocess.run(
        [sys.executable, "-m", "rllm_zoo", "train", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=check,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.fault
def test_resume_after_sigkill_reaches_the_same_metrics(medmnist_root, tiny_llm, tmp_path):
    extra = {"epochs": "3", "aug": "light"}
    ref = tmp_path / "ref"
    _run(_args(medmnist_root, ref, tiny_llm, **extra))
    crashed = tmp_path / "crashed"
    # the fault-injection variable makes the process SIGKILL itself in the middle of epoch 2
    proc = _run(
        _args(medmnist_root, crashed, tiny_llm, **extra),
        env={"RLLM_ZOO_FAULT_KILL_AT_STEP": "6"},
        check=False,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (crashed / "metrics.json").exists()
    assert len((crashed / "log.jsonl").read_text().splitlines()) == 1  # one finished epoch
    from rllm_zoo.training.checkpoint import TEMP_PREFIX

    stale = crashed / f"{TEMP_PREFIX}last.pt.abcd1234"  # what a kill during a checkpoint write leaves
    stale.write_bytes(b"half a checkpoint")
    resumed = _run([*_args(medmnist_root, crashed, tiny_llm, **extra), "--resume"])
    assert not stale.exists() and "unfinished checkpoint write" in resumed.stderr
    a = json.loads((ref / "metrics.json").read_text())
    b = json.loads((crashed / "metrics.json").read_text())
    assert b["selected_epoch"] == a["selected_epoch"]
    # the environment is the one training started in; the resumed session is listed after it
    assert "resumed_in" not in a and len(b["resumed_in"]) == 1
    assert b["environment"]["torch"] == b["resumed_in"][0]["torch"] == torch.__version__
    for split in ("val", "test"):
        for key in ("acc", "auc", "loss"):
            assert b[split][key] == pytest.approx(a[split][key], abs=1e-6), (split, key)


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(medmnist_root, tiny_llm, tmp_path):
    extra = {"aug": "none", "drop-path": "0", "epochs": "2"}
    single = tmp_path / "single"
    _run(_args(medmnist_root, single, tiny_llm, **extra))
    ddp = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "rllm_zoo",
        "train",
        *_args(medmnist_root, ddp, tiny_llm, **extra),
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = json.loads((single / "metrics.json").read_text())
    b = json.loads((ddp / "metrics.json").read_text())
    assert b["test"]["loss"] == pytest.approx(a["test"]["loss"], abs=1e-4)
    assert a["environment"]["world_size"] == 1 and b["environment"]["world_size"] == 2
    # an error on rank 0 alone (the folder holds a run) stops every rank, instead of leaving rank 1 waiting
    again = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert again.returncode != 0 and "already holds a run" in again.stderr, again.stderr[-3000:]
    wa = load_checkpoint(single / "last.pt")["model"]
    wb = load_checkpoint(ddp / "last.pt")["model"]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-4, rtol=1e-3, msg=k)


def test_run_exists_error_in_api(medmnist_root, tiny_llm, tmp_path):
    cfg = TrainConfig(
        flag="dermamnist",
        data_root=str(medmnist_root),
        llm=tiny_llm,
        model_kwargs=MICRO,
        epochs=1,
        batch_size=8,
        out=str(tmp_path / "r"),
        progress=False,
        max_train_batches=1,
    )
    fit(cfg)
    with pytest.raises(RunExistsError):
        fit(cfg)
    assert evaluate_run(tmp_path / "r", split="val")["split"] == "val"


def test_grad_cam_tap_is_an_identity_and_maps_have_input_size(tiny_llm):
    import timm

    from rllm_zoo.cam import TokenGridTap, grad_cam

    model = timm.create_model("rllm_vit_tiny_patch4_28", llm=tiny_llm, num_classes=3, **MICRO).eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        ref = model(x)
        wrapped = TokenGridTap(model)
        torch.testing.assert_close(wrapped(x), ref)
        wrapped.remove()
    maps = grad_cam(model, x)
    assert maps.shape == (2, 1, 28, 28) and float(maps.min()) >= 0 and float(maps.max()) <= 1
    assert float(maps.std()) > 0
    assert all(p.grad is None for p in model.booster.block.parameters())


def test_3d_training_and_cam_through_the_cli(medmnist_root, tiny_llm, tmp_path):
    out = tmp_path / "run3d"
    args = _args(
        medmnist_root,
        out,
        tiny_llm,
        flag="nodulemnist3d",
        model="rllm_vit3d_small",
        **{"model-kwargs": json.dumps({"num_layers": 1}), "epochs": "1", "aug": "strong"},
    )
    assert main(["train", *args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "binary-class" and 0 <= metrics["test"]["auc"] <= 1
    assert main(["cam", str(out), "--indices", "0,3"]) == 0
    assert (out / "cam_test.png").stat().st_size > 1000
    with pytest.raises(ValueError, match=r"3D dataset: model must be one of the rllm_zoo\.monai presets"):
        fit(
            TrainConfig(
                flag="nodulemnist3d",
                data_root=str(medmnist_root),
                model="rllm_vit_tiny_patch4_28",
                out=str(tmp_path / "x"),
            )
        )


def test_cli_list_and_bad_run_folder(tmp_path, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "rllm_vit_micro_patch4_28" in out and "rllm_vit3d_small" in out and "adrenalmnist3d" in out
    assert main(["eval", str(tmp_path)]) == 2
    assert "is not a run folder (no config.yaml)" in capsys.readouterr().err


def test_eval_test_false_never_reads_the_test_split(medmnist_root, tiny_llm, tmp_path, monkeypatch):
    """Recipe tuning: with eval_test=False the test split is neither loaded nor scored."""
    from rllm_zoo.data import run_data

    requested = []
    original = run_data.MedMNISTData.dataset

    def spy(self, split, *args, **kwargs):
        requested.append(split)
        return original(self, split, *args, **kwargs)

    monkeypatch.setattr(run_data.MedMNISTData, "dataset", spy)
    cfg = TrainConfig(
        flag="dermamnist",
        data_root=str(medmnist_root),
        booster="off",
        model_kwargs=MICRO,
        epochs=1,
        batch_size=8,
        out=str(tmp_path / "tune"),
        progress=False,
        max_train_batches=1,
        eval_test=False,
    )
    metrics = fit(cfg)
    assert metrics["test"] is None and metrics["val"]["auc"] is not None
    assert "test" not in requested and {"train", "val"} <= set(requested)
    assert not (tmp_path / "tune" / "test_predictions.npz").exists()
    from rllm_zoo.training import summarize_seeds

    summary = summarize_seeds([metrics])
    assert "val_auc_mean" in summary and "test_auc_mean" not in summary


def test_ddp_skips_only_the_frozen_block_in_its_buffer_sync(tmp_path):
    """A boosted CNN under DDP: BatchNorm statistics are synced and broadcast, the frozen LLM block is not."""
    import torch.distributed as dist
    from torch import nn

    from rllm_zoo import boost
    from rllm_zoo.booster import frozen_state_names
    from rllm_zoo.training.engine import wrap_ddp

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
            self.head = nn.Conv2d(8, 8, 3)

        def forward(self, x):
            return self.head(self.stem(x))

    model = boost(Net(), llm="random:smollm2", at="head")
    frozen = frozen_state_names(model)
    assert frozen and all(n.startswith("booster.block.") for n in frozen)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = wrap_ddp(model, torch.device("cpu"))
        synced = set(ddp.named_module_buffers)
        assert {"stem.1.running_mean", "stem.1.running_var", "stem.1.num_batches_tracked"} <= synced
        assert not synced & frozen
        assert ddp.module is model and ddp.broadcast_buffers  # BatchNorm statistics follow rank 0 each step
    finally:
        dist.destroy_process_group()


def _nan_on_one_rank(rank: int, store: str, results: str) -> None:
    """Worker for the test below: rank 1's second batch holds a NaN; every rank records what it raised."""
    from pathlib import Path
    from types import SimpleNamespace

    import torch.distributed as dist
    from torch import nn

    from rllm_zoo.training.engine import _train_epoch

    torch.manual_seed(0)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model = nn.parallel.DistributedDataParallel(nn.Linear(4, 3))
        batches = [(torch.randn(2, 4), torch.tensor([[0], [1]])) for _ in range(3)]
        if rank == 1:
            batches[1][0][0, 0] = float("nan")
        try:
            _train_epoch(
                model,
                batches,
                torch.optim.SGD(model.parameters(), lr=0.1),
                SimpleNamespace(step_update=lambda step: None),
                nn.CrossEntropyLoss(),
                SimpleNamespace(multi_label=False),
                SimpleNamespace(grad_clip=None),
                torch.device("cpu"),
                None,
                epoch=0,
                steps=3,
                step=0,
                show=False,
                world=2,
            )
            outcome = "finished"
        except Exception as e:  # the test compares what each rank saw
            outcome = f"{type(e).__name__}: {e}"
        Path(results, f"rank{rank}").write_text(outcome)
    finally:
        dist.destroy_process_group()


def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path):
    """Rank 1 alone sees NaN: both ranks stop at the same step, instead of rank 0 waiting in backward."""
    import torch.multiprocessing as mp

    mp.spawn(_nan_on_one_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    seen = {r: (tmp_path / f"rank{r}").read_text() for r in (0, 1)}
    assert seen[1] == "FloatingPointError: loss became nan at epoch 0, step 1; lower --lr", seen
    assert (
        seen[0] == "FloatingPointError: loss became non-finite on another rank at epoch 0, step 1; lower --lr"
    ), seen
