"""``make conformance``: timm's own model tests over rllm_zoo's models -> docs/conformance.md / .json.

Fetches the source distribution of the installed timm (``pip download --no-binary :all:
--no-deps timm==<version>``) into ``.cache/conformance/`` (reused when present; nothing of timm's
is copied into the repository), extracts its ``tests/`` and runs ``tests/test_models.py`` with
pytest and the plugin :mod:`rllm_conformance` (this folder), which keeps the cases of every
``rllm_*`` model and of one boosted variant per plug-and-play family. Then it prints
pass/fail/skip counts per test group and writes them to ``docs/conformance.md`` and
``docs/conformance.json``.

Usage::

    python tools/conformance/run.py                      # everything (about 35 minutes on 2 CPU cores)
    python tools/conformance/run.py --select 'rllm_*'    # the zoo's models only
    python tools/conformance/run.py -- -k backward -x    # extra pytest arguments after --
    python tools/conformance/run.py --merge -- -k fx      # rerun some cases into the last full run, rewrite docs
    python tools/conformance/run.py --report-only        # rewrite the docs from the last run's JSON
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tarfile
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from rllm_conformance import GROUPS  # noqa: E402

CACHE = ROOT / ".cache" / "conformance"
DOCS_MD = ROOT / "docs" / "conformance.md"
DOCS_JSON = ROOT / "docs" / "conformance.json"
README = ROOT / "README.md"
README_START, README_END = "<!-- conformance:start -->", "<!-- conformance:end -->"
GROUP_ORDER = list(dict.fromkeys(GROUPS.values()))
COMMAND = "make conformance"

#: Why a group cannot pass for a kind of model (kept in the docs next to the counts).
KNOWN_LIMITS = {
    ("plug", "forward_torchscript"): (
        "rllm_zoo.boost attaches the booster to an existing timm model with a forward hook on the site "
        "module (the model's class is not changed, its keys stay timm's); torch.jit.script compiles a "
        "module's hooks as free functions of that module, and the hook object that runs `model.booster` "
        "(a module outside the site) cannot be compiled. The zoo's own ViT calls the booster itself and "
        "scripts. Workaround for a plugged model: torch.fx-trace it first (fx_torchscript), or torch.compile."
    ),
}


def installed_timm() -> str:
    """The installed timm version."""
    import timm

    return timm.__version__


def fetch_sdist(version: str, cache: Path = CACHE) -> Path:
    """The timm ``version`` source distribution in ``cache`` (downloaded by pip when absent)."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"timm-{version}.tar.gz"))
    if found:
        return found[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-binary",
        ":all:",
        "--no-deps",
        "--quiet",
        f"timm=={version}",
        "-d",
        str(cache),
    ]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    found = sorted(cache.glob(f"timm-{version}.tar.gz"))
    if not found:
        raise SystemExit(f"pip download left no timm-{version}.tar.gz in {cache}")
    return found[0]


def extract_tests(sdist: Path, version: str, cache: Path = CACHE) -> Path:
    """Extract ``tests/`` and ``pyproject.toml`` of the sdist (not timm's sources: the installed timm runs)."""
    root = cache / f"timm-{version}"
    if (root / "tests" / "test_models.py").is_file():
        return root
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            parts = Path(m.name).parts
            if len(parts) >= 2 and (parts[1] == "tests" or parts[1:] == ("pyproject.toml",)) and m.isfile():
                m.name = str(Path(*parts[1:]))
                members.append(m)
        tar.extractall(root, members=members, filter="data")
    return root


