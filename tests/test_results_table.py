"""The results-table script, end to end on a small generated RetinaMNIST-format file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_results_table_smoke(medmnist_root, tmp_path):
    out = tmp_path / "results.md"
    cmd = [
        sys.executable,
        "benchmarks/results_table.py",
        "--data-root",
        str(medmnist_root),
        "--seeds",
        "0,1",
        "--epochs",
        "1",
        "--only",
        "retinamnist",
        "--model-kwargs",
        '{"depth": 1}',
        "--runs",
        str(tmp_path / "runs"),
        "--results",
        str(tmp_path / "results"),
        "--out",
        str(out),
    ]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=900)
    text = out.read_text()
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())["retinamnist"]
    assert set(summary) == {"baseline", "r_llm", "mlp", "r_llm_random"}
    for arm in summary.values():
        assert arm["n"] == 2 and arm["seeds"] == [0, 1]
    r = summary["r_llm"]
    assert f"{100 * r['test_acc_mean']:.2f} ± {100 * r['test_acc_std']:.2f}" in text and "IN PROGRESS" in text
    assert "54.25" in text and "checkpoint picked on the **test** split" in text
    assert "| R-LLM − ViT |" in text and "(p = " in text  # differences with Welch's test
    # rerunning skips finished runs (their metrics are reused, not recomputed)
    before = (tmp_path / "runs/retinamnist/baseline/seed0/metrics.json").stat().st_mtime_ns
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=900)
    assert (tmp_path / "runs/retinamnist/baseline/seed0/metrics.json").stat().st_mtime_ns == before

    # a fresh machine has the committed results but no checkpoints: zoo_release trains the selected
    # runs again from their committed config and checks they reproduce the committed metrics
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from zoo_release import ensure_checkpoints

    shutil.rmtree(tmp_path / "runs")
    retrained = ensure_checkpoints(
        tmp_path / "runs", tmp_path / "results", str(medmnist_root), flags=("retinamnist",)
    )
    assert len(retrained) == 3 and all((run / "best.pt").is_file() for run in retrained)
    assert ensure_checkpoints(tmp_path / "runs", tmp_path / "results", flags=("retinamnist",)) == []
    # a run that does not reproduce its committed metrics is refused
    run = retrained[0]
    committed = tmp_path / "results" / run.relative_to(tmp_path / "runs") / "metrics.json"
    m = json.loads(committed.read_text())
    m["test"]["auc"] += 0.01
    committed.write_text(json.dumps(m))
    shutil.rmtree(run)
    with pytest.raises(RuntimeError, match="does not reproduce the table's run"):
        ensure_checkpoints(
            tmp_path / "runs", tmp_path / "results", str(medmnist_root), flags=("retinamnist",)
        )


def test_sweep_reports_join_the_results_page(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import results_table

    assert results_table.sweep_section(tmp_path) == []  # no sweep yet: nothing added
    folder = tmp_path / "retinamnist"
    folder.mkdir()
    (folder / "sweep.md").write_text("# Sweep\n\n## Arms\n\n| a |\n\n![plot](sweep.png)\n")
    lines = results_table.sweep_section(tmp_path)
    assert "## retinamnist sweep" in lines and "### Sweep" in lines and "### Arms" in lines
    assert f"![plot](../{folder}/sweep.png)" in lines
