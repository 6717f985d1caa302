"""Release the zoo's pretrained weights from the results table, and report their sizes.

    python benchmarks/zoo_release.py                  # after benchmarks/results_table.py

For each dataset of the table and each boosted arm (R-LLM with SmolLM2, the mlp control,
R-LLM with a random block), the seed with the best validation score is written to
``zoo/<name>/`` (delta weights + card + metrics + plots; ``zoo/index.json`` records every
candidate's validation scores). Then the weights' size in full and in delta mode, and the mode
``rllm-zoo publish`` will push, are written to ``docs/pretrained.md`` (and ``zoo/sizes.json``).
The checkpoints come from ``runs/table`` (kept by the results table on the machine that ran it).
Where a selected run's checkpoint is missing (a fresh machine: only the metrics are committed),
the run is trained again from its committed ``config.yaml``, and released only if its
validation and test metrics equal the committed ones (training is deterministic on a CPU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rllm_zoo.hub.weights import llm_reference, resolve_weights_mode
from rllm_zoo.hub.zoo import ZOO_ARMS, ZOO_MODELS, publish_zoo, select_best_seed
from rllm_zoo.training import fit
from rllm_zoo.training.config import atomic_write_text, load_config
from rllm_zoo.training.release import release_zoo


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f}"


def write_report(index: list[dict], sizes: list[dict], out: Path, zoo: Path) -> None:
    by_name = {r["name"]: r for r in sizes}
    lines = [
        "# Pretrained weights",
        "",
        "Produced by `python benchmarks/zoo_release.py` from the runs of the results table "
        "([results.md](results.md)); published with `rllm-zoo publish`. Each member is the seed with the "
        "best **validation** score of its arm (test scores play no part in the choice); its test scores are "
        "those of that one run, not the table's mean.",
        "",
        "| member (repo `rllm-zoo/<name>`) | seed | val ACC / AUC (%) | test ACC / AUC (%) | "
        "full weights (MiB) | delta weights (MiB) | pushed as |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in index:
        m = json.loads((zoo / row["name"] / "metrics.json").read_text())
        s = by_name[row["name"]]
        lines.append(
            f"| `{row['name']}` | {row['seed']} | {100 * m['val']['acc']:.2f} / {100 * m['val']['auc']:.2f} | "
            f"{100 * m['test']['acc']:.2f} / {100 * m['test']['auc']:.2f} | {_mb(s['full_bytes'])} | "
            f"{_mb(s['delta_bytes'])} | {s['auto_weights']} |"
        )
    lines += [
        "",
        "*full*: every tensor, the frozen LLM layer included (self-contained). *delta*: the trainable "
        "tensors only; loading re-reads the LLM layer from its source and checks its sha256. `auto` pushes "
        "full when the LLM's licence allows redistribution (SmolLM2-135M: Apache-2.0) or when no LLM weight "
        "is involved (random block, mlp control), and delta otherwise. The committed `zoo/` folders hold delta "
        "weights; `rllm-zoo publish` rebuilds each member (checking the sha256) before pushing it.",
        "",
        "Load them with `timm.create_model('<name>', pretrained=True)` (2D, after `import rllm_zoo`) or "
        "`rllm_zoo.load_from_hub('rllm-zoo/<name>')` (3D MONAI bundles, also `monai.bundle.load`).",
        "",
    ]
    atomic_write_text(out, "\n".join(lines))


def ensure_checkpoints(
    runs: Path, results: Path, data_root: str | None = None, flags: tuple[str, ...] = tuple(ZOO_MODELS)
) -> list[Path]:
    """Train again every selected run whose checkpoint is missing, from its committed config.yaml.

    The retrained run must reproduce the committed validation and test metrics (to 1e-6), or
    it is refused: its checkpoint could not stand for the run the table reports. Returns the
    runs that were trained again.
    """
    retrained = []
    for flag in flags:
        for arm in ZOO_ARMS:
            seed, committed = select_best_seed(results, flag, arm)
            run = runs / flag / arm / f"seed{seed}"
            if (run / "best.pt").is_file():
                continue
            if (run / "metrics.json").is_file():
                raise FileNotFoundError(
                    f"{run} is finished but has no best.pt; delete the folder to train it again"
                )
            print(f"zoo_release: {run}/best.pt is missing; training it again", flush=True)
            overrides = {
                "out": str(run),
                "progress": False,
                **({"data_root": data_root} if data_root else {}),
            }
            cfg = load_config(results / flag / arm / f"seed{seed}" / "config.yaml", overrides)
            again = fit(cfg, resume=True)
            for split in ("val", "test"):
                for key, value in committed[split].items():
                    if abs(again[split][key] - value) > 1e-6:
                        raise RuntimeError(
                            f"{run}: retrained {split} {key} = {again[split][key]:.6f}, committed {value:.6f}; "
                            "this machine does not reproduce the table's run, so its checkpoint cannot stand for "
                            f"it. Rerun the table (python benchmarks/results_table.py --only {flag}) here instead."
                        )
            retrained.append(run)
    return retrained


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=Path, default=Path("runs/table"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/table"))
    parser.add_argument("--zoo", type=Path, default=Path("zoo"))
    parser.add_argument("--out", type=Path, default=Path("docs/pretrained.md"))
    parser.add_argument(
        "--data-root", default=None, help="for runs trained again (default: the one in their config)"
    )
    parser.add_argument("--sizes-only", action="store_true", help="do not re-release; report sizes of zoo/")
    args = parser.parse_args()
    if args.sizes_only:
        index = json.loads((args.zoo / "index.json").read_text())
    else:
        ensure_checkpoints(args.runs, args.results, args.data_root)
        index = release_zoo(args.runs, args.results, args.zoo)
    sizes = publish_zoo(args.zoo, dry_run=True)
    from rllm_zoo.hub.pull import load_from_folder

    for row in sizes:
        model = load_from_folder(args.zoo / row["name"])
        row["auto_weights"] = resolve_weights_mode("auto", llm_reference(model))
    atomic_write_text(args.zoo / "sizes.json", json.dumps(sizes, indent=2) + "\n")
    write_report(index, sizes, args.out, args.zoo)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
