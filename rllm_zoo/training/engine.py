"""The training engine: honest protocol on MedMNIST or own data, resumable, single- or multi-process (DDP).

Protocol: the checkpoint is chosen on the validation split (``select_metric``); the test
split is evaluated once, at the end, with the chosen checkpoint. Every epoch re-seeds the
RNGs from ``(seed, epoch)``, so a run resumed after a crash (``resume=True``) reaches the
same final metrics as an uninterrupted one.

Example:
    >>> from rllm_zoo.training import TrainConfig, fit
    >>> metrics = fit(TrainConfig(flag="retinamnist", data_root="../shared/medmnist", epochs=2,
    ...                           out="runs/demo"))                       # doctest: +SKIP
    >>> metrics["test"]                                                   # doctest: +SKIP
    {'auc': 0.71, 'acc': 0.52, 'loss': 1.2}
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..booster import frozen_state_names, parameter_counts
from ..data import PREPROCESSING_FILE, RunData
from ..environment import environment
from ..progress import progress
from .checkpoint import (
    llm_fingerprint,
    load_checkpoint,
    load_weights,
    remove_stale_temps,
    save_checkpoint,
    trainable_state,
)
from .config import RUNTIME_KEYS, TrainConfig, atomic_write_text
from .evaluation import loss_fn, predict, targets_for_loss
from .models import build_model
from .plots import plot_curves, plot_roc
from .run import open_run, open_training_data, resolve_config, run_preprocessing

__all__ = ["RunExistsError", "evaluate_run", "fit", "fit_seeds", "summarize_seeds"]


#: Testing aid for crash recovery: the process SIGKILLs itself after this optimizer step.
_FAULT_STEP = (
    int(os.environ["RLLM_ZOO_FAULT_KILL_AT_STEP"]) if os.environ.get("RLLM_ZOO_FAULT_KILL_AT_STEP") else None
)


class RunExistsError(FileExistsError):
    """The output folder already holds a run."""


def _distributed() -> tuple[int, int, bool]:
    """(rank, world size, created): initialises the process group under torchrun unless one exists
    (a torchrun sweep keeps one group for all its runs); ``created`` says whether this call made it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    created = world > 1 and not dist.is_initialized()
    if created:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), created
    return 0, 1, created


def from_rank0(value: Any, world: int) -> Any:
    """Rank 0's ``value`` on every rank (``value`` itself without a process group)."""
    if world == 1:
        return value
    obj = [value]
    dist.broadcast_object_list(obj, src=0)
    return obj[0]


