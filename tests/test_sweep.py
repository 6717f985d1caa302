"""Layer sweeps (rllm_zoo.training.sweep): grid, resumption, locks, statistics, val-only selection."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT

from rllm_zoo.cli import main
from rllm_zoo.training.locks import claim_lock, read_lock
from rllm_zoo.training.sweep import (
    SweepSpec,
    collect_runs,
    llm_num_layers,
    load_plan,
    load_sweep_spec,
    plan_sweep,
    resolve_layer,
)
from rllm_zoo.training.sweep_report import build_report, select_arm, write_report
from rllm_zoo.training.sweep_stats import holm, welch

MICRO = {"depth": 1, "embed_dim": 32, "num_heads": 2}


def _sweep_args(root, llm, out, **extra) -> list[str]:
    args = {
        "flag": "dermamnist",
        "data-root": str(root),
        "llms": llm,
        "layers": "first,last",
        "variants": "residual",
        "seeds": "0,1",
        "model": "rllm_vit_tiny_patch4_28",
        "model-kwargs": json.dumps(MICRO),
        "epochs": "1",
        "batch-size": "8",
        "max-train-batches": "2",
        "warmup-epochs": "0.5",
        "progress": "false",
        "out": str(out),
        **extra,
    }
    return ["sweep", *[x for k, v in args.items() for x in (f"--{k}", v)]]


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny_llm(tiny_llm_dir):
    return str(tiny_llm_dir("llama"))


@pytest.fixture(scope="module")
def finished_sweep(medmnist_root, tiny_llm, tmp_path_factory):
    """The brief's tiny grid, run once through the CLI: 2 layers x 1 variant x 2 seeds + 3 controls."""
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    t0 = time.perf_counter()
    assert main(_sweep_args(medmnist_root, tiny_llm, out)) == 0
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------------------
# layers and spec


def test_relative_layers_resolve_with_round_half_up():
    assert [resolve_layer(x, 4) for x in ("first", "middle", "last", "0.5", "0.25", "1.0")] == [
        0,
        2,
        3,
        2,
        1,
        3,
    ]
    assert [resolve_layer(x, 4) for x in (0, "1", -1, "-4", 0.5)] == [0, 1, 3, 0, 2]  # ints are absolute
    assert (
        resolve_layer("middle", 30) == 15
        and resolve_layer("last", 30) == 29
        and resolve_layer("-1", 30) == 29
    )
    assert resolve_layer("middle", 5) == 2 and resolve_layer("middle", 1) == 0
    for bad in ("1.5", "-0.1", "deep", "", True, 4, "-5"):
        with pytest.raises(ValueError):
            resolve_layer(bad, 4)


def test_num_layers_from_the_config_only(tiny_llm):
    assert llm_num_layers(tiny_llm) == 4 and llm_num_layers(f"random:{tiny_llm}") == 4


def test_plan_is_seed_major_and_records_absolute_layers():
    spec = SweepSpec(
        train={"flag": "dermamnist"},
        llms=["/m/a.gguf", "org/b"],
        layers=["first", "middle", "0.5", "-1"],
        seeds=[0, 1, 2],
    ).validate()
    plan = plan_sweep(spec, num_layers=lambda src: 4 if src.endswith(".gguf") else 30)
    ids = [a.id for a in plan.arms]
    assert ids == [
        "baseline",
        "mlp-a",
        "mlp-org--b",
        "a-L0-residual",
        "a-L2-residual",  # middle and 0.5 are one arm
        "a-L3-residual",
        "org--b-L0-residual",
        "org--b-L15-residual",
        "org--b-L29-residual",
        "random-a-L3-residual",
        "random-org--b-L29-residual",
    ]
    assert plan.arm("a-L2-residual").layer_specs == ("middle", "0.5")
    # seed-major: every arm of seed 0 before any of seed 1
    assert [j.seed for j in plan.jobs] == [0] * 11 + [1] * 11 + [2] * 11
    cfg = plan.config(plan.jobs[4], "out")
    assert (cfg.llm, cfg.llm_layer, cfg.booster, cfg.seed) == ("/m/a.gguf", 2, "residual", 0)
    assert cfg.out == str(Path("out/runs/a-L2-residual/seed0"))
    r = plan.config(next(j for j in plan.jobs if j.arm.startswith("random-a")), "out")
    assert (r.llm, r.llm_layer) == ("random:/m/a.gguf", 3)
    assert plan.config(plan.jobs[0], "out").booster == "off"


