"""Where a result was measured: software versions and the machine, recorded next to the numbers.

Every training run writes this into its ``metrics.json`` (key ``environment``, taken when
training starts; a resumed run adds ``resumed_in``), and ``docs/results.md``, the sweep report and
the model cards print it from there, so a number travels with the torch build, device, thread
count and code version that produced it.

Example:
    >>> env = environment()
    >>> env["python"].count(".") == 2 and env["cpus"] >= 1
    True
    >>> one = {"torch": "2.13.0+cpu", "device": "cpu", "threads": 1, "cpus": 2, "cpu": "AMD EPYC",
    ...        "rllm_zoo": "0.1.0", "git_commit": "2e6f60343bb1", "git_dirty": False}
    >>> describe(one)
    'torch 2.13.0+cpu on cpu, 1 thread of 2 CPUs (AMD EPYC)'
    >>> print(describe_runs([{"environment": one}, {"environment": one}, {}]))  # doctest: +NORMALIZE_WHITESPACE
    Trained with torch 2.13.0+cpu on cpu, 1 thread of 2 CPUs (AMD EPYC) (2 runs). Code: rllm_zoo 0.1.0
    at 2e6f60343bb1 (2 runs). Not recorded for 1 run (finished before runs recorded their environment).
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["describe", "describe_runs", "environment"]

#: the packages whose versions change what a run computes
PACKAGES = ("rllm_zoo", "torch", "timm", "monai", "transformers", "numpy")


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _ram_bytes() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def _git(source: Path) -> tuple[str | None, bool | None]:
    """(commit, uncommitted changes to the package) of a source checkout; (None, None) elsewhere."""
    if not (source.parent / ".git").exists():  # a wheel, even one inside somebody else's repository
        return None, None
    try:
        run = dict(cwd=source, capture_output=True, text=True, timeout=10, check=True)
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], **run).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(dirty)


def environment(device: Any = None, world_size: int = 1) -> dict[str, Any]:
    """Versions, machine and thread count of this process, as plain JSON values.

    ``device`` (a ``torch.device`` or string) is recorded as given, with the GPU's name for CUDA;
    ``world_size`` is the number of processes training together (DDP), each on its own device.
    ``git_commit`` / ``git_dirty`` describe rllm_zoo's own source when it runs from a git checkout
    (an editable install) and are ``None`` for an installed wheel.
    """
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    torch = sys.modules.get("torch")
    if torch is not None:
        versions["torch"] = str(torch.__version__)  # the imported build (e.g. +cpu), not only the dist
    dev = None if device is None else str(device)
    if torch is not None and dev is not None and dev.startswith("cuda") and torch.cuda.is_available():
        dev = f"{dev} ({torch.cuda.get_device_name(torch.device(dev))})"
    commit, dirty = _git(Path(__file__).resolve().parent)
    return {
        **versions,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads() if torch is not None else None,
        "ram_bytes": _ram_bytes(),
        "device": dev,
        "world_size": world_size,
    }


def describe(env: dict[str, Any]) -> str:
    """One line for a report: torch build, device(s), threads and CPU."""
    where = f"torch {env.get('torch')} on {env.get('device') or 'an unrecorded device'}"
    if (env.get("world_size") or 1) > 1:
        where += f" x {env['world_size']} processes"
    threads = env.get("threads")
    if threads:
        where += f", {threads} thread{'s' if threads != 1 else ''}"
        if env.get("cpus"):
            where += f" of {env['cpus']} CPUs"
        if env.get("cpu"):
            where += f" ({env['cpu']})"
    return where


def _code(env: dict[str, Any]) -> str:
    version = f"rllm_zoo {env.get('rllm_zoo') or '(version unknown)'}"
    if env.get("git_commit"):
        version += f" at {env['git_commit']}" + (" with uncommitted changes" if env.get("git_dirty") else "")
    return version


def _counted(keys: list[str]) -> str:
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return "; ".join(
        f"{key} ({k} run{'s' if k != 1 else ''})" for key, k in sorted(counts.items(), key=lambda kv: -kv[1])
    )


def describe_runs(runs: list[dict[str, Any]]) -> str:
    """One or two sentences on where and with which code a set of runs (their ``metrics.json``) trained.

    Runs are grouped by machine line and, separately, by code version (a sweep resumed over
    several sessions names each commit it ran with). Empty for no runs.
    """
    envs = [r["environment"] for r in runs if r.get("environment")]
    missing = len(runs) - len(envs)
    if not runs:
        return ""
    if not envs:
        return "Training environment not recorded (the runs finished before runs recorded it)."
    text = (
        f"Trained with {_counted([describe(e) for e in envs])}. Code: {_counted([_code(e) for e in envs])}."
    )
    if missing:
        text += (
            f" Not recorded for {missing} run{'s' if missing != 1 else ''} (finished before runs recorded "
            "their environment)."
        )
    return text
