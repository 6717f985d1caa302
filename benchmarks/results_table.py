"""The results table: baseline ViT vs +R-LLM (SmolLM2) vs +MLP vs +R-LLM (random block), several seeds.

    python benchmarks/results_table.py                       # the committed table (hours on 2 CPU cores)
    python benchmarks/results_table.py --seeds 0 --epochs 1 --only retinamnist   # a smoke run

Each run is an ordinary ``rllm-zoo train`` run (validation selects the checkpoint, the test
split is evaluated once) in ``<runs>/<flag>/<config>/seed<k>``. Runs whose results are already
in ``<results>`` are skipped and unfinished ones resume, so the script can be stopped and
restarted at any time (also in a fresh checkout: the committed results carry over). Each run's
metrics.json, log.jsonl and plots are copied to ``<results>/<flag>/<config>/seed<k>``, and
``docs/results.md`` is rewritten from those files alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rllm_zoo.environment import describe_runs
from rllm_zoo.training import TrainConfig, fit, summarize_seeds
from rllm_zoo.training.config import atomic_write_text
from rllm_zoo.training.sweep_stats import welch

#: The four arms of the comparison: (name, booster, llm).
CONFIGS: list[tuple[str, str, str | None]] = [
    ("baseline", "off", None),
    ("r_llm", "residual", "smollm2"),
    ("mlp", "mlp", "smollm2"),
    ("r_llm_random", "residual", "random:smollm2"),
]
LABELS = {
    "baseline": "ViT (no booster)",
    "r_llm": "+R-LLM, SmolLM2-135M layer 29 (frozen)",
    "mlp": "+MLP control (adapters only, no LLM)",
    "r_llm_random": "+R-LLM, random-init block of the same architecture",
}
SHORT = {"baseline": "ViT", "r_llm": "R-LLM", "mlp": "MLP control", "r_llm_random": "R-LLM (random block)"}

#: Per-dataset training recipe, sized for a 2-core CPU (see docs/results.md for the budget).
PLANS: dict[str, dict[str, Any]] = {
    "retinamnist": dict(
        model="rllm_vit_micro_patch4_28",
        size=28,
        epochs=20,
        batch_size=64,
        lr=1e-3,
        aug="light",
        precision="bf16",
        seeds=[0, 1, 2],
    ),
    # ~5 min a run on 2 cores: five seeds fit the budget
    "adrenalmnist3d": dict(
        model="rllm_vit3d_small",
        size=28,
        epochs=20,
        batch_size=32,
        lr=5e-4,
        aug="light",
        precision="bf16",
        seeds=[0, 1, 2, 3, 4],
    ),
}

#: The paper's numbers (ACC, AUC in %), for comparison only: different protocol (see below).
PAPER = {
    "retinamnist": {
        "model": "ViT-S/16 at 224, ImageNet-pretrained",
        "base": (54.25, 74.09),
        "r_llm": (57.00, 74.78),
    },
    "adrenalmnist3d": {
        "model": "ViT3D (dim 1024, 8 layers)",
        "base": (81.88, 81.98),
        "r_llm": (82.89, 83.86),
    },
}


def run_dir(root: Path, flag: str, config: str, seed: int) -> Path:
    return root / flag / config / f"seed{seed}"


def run_all(args: argparse.Namespace) -> None:
    # seed-major order: a partial table already has every arm for the first seeds
    jobs = [
        (flag, name, booster, llm, seed)
        for flag in args.only
        for seed in (args.seeds or PLANS[flag]["seeds"])
        for name, booster, llm in CONFIGS
    ]
    for flag, name, booster, llm, seed in tqdm(jobs, desc="runs"):
        plan = {**PLANS[flag], **({"epochs": args.epochs} if args.epochs else {})}
        plan.pop("seeds")
        out = run_dir(args.runs, flag, name, seed)
        dest = run_dir(args.results, flag, name, seed)
        if (dest / "metrics.json").is_file():
            continue  # finished (possibly in an earlier session): its committed results stand
        cfg = TrainConfig(
            flag=flag,
            data_root=args.data_root,
            booster=booster,
            llm=llm,
            seed=seed,
            out=str(out),
            progress=args.progress,
            model_kwargs=args.model_kwargs,
            **plan,
        )
        fit(cfg, resume=True)
        dest.mkdir(parents=True, exist_ok=True)
        for fname in ("metrics.json", "log.jsonl", "config.yaml", "curves.png", "roc.png"):
            if (out / fname).is_file():
                shutil.copy2(out / fname, dest / fname)


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f} (one seed)"


def collect(results: Path) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for flag_dir in sorted(p for p in results.iterdir() if p.is_dir()):
        for name, _, _ in CONFIGS:
            runs = [json.loads(p.read_text()) for p in sorted((flag_dir / name).glob("seed*/metrics.json"))]
            if runs:
                table.setdefault(flag_dir.name, {})[name] = {**summarize_seeds(runs), "runs": runs}
    return table


#: The questions the arms answer: (arm, reference, what a difference would mean).
COMPARISONS = [
    ("r_llm", "baseline", "does the frozen LLM block help at all (the paper's claim)?"),
    ("r_llm", "r_llm_random", "is it the pretrained weights, or any block of that shape?"),
    ("r_llm", "mlp", "is it the block, or just the extra adapters?"),
]


def _comparisons(arms: dict[str, dict[str, Any]]) -> list[str]:
    """A table of differences of mean test scores between arms, with Welch's t-test."""
    rows = []
    for arm, ref, question in COMPARISONS:
        if arm not in arms or ref not in arms:
            continue
        cells = []
        for metric in ("acc", "auc"):
            a = [r["test"][metric] for r in arms[arm]["runs"]]
            b = [r["test"][metric] for r in arms[ref]["runs"]]
            w = welch(a, b)
            pvalue, diff = w.p, 100 * w.diff
            cells.append(f"{diff:+.2f} (p = {pvalue:.2f})" if pvalue is not None else f"{diff:+.2f}")
        rows.append(f"| {SHORT[arm]} − {SHORT[ref]} | {cells[0]} | {cells[1]} | {question} |")
    if not rows:
        return []
    return [
        "",
        "Measured differences of the mean test scores (percentage points; p: two-sided Welch t-test over "
        "seeds, no correction for the three comparisons; with this few seeds only a large effect can show):",
        "",
        "| comparison | test ACC | test AUC | question |",
        "|---|---|---|---|",
        *rows,
    ]