def test_spec_from_yaml_and_flags(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "flag: dermamnist\nepochs: 3\nllms: [smollm2]\nlayers: [first, 0.25, 29]\nseeds: [0, 1]\n"
    )
    spec = load_sweep_spec(path, {"seeds": "4,5"}, {"epochs": "5"})
    assert spec.layers == ["first", "0.25", "29"] and spec.seeds == [4, 5]
    assert spec.train == {"flag": "dermamnist", "epochs": "5"} and spec.base_config().epochs == 5
    train_style = tmp_path / "train.yaml"
    train_style.write_text("flag: dermamnist\nllm: smollm2\nllm_layer: -1\nbooster: out\nseed: 3\n")
    spec = load_sweep_spec(train_style, {"layers": "first,last"})
    assert (spec.llms, spec.layers, spec.variants, spec.seeds) == (
        ["smollm2"],
        ["first", "last"],
        ["out"],
        [3],
    )
    with pytest.raises(ValueError, match="set per run"):
        load_sweep_spec(None, {}, {"flag": "dermamnist", "llm": "smollm2"})
    with pytest.raises(ValueError, match="controls"):
        load_sweep_spec(None, {"variants": "mlp"}, {"flag": "dermamnist"})
    with pytest.raises(ValueError, match="layer 'deep'"):
        load_sweep_spec(None, {"layers": "deep"}, {"flag": "dermamnist"})
    with pytest.raises(ValueError, match="eval_test=false has no place in a sweep"):
        load_sweep_spec(None, {}, {"flag": "dermamnist", "eval_test": "false"})
    # a lock must outlive a few missed heartbeats, or two processes could train one run
    with pytest.raises(ValueError, match=r"stale_after must be .* >= 90"):
        load_sweep_spec(None, {"stale_after": "20"}, {"flag": "dermamnist"})


# ---------------------------------------------------------------------------------------------------------------
# statistics


def test_holm_against_a_hand_computed_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> kept monotone: 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005, None])
    assert adjusted[4] is None
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.2]) == [0.2] and holm([]) == []


def test_welch_ci_and_p_match_scipy():
    from scipy import stats

    rng = random.Random(0)
    samples = [
        ([0.80, 0.82, 0.81], [0.75, 0.77, 0.74]),
        ([1.0, 2.0, 3.0], [1.0, 1.5]),
        ([rng.gauss(0.7, 0.05) for _ in range(5)], [rng.gauss(0.72, 0.01) for _ in range(3)]),
        ([rng.gauss(0, 1) for _ in range(12)], [rng.gauss(0.3, 2) for _ in range(7)]),
    ]
    for a, b in samples:
        ours = welch(a, b)
        ref = stats.ttest_ind(a, b, equal_var=False)
        ci = ref.confidence_interval(0.95)
        assert ours.p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-12)
        assert ours.t == pytest.approx(ref.statistic, rel=1e-10)
        assert ours.df == pytest.approx(ref.df, rel=1e-10)
        assert ours.ci95 == pytest.approx((ci.low, ci.high), rel=1e-8)
        assert ours.n == len(a) and ours.n_ref == len(b)
    # the interval by hand: diff +- t_{0.975, df} * se (Welch-Satterthwaite df)
    a, b = [0.80, 0.82, 0.81], [0.75, 0.77, 0.74]
    va, vb = stats.tvar(a) / 3, stats.tvar(b) / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    half = stats.t.ppf(0.975, df) * (va + vb) ** 0.5
    w = welch(a, b)
    assert w.df == pytest.approx(df) and w.ci95 == pytest.approx((w.diff - half, w.diff + half))
    assert welch(a, b, confidence=0.5).ci95[1] - welch(a, b, confidence=0.5).ci95[0] < 2 * half
    assert welch([0.7], [0.6, 0.65]).p is None  # one seed: no test
    assert welch([0.7, 0.7], [0.6, 0.6]).ci95 is None  # no spread: no test
    with pytest.MonkeyPatch.context() as mp:  # SciPy's NaN (nearly identical values) never reaches Holm
        nan = float("nan")
        mp.setattr(stats, "ttest_ind", lambda *a, **k: SimpleNamespace(statistic=nan, pvalue=nan, df=nan))
        assert welch([0.7, 0.8], [0.6, 0.65]).p is None


# ---------------------------------------------------------------------------------------------------------------
# selection on validation


