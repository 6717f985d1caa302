"""The environment record of a run, and the sentence the reports print from it."""

from __future__ import annotations

import subprocess
import sys

from rllm_zoo.environment import describe, describe_runs, environment


def test_environment_is_plain_json_of_this_process():
    import json

    import torch

    env = environment(torch.device("cpu"))
    assert json.loads(json.dumps(env)) == env
    # plain types only: a checkpoint that carries it still loads with weights_only=True
    assert all(type(v) in (str, int, float, bool, type(None)) for v in env.values()), env
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    assert env["device"] == "cpu" and env["cpus"] >= 1
    assert "thread" in describe(env) and env["torch"] in describe(env)


def test_git_commit_only_for_a_source_checkout(tmp_path):
    # a copy of the package outside any repository (like a wheel) records no commit
    import shutil

    import rllm_zoo.environment as mod

    pkg = tmp_path / "site" / "rllm_zoo"
    pkg.mkdir(parents=True)
    shutil.copy(mod.__file__, pkg / "environment.py")
    code = "import json, environment; print(json.dumps(environment.environment()))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=pkg, capture_output=True, text=True, check=True
    ).stdout
    assert '"git_commit": null' in out and '"git_dirty": null' in out


def test_describe_runs_counts_and_names_unrecorded_runs():
    a = {
        "torch": "2.0",
        "device": "cpu",
        "threads": 1,
        "cpus": 2,
        "cpu": "X",
        "rllm_zoo": "0.1",
        "git_commit": "c1",
    }
    b = {**a, "threads": 2, "git_commit": "c2", "git_dirty": True}
    text = describe_runs([{"environment": a}, {"environment": b}, {"environment": a}, {}])
    assert text.startswith("Trained with torch 2.0 on cpu, 1 thread of 2 CPUs (X) (2 runs); torch 2.0")
    assert (
        "2 threads of 2 CPUs (X) (1 run). Code: rllm_zoo 0.1 at c1 (2 runs); rllm_zoo 0.1 at c2 with" in text
    )
    assert text.endswith("Not recorded for 1 run (finished before runs recorded their environment).")
    assert describe_runs([{}]).startswith("Training environment not recorded")
    assert describe_runs([]) == ""
    ddp = {"torch": "2.0", "device": "cuda:0 (NVIDIA H200)", "world_size": 8, "threads": 4}
    assert describe(ddp) == "torch 2.0 on cuda:0 (NVIDIA H200) x 8 processes, 4 threads"
    assert describe({"torch": "2.0"}) == "torch 2.0 on an unrecorded device"
