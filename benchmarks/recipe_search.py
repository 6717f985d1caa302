"""Search the from-scratch baseline recipe (``--booster off``) on the VALIDATION split only.

Every candidate recipe below is trained once per seed with
``rllm_zoo.training.fit(TrainConfig(..., eval_test=False), resume=True)`` into
``runs/tune/<flag>/<name>/seed<k>``; finished runs are skipped, so the script is resumable and
can be rerun after adding candidates. ``eval_test=False`` means the engine never loads or scores
the test split: the search reads validation metrics only (``metrics.json`` has ``"test": null``).

It then writes ``benchmarks/results/recipe/recipe_search.json`` (per candidate: config, per-seed
val acc/auc, selected epoch, train seconds, epoch seconds, mean/std) and ``recipe_search.md`` (a
table per dataset sorted by val, the chosen recipe marked, plus the exact command).

Run from the repository root (one thread per process, one process at a time)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/recipe_search.py \
        --only adrenalmnist3d --seeds 0,1,2 --data-root ../shared/medmnist
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "recipe"

#: keys shared by every tuning run: baseline ViT, bf16, and the test split never read
COMMON: dict[str, Any] = dict(booster="off", precision="bf16", eval_test=False, progress=False)

_RETINA_BASE: dict[str, Any] = dict(
    model="rllm_vit_micro_patch4_28", epochs=20, batch_size=64, lr=1e-3, aug="light"
)
_ADRENAL_BASE: dict[str, Any] = dict(model="rllm_vit3d_small", epochs=20, batch_size=32, lr=5e-4, aug="light")

#: flag -> candidate name -> TrainConfig keys (on top of COMMON)
CANDIDATES: dict[str, dict[str, dict[str, Any]]] = {
    "retinamnist": {
        # the current recipe selected by val ACC; its "if sel. auc" column is the current recipe
        # itself (same training run, checkpoint picked by val AUC)
        "micro_e20_light_acc": dict(_RETINA_BASE, select_metric="acc"),
    },
    "adrenalmnist3d": {
        "small_e10_light": dict(_ADRENAL_BASE, epochs=10),
        "small_e10_strong": dict(_ADRENAL_BASE, epochs=10, aug="strong"),
        "small_e10_none": dict(_ADRENAL_BASE, epochs=10, aug="none"),
        "small_e10_light_do0.1": dict(_ADRENAL_BASE, epochs=10, model_kwargs={"dropout_rate": 0.1}),
        # stronger AdamW weight decay (TrainConfig's default is 0.05) and half the learning rate
        "small_e10_light_wd0.1": dict(_ADRENAL_BASE, epochs=10, weight_decay=0.1),
        "small_e10_light_lr2.5e-4": dict(_ADRENAL_BASE, epochs=10, lr=2.5e-4),
    },
}

#: the recipe chosen per dataset (marked in the report); None until the search has decided
CHOSEN: dict[str, str | None] = {"retinamnist": "micro_e20_light_acc", "adrenalmnist3d": "small_e10_light"}


def run_dir(runs: Path, flag: str, name: str, seed: int) -> Path:
    return runs / flag / name / f"seed{seed}"


def train(flag: str, name: str, seeds: list[int], runs: Path, data_root: str) -> None:
    from rllm_zoo.training import TrainConfig, fit

    for seed in seeds:
        out = run_dir(runs, flag, name, seed)
        if (out / "metrics.json").is_file():
            continue
        keys = {**COMMON, **CANDIDATES[flag][name]}
        cfg = TrainConfig(flag=flag, data_root=data_root, seed=seed, out=str(out), **keys)
        t0 = time.perf_counter()
        m = fit(cfg, resume=True)
        print(
            f"{flag} {name} seed{seed}: val acc {m['val']['acc']:.4f} auc {m['val']['auc']:.4f} "
            f"epoch {m['selected_epoch']} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def reselect(log: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Val acc/auc of the epoch the engine would pick with ``select_metric=metric`` (first best)."""
    sign = 1.0 if metric == "loss" else -1.0
    best = min(log, key=lambda h: (sign * h[f"val_{metric}"], h["epoch"]))
    return {"epoch": best["epoch"], "val_acc": best["val_acc"], "val_auc": best["val_auc"]}


def collect(flag: str, name: str, runs: Path) -> dict[str, Any]:
    """Per-seed val metrics of every finished run of a candidate (any seed found on disk)."""
    per_seed = []
    for d in sorted((runs / flag / name).glob("seed*"), key=lambda p: int(p.name[4:])):
        mfile = d / "metrics.json"
        if not mfile.is_file():
            continue
        m = json.loads(mfile.read_text(encoding="utf-8"))
        if m.get("test") is not None:
            raise RuntimeError(f"{d} scored the test split; tuning runs must use eval_test=False")
        log = [
            json.loads(line) for line in (d / "log.jsonl").read_text(encoding="utf-8").splitlines() if line
        ]
        per_seed.append(
            {
                "seed": m["seed"],
                "val_acc": m["val"]["acc"],
                "val_auc": m["val"]["auc"],
                "selected_epoch": m["selected_epoch"],
                "train_seconds": m["train_seconds"],
                "epoch_seconds": statistics.median(h["seconds"] for h in log),
                "epoch_seconds_min": min(h["seconds"] for h in log),  # least disturbed by other load
                "best_val_auc_any_epoch": max(h["val_auc"] for h in log),
                "best_val_acc_any_epoch": max(h["val_acc"] for h in log),
                # the same training run read back under each selection metric (from log.jsonl)
                "by_select": {metric: reselect(log, metric) for metric in ("auc", "acc", "loss")},
            }
        )
    entry: dict[str, Any] = {
        "config": {**COMMON, **CANDIDATES[flag][name]},
        "runs": per_seed,
        "n": len(per_seed),
    }
    for key in ("val_acc", "val_auc", "train_seconds", "epoch_seconds", "epoch_seconds_min"):
        mean, std = _mean_std([r[key] for r in per_seed])
        entry[f"{key}_mean"], entry[f"{key}_std"] = mean, std
    return entry