def _synthetic(seeds=(0, 1, 2)):
    spec = SweepSpec(
        train={"flag": "dermamnist"},
        llms=["/m/a", "/m/b"],
        layers=["first", "middle", "last"],
        seeds=list(seeds),
    ).validate()
    plan = plan_sweep(spec, num_layers=lambda src: 8)
    rng = random.Random(1)
    runs = {
        a.id: [
            {
                "seed": s,
                "booster": a.run_keys()["booster"],
                "llm_layer": a.layer,
                "val": {"auc": rng.uniform(0.6, 0.9), "acc": rng.uniform(0.3, 0.6)},
                "test": {"auc": rng.uniform(0.6, 0.9), "acc": rng.uniform(0.3, 0.6)},
            }
            for s in seeds
        ]
        for a in plan.arms
    }
    return plan, runs


def test_selection_on_val_never_looks_at_test(tmp_path):
    plan, runs = _synthetic()
    report = build_report(plan, runs)
    chosen = report["selection"]["arm"]
    val_means = {a.id: sum(r["val"]["auc"] for r in runs[a.id]) / 3 for a in plan.arms if a.kind == "llm"}
    assert chosen == max(val_means, key=val_means.get)
    rng = random.Random(2)
    for _ in range(25):  # permute the test numbers across all runs and perturb them: the choice stands
        tests = [r["test"] for rs in runs.values() for r in rs]
        shuffled = rng.sample(tests, len(tests))
        for r, t in zip([r for rs in runs.values() for r in rs], shuffled):
            r["test"] = {k: min(1.0, max(0.0, v + rng.uniform(-0.3, 0.3))) for k, v in t.items()}
        again = build_report(plan, runs)["selection"]
        assert again["arm"] == chosen
        assert again["test"]["values"] == [r["test"]["auc"] for r in runs[chosen]]  # its test, reported
    # the choice does follow validation
    other = next(a for a in val_means if a != chosen)
    for r in runs[other]:
        r["val"]["auc"] = 0.99
    assert build_report(plan, runs)["selection"]["arm"] == other
    assert select_arm({"x": [0.5, 0.7], "y": [0.6, 0.6], "z": []}) == "x"  # tie: the first in grid order
    write_report(tmp_path, build_report(plan, runs))
    md = (tmp_path / "sweep.md").read_text()
    assert "on the validation split only" in md and "test numbers were not used" in md


def test_selection_on_a_partial_grid_compares_like_with_like(tmp_path):
    plan, runs = _synthetic()
    llm_arms = [a.id for a in plan.arms if a.kind == "llm"]
    lucky = llm_arms[-1]  # one seed finished so far, and a lucky one
    runs[lucky] = runs[lucky][:1]
    runs[lucky][0]["val"]["auc"] = 0.999
    report = build_report(plan, runs)
    sel = report["selection"]
    assert sel["arm"] != lucky and sel["candidates"] == len(llm_arms) - 1 and sel["val"]["n"] == 3
    write_report(tmp_path, report)
    assert (
        f"among {len(llm_arms) - 1} LLM × layer × variant arms with 3 finished seeds each"
        in (tmp_path / "sweep.md").read_text()
    )


def test_report_of_a_sweep_without_finished_runs(tmp_path):
    plan, _ = _synthetic()
    report = build_report(plan, {a.id: [] for a in plan.arms}, busy=["baseline/seed0"])
    assert report["selection"] is None and report["comparisons"] == []
    assert report["status"]["finished"] == 0 and report["status"]["running"] == ["baseline/seed0"]
    write_report(tmp_path, report)
    assert "No LLM arm has finished yet" in (tmp_path / "sweep.md").read_text()
    assert (tmp_path / "sweep.png").is_file()


def test_report_holm_family_and_n_per_arm():
    plan, runs = _synthetic(seeds=(0, 1, 2, 3))
    runs["baseline"] = runs["baseline"][:3]  # an unbalanced, partial sweep
    report = build_report(plan, runs)
    rows = [c for c in report["comparisons"] if c["family"] == "baseline" and c["split"] == "test"]
    auc = [c for c in rows if c["metric"] == "auc"]
    assert len(auc) == len(plan.arms) - 1 and {c["family_size"] for c in auc} == {len(auc)}
    assert all(c["n_ref"] == 3 and c["n"] == 4 for c in auc)
    assert [c["p_holm"] for c in auc] == pytest.approx(holm([c["p"] for c in auc]))
    ref = welch([r["test"]["auc"] for r in runs[auc[0]["arm"]]], [r["test"]["auc"] for r in runs["baseline"]])
    assert auc[0]["p"] == pytest.approx(ref.p) and auc[0]["ci95"] == pytest.approx(list(ref.ci95))
    assert {c["split"] for c in report["comparisons"]} == {"val", "test"}
    assert (
        report["status"]["finished"] == report["status"]["planned"] - 1 and not report["status"]["complete"]
    )


# ---------------------------------------------------------------------------------------------------------------
# end to end