def write_markdown(
    table: dict[str, dict[str, Any]], out: Path, command: str, results: Path, seeds: list[int] | None
) -> None:
    planned = {flag: len(CONFIGS) * len(seeds or plan["seeds"]) for flag, plan in PLANS.items()}
    status = [
        f"{flag}: {sum(a['n'] for a in table.get(flag, {}).values())} of {planned[flag]} runs (seeds "
        f"{seeds or PLANS[flag]['seeds']})"
        for flag in PLANS
    ]
    complete = all(sum(a["n"] for a in table.get(flag, {}).values()) >= planned[flag] for flag in PLANS)
    lines = [
        "# Results: does a frozen LLM block boost a ViT on MedMNIST?",
        "",
        f"Produced by `{command}`; every number below is read from the runs' own `metrics.json` under "
        f"[{results}](../{results}) (one folder per dataset / arm / seed, with its training log and plots). "
        + describe_runs([r for arms in table.values() for a in arms.values() for r in a["runs"]]),
        "",
        f"**Status: {'complete' if complete else 'IN PROGRESS'}** ({'; '.join(status)} finished). "
        + (
            ""
            if complete
            else "Rerunning the command continues where it stopped; an arm with n = 1 has no spread "
            "yet, and nothing below is a conclusion until every arm has all its seeds."
        ),
        "",
        "**Protocol (ours):** trained from scratch at 28 px (28³ for 3D); AdamW + cosine schedule with warm-up; "
        "the checkpoint is selected on the **validation** split by AUC; the **test** split is evaluated once, "
        "with that checkpoint, through `medmnist.Evaluator`; mean ± sample std over seeds. The four arms share "
        "the recipe and differ only in the booster.",
        "",
        "**Protocol (paper):** ImageNet-pretrained ViT-S/16 at 224 px for 2D, LLaMA-1 7B layer 31 as the block, "
        "100 epochs, checkpoint picked on the **test** split, a single run. The paper's numbers are shown for "
        "orientation only: they are not comparable to ours (different backbone size and pretraining, "
        "different LLM, test-set model selection, one seed).",
        "",
    ]
    for flag, arms in table.items():
        first = next(iter(arms.values()))
        cfg = first["runs"][0]
        lines += [
            f"## {flag}",
            "",
            f"Model `{cfg['model']}`, {cfg['epochs']} epochs, seeds {first['seeds']}.",
            "",
            "| arm | test ACC (%) | test AUC (%) | val ACC (%) | val AUC (%) | trainable / frozen params | n |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, s in arms.items():
            r = s["runs"][0]
            lines.append(
                f"| {LABELS[name]} | {_fmt(s['test_acc_mean'], s['test_acc_std'], s['n'])} | "
                f"{_fmt(s['test_auc_mean'], s['test_auc_std'], s['n'])} | "
                f"{_fmt(s['val_acc_mean'], s['val_acc_std'], s['n'])} | "
                f"{_fmt(s['val_auc_mean'], s['val_auc_std'], s['n'])} | {r['params_trainable'] / 1e6:.2f}M / "
                f"{r['params_frozen'] / 1e6:.2f}M | {s['n']} |"
            )
        if flag in PAPER:
            p = PAPER[flag]
            lines += [
                "",
                f"Paper ({p['model']}, LLaMA-7B layer 31, test-selected, one run): baseline "
                f"{p['base'][0]:.2f} ACC / {p['base'][1]:.2f} AUC → +R-LLM {p['r_llm'][0]:.2f} ACC / "
                f"{p['r_llm'][1]:.2f} AUC.",
            ]
        lines += _comparisons(arms)
        lines.append("")
    lines += sweep_section(SWEEPS)
    atomic_write_text(out, "\n".join(lines))


#: where `make layer-sweep` writes each dataset's sweep (benchmarks/sweeps/<flag>.yaml)
SWEEPS = Path("benchmarks/results/sweep")


def sweep_section(root: Path) -> list[str]:
    """The layer sweeps' own reports (sweep.md, written by `rllm-zoo sweep`), one level down."""
    reports = sorted(root.glob("*/sweep.md"))
    if not reports:
        return []
    lines = [
        "# Which LLM layer boosts: the layer sweep",
        "",
        "Produced by `make layer-sweep` (`rllm-zoo sweep --config benchmarks/sweeps/<flag>.yaml`), with the "
        "tuned recipe of each dataset (rllm_zoo/training/recipes/). Each report below is the sweep's own "
        "`sweep.md`; its runs' `metrics.json` are under the same folder. What it means for choosing a "
        "layer: [choosing-a-layer.md](choosing-a-layer.md).",
        "",
    ]
    for report in reports:
        flag = report.parent.name
        lines += [f"## {flag} sweep", "", f"From [{report}](../{report}).", ""]
        for line in report.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                line = (
                    "#" + line
                    if line.startswith("## ") or line.startswith("### ")
                    else "### " + line.lstrip("# ")
                )
            line = line.replace("](sweep.png)", f"](../{report.parent}/sweep.png)")
            lines.append(line)
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", default="../shared/medmnist")
    parser.add_argument(
        "--seeds",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="override the plans' seeds (RetinaMNIST 0,1,2; AdrenalMNIST3D 0-4)",
    )
    parser.add_argument("--only", nargs="+", default=list(PLANS), choices=list(PLANS))
    parser.add_argument("--epochs", type=int, default=None, help="override every plan's epochs (smoke runs)")
    parser.add_argument(
        "--model-kwargs", type=json.loads, default={}, help="JSON, e.g. '{\"depth\": 2}' (smoke runs)"
    )
    parser.add_argument("--runs", type=Path, default=Path("runs/table"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/table"))
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--progress", action="store_true", help="per-epoch progress bars too")
    parser.add_argument(
        "--collect-only", action="store_true", help="rewrite the markdown from existing results"
    )
    args = parser.parse_args()
    if not args.collect_only:
        run_all(args)
    table = collect(args.results)
    atomic_write_text(args.results / "summary.json", json.dumps(table, indent=2))
    command = "python benchmarks/results_table.py" + (
        f" --seeds {','.join(map(str, args.seeds))}" if args.seeds else ""
    )
    write_markdown(table, args.out, command, args.results, args.seeds)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