def command(flag: str, keys: dict[str, Any], data_root: str) -> str:
    parts = ["rllm-zoo train", f"--flag {flag}", f"--data-root {data_root}"]
    for k, v in keys.items():
        if isinstance(v, dict):
            v = "'" + json.dumps(v) + "'"
        elif isinstance(v, bool):
            v = str(v).lower()
        parts.append(f"--{k.replace('_', '-')} {v}")
    return " ".join(parts) + " --seeds 0,1,2,3,4 --out runs/<name>"


def _fmt(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else f"{100 * mean:.1f} ± {100 * std:.1f}"


def _alt(entry: dict[str, Any], metric: str) -> str:
    """Mean val ACC / AUC (%) of the candidate's runs re-selected with ``metric``."""
    if not entry["runs"]:
        return "-"
    acc = statistics.fmean(r["by_select"][metric]["val_acc"] for r in entry["runs"])
    auc = statistics.fmean(r["by_select"][metric]["val_auc"] for r in entry["runs"])
    return f"{100 * acc:.1f} / {100 * auc:.1f}"


def report(flags: list[str], runs: Path, data_root: str) -> None:
    results = {flag: {name: collect(flag, name, runs) for name in CANDIDATES[flag]} for flag in flags}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "recipe_search.json"
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    old.update({"chosen": {**old.get("chosen", {}), **{f: CHOSEN[f] for f in flags}}, **results})
    path.write_text(json.dumps(old, indent=2) + "\n", encoding="utf-8")

    lines = [
        "# Baseline recipe search (validation only)",
        "",
        "`benchmarks/recipe_search.py`: `--booster off`, bf16, `eval_test=False` (the test split is",
        "never read). Val ACC / AUC of the val-selected checkpoint, mean ± std over seeds; epoch",
        "seconds at 1 thread: median per run (min per run), then mean over seeds; other processes shared",
        "the 2 cores during the search, so the min is the better estimate of undisturbed speed.",
        "",
    ]
    for flag in [f for f in CANDIDATES if f in old]:
        lines += [
            f"## {flag}",
            "",
            "| | candidate | n | val ACC | val AUC | sel. epochs | epoch s (min) | train s | if sel. auc | if sel. acc |",
        ]
        lines += ["|---|---|---|---|---|---|---|---|---|---|"]
        entries = sorted(
            old[flag].items(), key=lambda kv: -((kv[1]["val_auc_mean"] or 0) + (kv[1]["val_acc_mean"] or 0))
        )
        for name, e in entries:
            mark = "**chosen**" if old["chosen"].get(flag) == name else ""
            epochs = ",".join(str(r["selected_epoch"]) for r in e["runs"])
            es = (
                "-"
                if e["epoch_seconds_mean"] is None
                else f"{e['epoch_seconds_mean']:.1f} ({e['epoch_seconds_min_mean']:.1f})"
            )
            ts = "-" if e["train_seconds_mean"] is None else f"{e['train_seconds_mean']:.0f}"
            lines.append(
                f"| {mark} | `{name}` | {e['n']} | {_fmt(e['val_acc_mean'], e['val_acc_std'])} | "
                f"{_fmt(e['val_auc_mean'], e['val_auc_std'])} | {epochs} | {es} | {ts} | "
                f"{_alt(e, 'auc')} | {_alt(e, 'acc')} |"
            )
        chosen = old["chosen"].get(flag)
        if chosen:
            keys = {
                k: v for k, v in old[flag][chosen]["config"].items() if k not in ("eval_test", "progress")
            }
            lines += ["", f"Chosen `{chosen}`:", "", "```", command(flag, keys, data_root), "```"]
        lines.append("")
    (RESULTS / "recipe_search.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {path} and {RESULTS / 'recipe_search.md'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(CANDIDATES), help="one dataset (default: both)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    ap.add_argument("--candidates", default=None, help="comma-separated candidate names (default: all)")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "tune"), help="root of the tuning runs")
    ap.add_argument("--data-root", default="../shared/medmnist", help="folder of the MedMNIST .npz files")
    ap.add_argument("--report-only", action="store_true", help="only collect finished runs and write reports")
    args = ap.parse_args()

    flags = [args.only] if args.only else list(CANDIDATES)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    wanted = args.candidates.split(",") if args.candidates else None
    runs = Path(args.runs)
    if not args.report_only:
        for flag in flags:
            for name in CANDIDATES[flag]:
                if wanted is None or name in wanted:
                    train(flag, name, seeds, runs, args.data_root)
    report(flags, runs, args.data_root)


if __name__ == "__main__":
    main()