def test_sweep_cli_end_to_end(finished_sweep, tiny_llm):
    out, seconds = finished_sweep
    report = json.loads((out / "sweep.json").read_text())
    assert report["status"] == {**report["status"], "planned": 10, "finished": 10, "complete": True}
    arms = {a["id"]: a for a in report["arms"]}
    assert list(arms) == [
        "baseline",
        "mlp-" + Path(tiny_llm).name,
        f"{Path(tiny_llm).name}-L0-residual",
        f"{Path(tiny_llm).name}-L3-residual",
        f"random-{Path(tiny_llm).name}-L3-residual",
    ]
    assert all(a["n"] == 2 and a["seeds"] == [0, 1] for a in arms.values())
    for arm_id, layer in (
        (f"{Path(tiny_llm).name}-L3-residual", 3),
        (f"random-{Path(tiny_llm).name}-L3-residual", 3),
    ):
        m = json.loads((out / "runs" / arm_id / "seed1" / "metrics.json").read_text())
        assert m["llm_layer"] == layer and arms[arm_id]["depth"] == 1.0  # the absolute layer is recorded
    rows = [c for c in report["comparisons"] if c["family"] == "baseline"]
    assert {(c["split"], c["metric"]) for c in rows} == {
        (s, m) for s in ("val", "test") for m in ("auc", "acc")
    }
    assert all(c["n"] == 2 and c["n_ref"] == 2 for c in rows)
    assert report["selection"]["arm"] in arms and report["selection"]["on"] == "val"
    md = (out / "sweep.md").read_text()
    assert "**Status: complete**" in md and "p Holm (m=" in md and "| 4 | first → 0, last → 3 |" in md
    assert (out / "sweep.png").stat().st_size > 10_000 and not list((out / "locks").glob("*.lock"))
    print(f"tiny sweep (10 runs): {seconds:.1f} s")


def test_second_invocation_trains_nothing(finished_sweep, medmnist_root, tiny_llm, capsys):
    out, first = finished_sweep
    before = _files(out / "runs")
    capsys.readouterr()
    t0 = time.perf_counter()
    assert main(_sweep_args(medmnist_root, tiny_llm, out)) == 0
    seconds = time.perf_counter() - t0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trained"] == 0 and summary["finished_before"] == 10 and summary["complete"]
    assert _files(out / "runs") == before  # not one file of a run written again
    assert seconds < first / 2, (seconds, first)
    # other training settings on the same folder: refused before anything runs
    assert main(_sweep_args(medmnist_root, tiny_llm, out, epochs="2")) == 2
    assert "other training settings (epochs: 1 -> 2" in capsys.readouterr().err
    assert _files(out / "runs") == before


def test_report_only_rebuilds_from_the_runs(finished_sweep, capsys):
    out, _ = finished_sweep
    before = json.loads((out / "sweep.json").read_text())
    runs = _files(out / "runs")
    for name in ("sweep.json", "sweep.md", "sweep.png"):
        (out / name).unlink()
    assert main(["sweep", "--report-only", "--out", str(out)]) == 0
    after = json.loads((out / "sweep.json").read_text())
    assert after["arms"] == before["arms"] and after["comparisons"] == before["comparisons"]
    assert (out / "sweep.md").is_file() and (out / "sweep.png").is_file() and _files(out / "runs") == runs
    assert main(["sweep", "--report-only", "--out", str(out / "nothing")]) == 2
    assert "not a sweep folder" in capsys.readouterr().err
    # the folder named by the sweep's config file (as `make layer-sweep` uses them)
    (out / "sweep.md").unlink()
    config = out.parent / "spec.yaml"
    config.write_text(f"out: {out}\n", encoding="utf-8")
    assert main(["sweep", "--report-only", "--config", str(config)]) == 0
    assert (out / "sweep.md").is_file()