def _device(cfg: TrainConfig, rank: int) -> torch.device:
    if cfg.device != "auto":
        return torch.device(cfg.device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    return torch.device("cpu")


def _autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _seed_epoch(cfg: TrainConfig, epoch: int, rank: int, datasets: list) -> None:
    seed = (cfg.seed * 1_000_003 + epoch * 7919 + rank) % (2**31)
    torch.manual_seed(seed)
    for ds in datasets:  # MONAI randomisable transforms keep their own RNG
        transform = getattr(ds, "transform", None)
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=seed)


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=float) + "\n")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.parallel.DistributedDataParallel:
    """``model`` in DistributedDataParallel (the process group must be initialised).

    The frozen LLM block (buffers, read from the same source on every rank) is left out of DDP's
    start-up sync and per-step buffer broadcast; every other buffer (BatchNorm statistics of a
    boosted CNN) keeps both, as plain DDP does.
    """
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, sorted(frozen_state_names(model))
    )
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def _loaders(cfg: TrainConfig, data: RunData, prep, rank: int, world: int, show: bool):
    """Every split read (and checked) here, before the run folder is written."""
    if cfg.batch_size % world:
        raise ValueError(
            f"batch_size {cfg.batch_size} must be divisible by the number of processes ({world})"
        )
    train_ds = data.dataset("train", prep, train_aug=cfg.aug, progress=show)
    val_ds = data.dataset("val", prep, progress=show)
    test_ds = data.dataset("test", prep, progress=show) if cfg.eval_test else None
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    train = DataLoader(train_ds, batch_size=cfg.batch_size // world, sampler=sampler, num_workers=cfg.workers)
    val = DataLoader(val_ds, batch_size=cfg.eval_batch_size, num_workers=cfg.workers)
    test = (
        DataLoader(test_ds, batch_size=cfg.eval_batch_size, num_workers=cfg.workers)
        if test_ds is not None
        else None
    )
    return train_ds, train, val, test, sampler


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    opt = create_optimizer_v2(model, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    handed = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not frozen & handed, "a frozen parameter reached the optimizer"
    return opt


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    from timm.scheduler import CosineLRScheduler

    total = cfg.epochs * steps_per_epoch
    return CosineLRScheduler(
        opt,
        t_initial=total,
        lr_min=cfg.min_lr,
        warmup_t=int(cfg.warmup_epochs * steps_per_epoch),
        warmup_lr_init=cfg.lr * 0.01,
        t_in_epochs=False,
    )


def _better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def _changed_settings(out: Path, cfg: TrainConfig) -> list[str]:
    """Config keys whose value in ``out/config.yaml`` differs from ``cfg`` (engine-only keys aside)."""
    from .config import load_config

    saved = load_config(out / "config.yaml").to_dict()
    ignore = (*RUNTIME_KEYS, "out")
    return [
        f"{k}: {saved.get(k)!r} -> {v!r}"
        for k, v in cfg.to_dict().items()
        if k not in ignore and saved.get(k) != v
    ]


def _prepare_out(out: Path, cfg: TrainConfig, resume: bool) -> dict | None:
    """Check the run folder; return the last checkpoint when resuming."""
    last = out / "last.pt"
    for stale in remove_stale_temps(out) if out.is_dir() else []:  # a write cut short by a kill
        print(f"removed {stale.name}, an unfinished checkpoint write", file=sys.stderr)
    if resume and last.is_file():
        changed = _changed_settings(out, cfg)
        if changed:
            raise ValueError(
                f"--resume with a different config ({'; '.join(changed)}); resume with the same settings"
            )
        return load_checkpoint(last)
    if not resume and (last.is_file() or (out / "metrics.json").is_file()):
        raise RunExistsError(
            f"{out} already holds a run; pass --resume to continue it, or choose another --out"
        )
    return None


def _train_epoch(
    model: nn.Module,
    loader,
    opt,
    sched,
    criterion,
    info,
    cfg: TrainConfig,
    device: torch.device,
    amp: torch.dtype | None,
    *,
    epoch: int,
    steps: int,
    step: int,
    show: bool,
    world: int,
) -> tuple[float, int]:
    """One pass over the training batches; returns (mean training loss over all ranks, global step)."""
    model.train()
    running, seen = 0.0, 0
    batches = progress(
        loader, total=steps, desc=f"epoch {epoch}", leave=False, disable=not show, unit="batch"
    )
    for i, (x, y) in enumerate(batches):
        if i >= steps:
            break
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x)
        loss = criterion(logits.float(), targets_for_loss(info, y))
        here = torch.isfinite(loss.detach()).to(torch.float32)
        finite = here.clone()
        if world > 1:  # a rank alone with a bad loss would leave the others waiting in backward
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not finite.item():
            what = "non-finite on another rank" if here.item() else str(loss.item())
            raise FloatingPointError(f"loss became {what} at epoch {epoch}, step {i}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
        opt.step()
        step += 1
        sched.step_update(step)
        if _FAULT_STEP is not None and step == _FAULT_STEP:  # testing aid: a crash mid-epoch
            os.kill(os.getpid(), signal.SIGKILL)
        running += loss.item() * len(x)
        seen += len(x)
        batches.set_postfix(loss=f"{running / seen:.4f}")
    if world > 1:
        t = torch.tensor([running, seen], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        running, seen = float(t[0]), int(t[1])
    return running / max(seen, 1), step


def _end_epoch(
    net: nn.Module,
    val_loader,
    data: RunData,
    cfg: TrainConfig,
    device: torch.device,
    amp: torch.dtype | None,
    opt,
    history: list[dict[str, Any]],
    *,
    epoch: int,
    step: int,
    best: float | None,
    train_loss: float,
    started: float,
    environments: list[dict[str, Any]],
) -> dict[str, Any]:
    """Validate, log and checkpoint a finished epoch (rank 0); returns its log record.

    The record is appended to ``history`` and ``log.jsonl``; ``best.pt`` is written when the
    epoch is the best on ``cfg.select_metric`` so far (``record["best"]``, its value in
    ``record["best_value"]``, which the log leaves out), ``last.pt`` always.
    """
    out = Path(cfg.out)
    scores, labels, val_loss = predict(net, val_loader, data.info, device, amp)
    val = data.metrics("val", scores, labels)
    record = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_auc": val["auc"],
        "val_acc": val["acc"],
        "lr": opt.param_groups[0]["lr"],
        "seconds": round(time.perf_counter() - started, 2),
    }
    value = val_loss if cfg.select_metric == "loss" else val[cfg.select_metric]
    record["best"] = _better(cfg.select_metric, value, best)
    common = {"model": trainable_state(net), "llm_sha256": llm_fingerprint(net), "epoch": epoch}
    if record["best"]:
        best = value
        save_checkpoint(out / "best.pt", {**common, "val": {**val, "loss": val_loss}})
    history.append(record)
    save_checkpoint(
        out / "last.pt",
        {
            **common,
            "optimizer": opt.state_dict(),
            "step": step,
            "best": best,
            "history": history,
            "environments": environments,
        },
    )
    with open(out / "log.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return {**record, "best_value": value}


def fit(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg``, select on validation, test once; returns the content of ``metrics.json``.

    The data is scanned and every file read before anything is written into ``cfg.out``; the run
    folder then records ``config.yaml``, ``dataset.json``, ``preprocessing.json`` (and the file
    list of own data), the log, checkpoints, metrics and plots.
    """
    cfg.validate()
    rank, world, owns_group = _distributed()
    device = _device(cfg, rank)
    out = Path(cfg.out)
    data = open_training_data(cfg, download=cfg.download and rank == 0)
    cfg = resolve_config(cfg, data)
    info = data.info
    if (out / "metrics.json").is_file() and resume:
        changed = _changed_settings(out, cfg)
        if changed:
            raise ValueError(
                f"{out} is a finished run with other settings ({'; '.join(changed)}); "
                "choose another --out for the new settings"
            )
        return json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    outcome: Any = None
    if rank == 0:
        try:
            outcome = _prepare_out(out, cfg, resume)
        except Exception as e:
            if world == 1:
                raise
            outcome = e  # every rank stops, not rank 0 alone (the others would wait for it forever)
    outcome = from_rank0(outcome, world)
    if isinstance(outcome, Exception):
        raise outcome
    state: dict | None = outcome
    show = cfg.progress and rank == 0
    # where the numbers come from: recorded when training starts, kept across resumes
    environments = (  # used by rank 0 alone (checkpoints, metrics)
        [*((state or {}).get("environments") or []), environment(device, world_size=world)]
        if rank == 0
        else []
    )

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, info).to(device)
    prep = run_preprocessing(cfg, info, model)
    train_ds, train_loader, val_loader, test_loader, sampler = _loaders(cfg, data, prep, rank, world, show)
    if rank == 0 and cfg.warmup_epochs >= cfg.epochs:
        print(
            f"note: warmup_epochs {cfg.warmup_epochs:g} >= epochs {cfg.epochs}: the learning rate never "
            f"reaches lr {cfg.lr:g}; lower --warmup-epochs",
            file=sys.stderr,
        )
    if rank == 0:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        prep.save(out / PREPROCESSING_FILE)
        data.write_records(out)
    steps = (
        len(train_loader) if cfg.max_train_batches is None else min(len(train_loader), cfg.max_train_batches)
    )
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg, steps)
    criterion = loss_fn(info, cfg.label_smoothing)
    amp = _autocast_dtype(cfg, device)

    start_epoch, step, best, history = 1, 0, None, []
    if state is not None:
        load_weights(model, state)
        opt.load_state_dict(state["optimizer"])
        start_epoch, step, best, history = state["epoch"] + 1, state["step"], state["best"], state["history"]
    if world > 1:
        model = wrap_ddp(model, device)

    if rank == 0:  # the log is rebuilt from the checkpoint: no half-epoch lines survive a crash
        atomic_write_text(out / "log.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    epochs = progress(
        range(start_epoch, cfg.epochs + 1),
        desc="epochs",
        disable=not show,
        initial=start_epoch - 1,
        total=cfg.epochs,
        unit="epoch",
        interval=0.0,  # plain output: one line per finished epoch
    )
    for epoch in epochs:
        t0 = time.perf_counter()
        _seed_epoch(cfg, epoch, rank, [train_ds])
        sampler.set_epoch(epoch)
        train_loss, step = _train_epoch(
            model,
            train_loader,
            opt,
            sched,
            criterion,
            info,
            cfg,
            device,
            amp,
            epoch=epoch,
            steps=steps,
            step=step,
            show=show,
            world=world,
        )
        if rank == 0:
            record = _end_epoch(
                _unwrap(model),
                val_loader,
                data,
                cfg,
                device,
                amp,
                opt,
                history,
                epoch=epoch,
                step=step,
                best=best,
                train_loss=train_loss,
                started=t0,
                environments=environments,
            )
            best = record["best_value"] if record["best"] else best
            epochs.set_postfix(val_auc=f"{record['val_auc']:.3f}", val_acc=f"{record['val_acc']:.3f}")
        if world > 1:
            dist.barrier()

    result: dict[str, Any] = {}
    if rank == 0:
        result = _finish(cfg, data, _unwrap(model), history, test_loader, device, amp, environments)
    if world > 1:
        dist.barrier()
        if owns_group:  # re-creating a group on torchrun's store can read the old group's addresses
            dist.destroy_process_group()
    return result


def _finish(cfg, data: RunData, model, history, test_loader, device, amp, environments) -> dict[str, Any]:
    """Load the validation-selected checkpoint and evaluate the test split, once.

    With ``eval_test=False`` (recipe tuning) the test split is neither read nor scored:
    ``metrics["test"]`` is ``None``.
    """
    from ..hub.weights import llm_reference

    out = Path(cfg.out)
    info = data.info
    best = load_checkpoint(out / "best.pt")
    load_weights(model, best)
    test = None
    if test_loader is not None:
        scores, labels, test_loss = predict(model, test_loader, info, device, amp)
        test = {**data.metrics("test", scores, labels), "loss": test_loss}
        np.savez_compressed(out / "test_predictions.npz", scores=scores, labels=labels)
    ref = llm_reference(model) or {}
    metrics = {
        "flag": info.flag,
        "data": cfg.data,
        "classes": list(info.class_names),
        "task": info.task,
        "model": cfg.model,
        "booster": cfg.booster,
        "llm": cfg.llm if cfg.booster not in ("off", "mlp") else None,
        "llm_layer": ref.get("layer"),
        "llm_sha256": ref.get("sha256"),
        "llm_architecture": ref.get("architecture"),
        "seed": cfg.seed,
        "selected_epoch": best["epoch"],
        "select_metric": f"val_{cfg.select_metric}",
        "val": best["val"],
        "test": test,
        "epochs": cfg.epochs,
        "train_seconds": round(sum(h["seconds"] for h in history), 1),
        **dict(zip(("params_trainable", "params_frozen"), parameter_counts(model))),
        "environment": environments[0],  # where training started; later sessions of a resumed run:
        **({"resumed_in": environments[1:]} if len(environments) > 1 else {}),
    }
    title = f"{info.title} {cfg.model} booster={cfg.booster} seed={cfg.seed}"
    plot_curves(history, out / "curves.png", title)
    if test is not None:
        plot_roc(
            scores, labels, list(info.class_names), info.multi_label, out / "roc.png", f"test ROC: {title}"
        )
    _write_json(out / "metrics.json", metrics)
    return metrics


def evaluate_run(run_dir: str | os.PathLike, split: str = "test", checkpoint: str = "best") -> dict[str, Any]:
    """Re-evaluate a finished run's checkpoint on a split; writes ``eval_<split>.json``."""
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    run = open_run(run_dir, checkpoint)
    device = _device(run.cfg, 0)
    model = run.model.to(device)
    data = run.data()
    loader = DataLoader(data.dataset(split, run.prep, progress=False), batch_size=run.cfg.eval_batch_size)
    scores, labels, loss = predict(model, loader, run.info, device, _autocast_dtype(run.cfg, device))
    result = {
        "split": split,
        "checkpoint": checkpoint,
        "epoch": load_checkpoint(run.path / f"{checkpoint}.pt")["epoch"],
        **data.metrics(split, scores, labels),
        "loss": loss,
    }
    _write_json(run.path / f"eval_{split}.json", result)
    return result


def summarize_seeds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation of test (and val) metrics over seeds."""
    out: dict[str, Any] = {"seeds": [r["seed"] for r in results], "n": len(results)}
    for split in ("val", "test"):
        if any(r.get(split) is None for r in results):
            continue  # eval_test=False: tuning runs carry no test scores
        for key in ("acc", "auc"):
            vals = np.array([r[split][key] for r in results], dtype=float)
            out[f"{split}_{key}_mean"] = float(vals.mean())
            out[f"{split}_{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    return out


def fit_seeds(cfg: TrainConfig, seeds: list[int], resume: bool = False) -> dict[str, Any]:
    """Run ``cfg`` once per seed into ``<out>/seed<k>``; write ``<out>/summary.json``."""
    base = Path(cfg.out)
    results = []
    for seed in seeds:
        run_cfg = TrainConfig(**{**cfg.to_dict(), "seed": seed, "out": str(base / f"seed{seed}")})
        results.append(fit(run_cfg, resume=resume))
    summary = {**summarize_seeds(results), "runs": results}
    if int(os.environ.get("RANK", "0")) == 0:
        _write_json(base / "summary.json", summary)
    return summary