def run_pytest(tests_root: Path, report: Path, select: str, extra: list[str]) -> int:
    """Run timm's test_models.py with the plugin; returns pytest's exit status."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("HF_HUB_OFFLINE", "1")  # nothing but the zoo's own weights is fetched
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(tests_root / "tests" / "test_models.py"),
        "-c",
        str(tests_root / "pyproject.toml"),
        "--rootdir",
        str(tests_root),
        "-p",
        "rllm_conformance",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rN",
        "--tb=line",
        f"--rllm-report={report}",
        f"--rllm-hub={ROOT / 'zoo'}",  # the pretrained groups load the zoo's released weights
    ]
    if select:
        cmd.append(f"--rllm-select={select}")
    cmd += extra
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env, cwd=str(tests_root)).returncode


def summarize(data: dict) -> dict[str, dict[str, Counter]]:
    """``{kind: {group: Counter(passed=, failed=, skipped=)}}`` of a plugin report."""
    out: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for case in data["cases"]:
        out[case["kind"]][case["group"]][case["outcome"]] += 1
    return out


def _cell(c: Counter | None) -> str:
    if not c:
        return "-"
    return f"{c['passed']} / {c['failed']} / {c['skipped']}"


def render_markdown(data: dict, command: str = COMMAND) -> str:
    """docs/conformance.md from a plugin report."""
    counts = summarize(data)
    lines = [
        "# timm conformance",
        "",
        f"timm's own `tests/test_models.py` (timm {data['timm']} source distribution, torch {data['torch']}) "
        f"run over rllm_zoo's models by `{command}` (`tools/conformance/run.py`, plugin "
        "`tools/conformance/rllm_conformance.py`); generated, do not edit. "
        f"{len(data['cases'])} cases in {data['seconds']:.0f} s, {data.get('date', '')}.",
        "",
        "* **zoo**: every `rllm_*` model (`timm.list_models('rllm_*')`, the default embedded SmolLM2 layer);",
        "* **plug**: one `r_llm_boost_<base>` per plug-and-play family, registered for the session: the timm "
        "base boosted by `rllm_zoo.boost` through the `r_llm_boost` entry point, with a random-init SmolLM2 "
        "layer (`llm='random:smollm2'`).",
        "",
        "timm picks a model's tests by its name (`NON_STD_FILTERS`: `vit_*`, `deit*`...: token models get "
        "`default_cfgs_non_std` instead of `default_cfgs` and no `forward_features`) and source module "
        "(`FEAT_INTER_FILTERS`: intermediates and pruning tests). The plugin classifies each model as its "
        "reference architecture: `rllm_vit_<x>` as timm's `vit_<x>` (module `vision_transformer`), "
        "`r_llm_boost_<base>` as `<base>`.",
        "",
        "Counts are passed / failed / skipped.",
        "",
        *counts_table(data),
        "",
    ]

    lines += [
        "Before this tool's fixes (issue report: the `rllm_*` models only, booster as a forward hook, input "
        "check as a pre-hook, LLM weights as frozen parameters), timm's suite gave forward 8/0, forward_features "
        "8/0, forward_intermediates(_features) 16/0, backward 0/8, default_cfgs 0/11, forward_torchscript 0/8, "
        "fx forward/backward/torchscript 0/24, prune_intermediate_layers_contract 0/8 (passed/failed).",
        "",
        "## The contracts",
        "",
        "* zoo ViT: `forward_features(x) = norm(booster(blocks(x)))`, called by the model itself (no hook, so "
        "TorchScript and torch.fx see the booster); intermediates are block outputs before the booster; "
        "`prune_intermediate_layers(i)` keeps the booster after the last kept block, `prune_norm=True` removes it "
        "with the norm (features end at the tap); the input checks are eager-only (skipped under TorchScript "
        "and fx tracing).",
        "* plug: the booster runs through a forward hook on its site (on the last child of a plain "
        "`nn.Sequential` stage, which timm's gradient checkpointing calls); pruning that removes the site removes "
        "the booster with it.",
        "* both: the frozen LLM layer is held as buffers, so every parameter gets a gradient.",
        "* load_pretrained: the zoo's tags (`zoo/`) served by the local Hub test server (`tests/hub_server.py`).",
        "",
    ]

    models = list(data["models"])
    groups = [g for g in GROUP_ORDER if any(c["group"] == g for c in data["cases"])]
    mark = {"passed": "✓", "failed": "✗", "skipped": "s"}
    grid: dict[tuple[str, str], list[str]] = defaultdict(list)
    for case in data["cases"]:
        grid[(case["model"].split(".")[0], case["group"])].append(mark[case["outcome"]])
    lines += [
        "## Per model",
        "",
        "✓ passed, ✗ failed, s skipped, - not selected by timm for this model (tagged names count once per tag).",
        "",
        "| model | " + " | ".join(groups) + " |",
        "|---|" + "---|" * len(groups),
    ]
    for m in models:
        lines.append(f"| `{m}` | " + " | ".join("".join(grid.get((m, g), [])) or "-" for g in groups) + " |")
    lines.append("")

    failed = [c for c in data["cases"] if c["outcome"] == "failed"]
    lines += ["## What fails, and why", ""]
    limits = [
        (k, g, why) for (k, g), why in KNOWN_LIMITS.items() if counts.get(k, {}).get(g, {}).get("failed")
    ]
    for kind, group, why in limits:
        lines.append(f"* **{group}** ({kind}): {why}")
    if not failed:
        lines.append("Nothing fails.")
    else:
        lines += ["", "| group | model | first line of the failure |", "|---|---|---|"]
        for c in failed:
            msg = c["message"].replace("|", "\\|")
            lines.append(f"| {c['group']} | `{c['model']}` | {msg} |")
    skipped = [c for c in data["cases"] if c["outcome"] == "skipped"]
    if skipped:
        lines += ["", "## Skipped", "", "| group | model | reason |", "|---|---|---|"]
        for c in skipped:
            msg = c["message"].replace("|", "\\|")
            lines.append(f"| {c['group']} | `{c['model']}` | {msg} |")
    not_run = [g for g in GROUP_ORDER if g not in groups]
    if not_run:
        lines += ["", "Groups with no case for these models: " + ", ".join(not_run) + "."]
    return "\n".join(lines) + "\n"


def counts_table(data: dict) -> list[str]:
    """The per-group markdown table (zoo and plug columns) with a total row."""
    counts = summarize(data)
    lines = ["| group | zoo (rllm_*) | plug (r_llm_boost_*) |", "|---|---|---|"]
    for group in GROUP_ORDER:
        zoo, plug = counts.get("zoo", {}).get(group), counts.get("plug", {}).get(group)
        if zoo or plug:
            lines.append(f"| {group} | {_cell(zoo)} | {_cell(plug)} |")
    total = {k: sum((c for c in counts.get(k, {}).values()), Counter()) for k in ("zoo", "plug")}
    lines.append(f"| **total** | {_cell(total['zoo'])} | {_cell(total['plug'])} |")
    return lines


def readme_block(data: dict) -> str:
    """What ``make conformance`` writes between the README's conformance markers."""
    counts = summarize(data)
    lines = [
        README_START,
        f"timm {data['timm']}, torch {data['torch']}; passed / failed / skipped "
        "(generated by `make conformance`):",
        "",
        *counts_table(data),
        "",
    ]
    failing = defaultdict(list)
    for case in data["cases"]:
        if case["outcome"] == "failed":
            failing[(case["kind"], case["group"])].append(case)
    if not failing:
        lines.append("Every group passes.")
    else:
        lines.append("What does not pass, and why:")
        lines.append("")
        for (kind, group), cases in sorted(failing.items()):
            why = KNOWN_LIMITS.get((kind, group)) or cases[0]["message"]
            models = ", ".join(sorted({f"`{c['model']}`" for c in cases}))
            lines.append(
                f"* {group} ({kind}, {len(cases)} of {sum(counts[kind][group].values())}: {models}): {why}"
            )
    lines.append(README_END)
    return "\n".join(lines)


