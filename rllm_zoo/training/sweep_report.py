"""The report of a layer sweep: ``sweep.json``, ``sweep.md`` and ``sweep.png``.

Everything is computed from the finished runs' ``metrics.json`` (see :mod:`.sweep`):

* per arm: n, the seeds, mean and sample std of val / test AUC and ACC;
* comparisons, each a family corrected by Holm's method separately per split (val, test) and
  metric (AUC, ACC): every arm minus the ``baseline`` (the reviewer's question), and every
  LLM arm minus its matched controls (``mlp`` of the same LLM; ``random`` of the same LLM and
  variant, at the same layer when run there, else at the random control's layer). Each
  comparison has the mean difference, its 95 % t-interval and the p-value of Welch's t-test
  (:mod:`.sweep_stats`), n of both arms, the Holm-adjusted p-value and the family size m;
* ``--select-on val``: the (LLM, layer, variant) with the best mean validation metric is chosen
  from validation numbers only (:func:`select_arm` never sees a test number), then its test
  score is reported once, with one comparison against the baseline on test.

Example:
    >>> from rllm_zoo.training.sweep import load_plan, collect_runs
    >>> plan = load_plan("runs/sweep")                                       # doctest: +SKIP
    >>> report = build_report(plan, collect_runs("runs/sweep", plan))        # doctest: +SKIP
    >>> write_report("runs/sweep", report)                                   # doctest: +SKIP
    >>> select_arm({"a-L0": [0.70, 0.72], "a-L3": [0.75, 0.71]})
    'a-L3'
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import atomic_write_text
from ..environment import describe_runs
from .sweep_stats import holm, mean_std, welch

if TYPE_CHECKING:
    from .sweep import Arm, SweepPlan

__all__ = ["build_report", "plot_sweep", "select_arm", "write_markdown", "write_report"]

SPLITS = ("val", "test")
METRICS = ("auc", "acc")
FAMILIES = {
    "baseline": "arm − baseline (ViT, booster off)",
    "mlp": "LLM arm − mlp control of the same LLM (adapters, no block)",
    "random": "LLM arm − random-init block of the same LLM and variant",
}


def select_arm(val_scores: Mapping[str, Sequence[float]]) -> str | None:
    """The arm with the highest mean validation score; ties go to the first in order.

    Only validation numbers are passed in: the choice cannot depend on the test split.

    Example:
        >>> select_arm({"x": [0.7], "y": [0.7], "z": []})
        'x'
    """
    best, best_score = None, -math.inf
    for arm, values in val_scores.items():
        finite = [v for v in values if v is not None and math.isfinite(v)]
        if not finite:
            continue
        score = sum(finite) / len(finite)
        if score > best_score:
            best, best_score = arm, score
    return best


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "std": None, "n": 0, "values": []}
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "n": len(values), "values": values}


def _values(runs: list[dict[str, Any]], split: str, metric: str) -> list[float]:
    out = []
    for r in runs:
        v = (r.get(split) or {}).get(metric)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out.append(float(v))
    return out


def _matched(arm: Arm, arms: list[Arm], kind: str) -> Arm | None:
    """The control of ``kind`` an LLM arm is compared with (``None`` when not in the grid)."""
    if kind == "mlp":
        return next((a for a in arms if a.kind == "mlp" and a.llm == arm.llm), None)
    same = [a for a in arms if a.kind == "random" and a.llm == arm.llm and a.variant == arm.variant]
    return next((a for a in same if a.layer == arm.layer), same[0] if same else None)


def _comparisons(arms: list[Arm], runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    pairs: list[tuple[str, Arm, Arm]] = []
    base = next((a for a in arms if a.kind == "baseline"), None)
    if base is not None:
        pairs += [("baseline", a, base) for a in arms if a is not base]
    for kind in ("mlp", "random"):
        for a in arms:
            ref = _matched(a, arms, kind) if a.kind == "llm" else None
            if ref is not None:
                pairs.append((kind, a, ref))
    rows: list[dict[str, Any]] = []
    for family, _ in FAMILIES.items():
        for split in SPLITS:
            for metric in METRICS:
                group = []
                for fam, a, ref in pairs:
                    x, y = _values(runs[a.id], split, metric), _values(runs[ref.id], split, metric)
                    if fam != family or not x or not y:
                        continue
                    group.append(
                        {
                            "family": family,
                            "arm": a.id,
                            "reference": ref.id,
                            "split": split,
                            "metric": metric,
                            **welch(x, y).to_dict(),
                        }
                    )
                adjusted = holm([g["p"] for g in group])
                m = sum(g["p"] is not None for g in group)
                for g, p in zip(group, adjusted):
                    g["p_holm"], g["family_size"] = p, m
                rows += group
    return rows


def build_report(
    plan: SweepPlan, runs: dict[str, list[dict[str, Any]]], busy: Sequence[str] = ()
) -> dict[str, Any]:
    """The content of ``sweep.json`` from the plan and the finished runs of every arm.

    ``runs`` maps arm id -> the runs' ``metrics.json`` dicts (:func:`~.sweep.collect_runs`).
    """
    spec = plan.spec
    metric = spec.get("metric", "auc")
    arms_out = []
    for arm in plan.arms:
        rs = runs.get(arm.id, [])
        entry: dict[str, Any] = {**arm.to_dict(), "n": len(rs), "seeds": [r.get("seed") for r in rs]}
        for split in SPLITS:
            entry[split] = {m: _summary(_values(rs, split, m)) for m in METRICS}
        entry["runs"] = [
            {
                "seed": r.get("seed"),
                "dir": r.get("dir"),
                "selected_epoch": r.get("selected_epoch"),
                "llm_layer": r.get("llm_layer"),
                "val": r.get("val"),
                "test": r.get("test"),
                "train_seconds": r.get("train_seconds"),
                "params_trainable": r.get("params_trainable"),
                "params_frozen": r.get("params_frozen"),
            }
            for r in rs
        ]
        arms_out.append(entry)
    finished = {f"{a}/seed{r.get('seed')}" for a, rs in runs.items() for r in rs}
    planned = [f"{j.arm}/seed{j.seed}" for j in plan.jobs]
    selection = None
    if spec.get("select_on", "val") == "val":
        selection = _select(plan, runs, metric)
    models = [r.get("model") for rs in runs.values() for r in rs if r.get("model")]
    return {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": models[0] if models else plan.base.get("model"),
        "spec": spec,
        "shared_config": plan.base,
        "llms": plan.llms,
        "metric": metric,
        "status": {
            "planned": len(planned),
            "finished": sum(p in finished for p in planned),
            "complete": all(p in finished for p in planned),
            "running": list(busy),
            "missing": [p for p in planned if p not in finished and p not in busy],
        },
        "arms": arms_out,
        "comparisons": _comparisons(plan.arms, runs),
        "selection": selection,
        "trained_with": describe_runs([r for rs in runs.values() for r in rs]),
    }


def _select(plan: SweepPlan, runs: dict[str, list[dict[str, Any]]], metric: str) -> dict[str, Any] | None:
    candidates = [a for a in plan.arms if a.kind == "llm"]
    val_only = {a.id: _values(runs.get(a.id, []), "val", metric) for a in candidates}
    # a partial grid: only arms with the most finished seeds compete (a mean of 1 seed is not a mean of 3)
    most = max((len(v) for v in val_only.values()), default=0)
    val_only = {k: v for k, v in val_only.items() if len(v) == most}
    chosen = select_arm(val_only)  # validation numbers only
    if chosen is None:
        return None
    arm = plan.arm(chosen)
    rs = runs[chosen]
    test = _values(rs, "test", metric)
    result: dict[str, Any] = {
        "on": "val",
        "metric": metric,
        "arm": chosen,
        "llm": arm.llm,
        "layer": arm.layer,
        "num_layers": arm.num_layers,
        "variant": arm.variant,
        "candidates": sum(bool(v) for v in val_only.values()),
        "val": _summary(val_only[chosen]),
        "test": _summary(test),
        "vs_baseline_test": None,
    }
    base = next((a for a in plan.arms if a.kind == "baseline"), None)
    if base is not None and test and _values(runs.get(base.id, []), "test", metric):
        result["vs_baseline_test"] = {
            "reference": base.id,
            **welch(test, _values(runs[base.id], "test", metric)).to_dict(),
        }
    return result


# ---------------------------------------------------------------------------------------------------------------
# markdown


def _pct(s: dict[str, Any]) -> str:
    if not s or s.get("mean") is None:
        return "–"
    if s.get("std") is None:
        return f"{100 * s['mean']:.2f}"
    return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _diff(c: dict[str, Any]) -> str:
    text = f"{100 * c['diff']:+.2f}"
    if c.get("ci95"):
        lo, hi = c["ci95"]
        text += f" [{100 * lo:+.2f}, {100 * hi:+.2f}]"
    return text


def _layer_cell(a: dict[str, Any]) -> str:
    if a.get("layer") is None:
        return "–"
    specs = ",".join(a.get("layer_specs") or [])
    return f"{a['layer']} of {a['num_layers']} (depth {a['depth']:.2f}{'; ' + specs if specs else ''})"


def write_markdown(report: dict[str, Any], path: str | os.PathLike) -> None:
    """``sweep.md``: status, layers, arms, comparisons with the baseline, the validation choice."""
    st = report["status"]
    spec = report["spec"]
    base = report["shared_config"]
    data = base.get("flag") or base.get("data")
    metric = report["metric"].upper()
    lines = [
        f"# Layer sweep: {data}",
        "",
        f"**Status: {'complete' if st['complete'] else 'IN PROGRESS'}**: {st['finished']} of {st['planned']} "
        f"runs finished"
        + (f", {len(st['running'])} running" if st["running"] else "")
        + (". Rerun the same `rllm-zoo sweep` command to continue." if not st["complete"] else ".")
        + f" Generated {report['generated']}.",
        "",
        f"Every run: model `{report.get('model') or 'the default for the data'}`, {base.get('epochs')} epochs, lr {base.get('lr')}, batch "
        f"{base.get('batch_size')}; the checkpoint is selected on the **validation** split "
        f"(`{base.get('select_metric')}`) and the **test** split is evaluated once with it. Seeds "
        f"{spec['seeds']}; n below is the number of finished seeds of an arm. Numbers are % (mean ± sample "
        "std over seeds). " + report.get("trained_with", ""),
        "",
        "## Layers",
        "",
        "| LLM | layers | requested → absolute index |",
        "|---|---|---|",
    ]
    for source, info in report["llms"].items():
        mapping = ", ".join(f"{k} → {v}" for k, v in info["layers"].items())
        lines.append(f"| `{source}` ({info['name']}) | {info['num_layers']} | {mapping} |")
    lines += [
        "",
        "Relative layers: fraction f of an n-layer LLM is layer floor(f·(n−1) + 0.5) (first = 0.0, "
        "middle = 0.5, last = 1.0); depth = layer / (n − 1).",
        "",
        "## Arms",
        "",
        "| arm | LLM | layer | variant | n | val AUC | val ACC | test AUC | test ACC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    kinds = {"baseline": "ViT, booster off", "mlp": "mlp control", "random": "random-init block"}
    for a in report["arms"]:
        llm = f"`{a['llm']}`" if a.get("llm") else "–"
        if a["kind"] in kinds:
            llm = f"{kinds[a['kind']]}" + (f" (`{a['llm']}`)" if a.get("llm") else "")
        lines.append(
            f"| {a['id']} | {llm} | {_layer_cell(a)} | {a.get('variant') or '–'} | {a['n']} | "
            f"{_pct(a['val']['auc'])} | {_pct(a['val']['acc'])} | {_pct(a['test']['auc'])} | "
            f"{_pct(a['test']['acc'])} |"
        )
    comps = report["comparisons"]
    lines += [
        "",
        "## Comparisons",
        "",
        "Difference of means in percentage points with its 95 % confidence interval (Welch t-interval, "
        "Welch–Satterthwaite df; per comparison, not simultaneous), two-sided p of Welch's t-test, and p "
        "adjusted by Holm's method over the m comparisons of the same family, split and metric. "
        "'–': fewer than two seeds on a side, or no spread. With few seeds only large effects can show.",
    ]
    for family, title in FAMILIES.items():
        for m in METRICS:
            rows = [c for c in comps if c["family"] == family and c["metric"] == m]
            if not rows:
                continue
            by = {(c["arm"], c["reference"], c["split"]): c for c in rows}
            pairs = list(dict.fromkeys((c["arm"], c["reference"]) for c in rows))
            ms = {s: next((c["family_size"] for c in rows if c["split"] == s), 0) for s in SPLITS}
            lines += [
                "",
                f"### {title}: {m.upper()}",
                "",
                f"| arm | reference | n / n ref | Δ test [95 % CI] | p | p Holm (m={ms['test']}) | "
                f"Δ val [95 % CI] | p | p Holm (m={ms['val']}) |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for arm, ref in pairs:
                t, v = by.get((arm, ref, "test")), by.get((arm, ref, "val"))
                any_c = t or v
                cells = []
                for c in (t, v):
                    cells += [_diff(c), _p(c["p"]), _p(c["p_holm"])] if c else ["–", "–", "–"]
                lines.append(
                    f"| {arm} | {ref} | {any_c['n']} / {any_c['n_ref']} | " + " | ".join(cells) + " |"
                )
    lines += ["", "## Layer chosen on validation", ""]
    sel = report.get("selection")
    if spec.get("select_on", "val") != "val":
        lines.append("No selection (`--select-on none`).")
    elif sel is None:
        lines.append("No LLM arm has finished yet.")
    else:
        lines.append(
            f"Chosen **on the validation split only** (the highest mean val {metric} over seeds among "
            f"{sel['candidates']} LLM × layer × variant arms"
            + ("" if st["complete"] else f" with {sel['val']['n']} finished seeds each")
            + f"; test numbers were not used): **{sel['arm']}** "
            f"(`{sel['llm']}`, layer {sel['layer']} of {sel['num_layers']}, {sel['variant']}), val {metric} "
            f"{_pct(sel['val'])} (n = {sel['val']['n']}; optimistic: it is the maximum over the arms). "
            f"Its test {metric}, reported once: **{_pct(sel['test'])}** (n = {sel['test']['n']})."
        )
        vb = sel.get("vs_baseline_test")
        if vb:
            lines.append(
                f"Versus the baseline on test (one comparison, chosen before looking at test): "
                f"{_diff(vb)} points, p = {_p(vb['p'])} (Welch; n = {vb['n']} / {vb['n_ref']})."
            )
    lines += [
        "",
        "Plot: `sweep.png` (val and test "
        f"{metric} against relative layer depth; one line per LLM and variant, bars: ± std over seeds, dots: "
        "seeds; bands: baseline and mlp control mean ± std; ×: random-init block). Raw numbers: `sweep.json`; "
        "every run: `runs/<arm>/seed<k>/`.",
        "",
    ]
    atomic_write_text(path, "\n".join(lines))


# ---------------------------------------------------------------------------------------------------------------
# plot


def plot_sweep(report: dict[str, Any], path: str | os.PathLike) -> None:
    """``sweep.png``: the metric against relative layer depth, val and test side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = report["metric"]
    arms = [a for a in report["arms"] if a["n"]]
    llms = list(report["llms"])
    colors = {src: plt.cm.tab10(i % 10) for i, src in enumerate(llms)}
    styles = ["-", "--", ":", "-."]
    variants = list(dict.fromkeys(a["variant"] for a in arms if a["kind"] == "llm"))
    sel = (report.get("selection") or {}).get("arm")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, split in zip(axes, SPLITS):
        for a in arms:
            s = a[split][metric]
            if s["mean"] is None:
                continue
            if a["kind"] == "baseline" or a["kind"] == "mlp":
                color = "0.35" if a["kind"] == "baseline" else colors.get(a["llm"], "0.5")
                ls = "-" if a["kind"] == "baseline" else "--"
                label = "baseline (ViT)" if a["kind"] == "baseline" else f"mlp control ({a['llm_name']})"
                ax.axhline(s["mean"], color=color, ls=ls, lw=1.2, label=label)
                if s["std"] is not None:
                    ax.axhspan(s["mean"] - s["std"], s["mean"] + s["std"], color=color, alpha=0.12, lw=0)
        for src in llms:
            for vi, variant in enumerate(variants):
                group = sorted(
                    (a for a in arms if a["kind"] == "llm" and a["llm"] == src and a["variant"] == variant),
                    key=lambda a: a["depth"],
                )
                pts = [(a["depth"], a[split][metric]) for a in group if a[split][metric]["mean"] is not None]
                if not pts:
                    continue
                xs = [x for x, _ in pts]
                ys = [s["mean"] for _, s in pts]
                err = [s["std"] or 0.0 for _, s in pts]
                name = report["llms"][src]["name"]
                ax.errorbar(
                    xs,
                    ys,
                    yerr=err,
                    color=colors[src],
                    ls=styles[vi % len(styles)],
                    marker="o",
                    capsize=3,
                    label=f"{name} {variant}",
                )
                for x, s in pts:
                    ax.scatter([x] * len(s["values"]), s["values"], color=colors[src], s=10, alpha=0.35)
        for a in arms:
            if a["kind"] != "random" or a[split][metric]["mean"] is None:
                continue
            s = a[split][metric]
            ax.errorbar(
                [a["depth"]],
                [s["mean"]],
                yerr=[s["std"] or 0.0],
                color=colors.get(a["llm"], "0.5"),
                marker="x",
                ms=8,
                ls="none",
                capsize=3,
                label=f"random block ({a['llm_name']})",
            )
        if sel is not None:
            chosen = next((a for a in arms if a["id"] == sel), None)
            if chosen is not None and chosen[split][metric]["mean"] is not None:
                ax.scatter(
                    [chosen["depth"]],
                    [chosen[split][metric]["mean"]],
                    marker="*",
                    s=220,
                    facecolor="none",
                    edgecolor="k",
                    zorder=5,
                    label="chosen on val",
                )
        ax.set_xlim(-0.05, 1.05)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0\nfirst", "0.25", "0.5", "0.75", "1\nlast"])
        ax.set_xlabel("LLM layer: relative depth = layer / (layers − 1)")
        ax.set_title(f"{split} {metric.upper()}")
        ax.grid(alpha=0.25)
    axes[0].set_ylabel(metric.upper())
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(
        unique.values(),
        unique.keys(),
        loc="upper center",
        ncol=min(4, len(unique)) or 1,
        fontsize=8,
        bbox_to_anchor=(0.5, 1.0 + 0.04 * math.ceil(len(unique) / 4)),
    )
    st = report["status"]
    fig.suptitle(
        f"n per arm ≤ {len(report['spec']['seeds'])} seeds; {st['finished']}/{st['planned']} runs",
        y=-0.02,
        fontsize=8,
    )
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def write_report(out: str | os.PathLike, report: dict[str, Any]) -> dict[str, Path]:
    """Write ``sweep.json``, ``sweep.md`` and ``sweep.png`` into ``out``; returns their paths."""
    out = Path(out)
    paths = {"json": out / "sweep.json", "md": out / "sweep.md", "png": out / "sweep.png"}
    atomic_write_text(paths["json"], json.dumps(report, indent=2, default=float) + "\n")
    write_markdown(report, paths["md"])
    plot_sweep(report, paths["png"])
    return paths