# ---------------------------------------------------------------------------------------------------------------
# locks and several processes


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_claim_release_and_stale_takeover(tmp_path):
    import socket

    path = tmp_path / "locks" / "a.seed0.lock"
    lock = claim_lock(path, what="a/seed0")
    assert lock is not None and read_lock(path)["pid"] == os.getpid() and read_lock(path)["run"] == "a/seed0"
    assert claim_lock(path) is None  # held by a live process (this one)
    lock.release()
    assert not path.exists()
    # a lock of a dead process on this host is taken over
    path.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "token": "x"}))
    taken = claim_lock(path)
    assert taken is not None and read_lock(path)["token"] == taken.token
    # release only removes one's own lock: a lock taken over by another holder stays
    path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": "other"}))
    taken.release()
    assert read_lock(path)["token"] == "other"
    # another host's lock: live while its heartbeat (mtime) is fresh, stale after stale_after
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "y"}))
    assert claim_lock(path, stale_after=60) is None
    old = time.time() - 120
    os.utime(path, (old, old))
    assert claim_lock(path, stale_after=60) is not None
    # the heartbeat keeps a held lock fresh
    hb = tmp_path / "hb.lock"
    held = claim_lock(hb)
    os.utime(hb, (old, old))
    held.start_heartbeat(interval=0.05)
    time.sleep(0.5)
    assert time.time() - hb.stat().st_mtime < 5
    # a failed touch (a network file system hiccup) does not end the heartbeat
    real_utime, failures = os.utime, []

    def flaky_utime(path, *args, **kwargs):
        if len(failures) < 3:
            failures.append(path)
            raise OSError("stale file handle")
        return real_utime(path, *args, **kwargs)

    os.utime(hb, (old, old))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "utime", flaky_utime)
        time.sleep(0.6)
    assert len(failures) == 3 and time.time() - hb.stat().st_mtime < 5
    held.release()
    assert not hb.exists()


def test_a_second_process_skips_runs_held_by_another(medmnist_root, tiny_llm, tmp_path, capsys):
    """This test holds one run's lock (another worker); a real subprocess sweeps the same folder."""
    import socket

    out = tmp_path / "sweep"
    args = _sweep_args(medmnist_root, tiny_llm, out, layers="first", controls="baseline")
    name = Path(tiny_llm).name
    held = claim_lock(out / "locks" / f"{name}-L0-residual.seed0.lock", what="test worker")
    # a run whose worker died: its stale lock is taken over
    (out / "locks" / "baseline.seed1.lock").write_text(
        json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "token": "dead"})
    )
    proc = subprocess.run(
        [sys.executable, "-m", "rllm_zoo", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    other = json.loads(proc.stdout)
    assert other["trained"] == 3 and other["busy"] == 1 and not other["complete"]
    assert f"{name}-L0-residual/seed0: busy (pid {os.getpid()}" in proc.stderr
    assert not (out / "runs" / f"{name}-L0-residual" / "seed0").exists()  # not touched
    assert (out / "runs" / "baseline" / "seed1" / "metrics.json").is_file()
    report = json.loads((out / "sweep.json").read_text())
    assert report["status"]["running"] == [f"{name}-L0-residual/seed0"]
    assert "IN PROGRESS" in (out / "sweep.md").read_text()
    # this worker now does its run, and only that one
    before = _files(out / "runs")
    held.release()
    capsys.readouterr()
    assert main(args) == 0
    mine = json.loads(capsys.readouterr().out)
    assert mine["trained"] == 1 and mine["finished_before"] == 3 and mine["complete"]
    after = _files(out / "runs")
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(k.startswith(f"{name}-L0-residual/seed0/") for k in set(after) - set(before))


@pytest.mark.slow
def test_two_concurrent_processes_split_the_grid(medmnist_root, tiny_llm, tmp_path):
    out = tmp_path / "sweep"
    args = _sweep_args(medmnist_root, tiny_llm, out, seeds="0,1,2", **{"max-train-batches": "4"})
    cmd = [sys.executable, "-m", "rllm_zoo", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ]
    time.sleep(2)
    procs.append(
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    )
    results = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-2000:] for r in results]
    trained = [
        {ln.split("] ")[1].split(":")[0] for ln in err.splitlines() if ln.endswith(": training")}
        for _, err in results
    ]
    assert trained[0] and trained[1]  # both worked on the grid ...
    assert not trained[0] & trained[1]  # ... and no run was trained twice
    assert len(trained[0] | trained[1]) == 15
    finished = [
        {
            ln.split("] ")[1].split(":")[0]
            for ln in err.splitlines()
            if ": done in " in ln and ", val AUC " in ln
        }
        for _, err in results
    ]
    assert finished == trained  # each process says when each of its runs ended, with its val score
    report = json.loads((out / "sweep.json").read_text())
    assert report["status"]["complete"] and all(a["n"] == 3 for a in report["arms"])


@pytest.mark.slow
def test_sweep_under_torchrun(medmnist_root, tiny_llm, tmp_path):
    out = tmp_path / "sweep"
    args = _sweep_args(medmnist_root, tiny_llm, out, layers="first", seeds="0", controls="baseline")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "rllm_zoo",
        *args,
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = load_plan(out)
    runs = collect_runs(out, plan)
    assert all(len(rs) == 1 for rs in runs.values())
    again = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert again.returncode == 0 and '"trained": 0' in again.stdout