def update_readme(data: dict, path: Path = README) -> bool:
    """Replace the block between the conformance markers of the README; False when there are none."""
    text = path.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    path.write_text(text[:start] + readme_block(data) + text[end + len(README_END) :], encoding="utf-8")
    return True


def print_counts(data: dict) -> None:
    """The per-group table on stdout."""
    counts = summarize(data)
    print(f"\n{'group':38s} {'zoo p/f/s':>14s} {'plug p/f/s':>14s}")
    for group in GROUP_ORDER:
        zoo, plug = counts.get("zoo", {}).get(group), counts.get("plug", {}).get(group)
        if zoo or plug:
            print(f"{group:38s} {_cell(zoo):>14s} {_cell(plug):>14s}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--select", default="", help="comma-separated fnmatch patterns of models (default: all)"
    )
    parser.add_argument("--cache", type=Path, default=CACHE, help="where the sdist and its tests go")
    parser.add_argument("--report-only", action="store_true", help="rewrite the docs from the last JSON")
    parser.add_argument("--no-docs", action="store_true", help="print the counts, leave docs/ alone")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="partial run: replace its cases in the last full run's results and rewrite the docs",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)

    partial = bool(args.select or args.pytest_args)
    raw = args.cache / ("last-partial.json" if partial and not args.report_only else "last-run.json")
    status = 0
    if not args.report_only:
        version = installed_timm()
        tests_root = extract_tests(fetch_sdist(version, args.cache), version, args.cache)
        status = run_pytest(tests_root, raw, args.select, args.pytest_args)
        if not raw.is_file():
            print(f"pytest exited with {status} and wrote no report", file=sys.stderr)
            return status or 1
    data = json.loads(raw.read_text(encoding="utf-8"))
    data.setdefault("date", _dt.date.fromtimestamp(raw.stat().st_mtime).isoformat())
    if partial and args.merge and not args.report_only:
        full_path = args.cache / "last-run.json"
        full = json.loads(full_path.read_text(encoding="utf-8"))
        fresh = {(c["group"], c["model"]): c for c in data["cases"]}
        old = {(c["group"], c["model"]) for c in full["cases"]}
        full["cases"] = [fresh.get((c["group"], c["model"]), c) for c in full["cases"]]
        full["cases"] += [c for key, c in fresh.items() if key not in old]
        full["seconds"] = round(full["seconds"] + data["seconds"], 1)
        full["date"] = data["date"]
        full["merged"] = [*full.get("merged", []), " ".join([args.select, *args.pytest_args]).strip()]
        full_path.write_text(json.dumps(full, indent=1) + "\n", encoding="utf-8")
        data, partial = full, False
    print_counts(data)
    if not args.no_docs and not partial:
        DOCS_JSON.write_text(
            json.dumps({**data, "command": COMMAND, "summary": summarize(data)}, indent=1) + "\n",
            encoding="utf-8",
        )
        DOCS_MD.write_text(render_markdown(data), encoding="utf-8")
        print(f"\nwrote {DOCS_MD.relative_to(ROOT)} and {DOCS_JSON.relative_to(ROOT)}")
        if update_readme(data):
            print("updated the counts in README.md (Conformance)")
    elif partial:
        print("\n(partial run: docs/conformance.* left as they are)")
    # 1 (some cases failed) is the expected outcome while known limits stand: the docs say which
    return 0 if status in (0, 1) else status


if __name__ == "__main__":
    raise SystemExit(main())
