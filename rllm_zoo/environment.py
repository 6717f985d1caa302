"""Where a result was measured: software versions and the machine, recorded next to the numbers.

Every training run writes this into its ``metrics.json`` (key ``environment``), and the reports
(``docs/results.md``, the sweep report, the benchmarks) print it from there, so a number always
travels with the torch build, thread count and code version that produced it.

Example:
    >>> env = environment()
    >>> env["python"].count(".") == 2 and env["cpus"] >= 1
    True
    >>> one = {"torch": "2.13.0+cpu", "device": "cpu", "threads": 1, "cpus": 2, "cpu": "AMD EPYC"}
    >>> describe(one)
    'torch 2.13.0+cpu on cpu, 1 thread of 2 CPUs (AMD EPYC)'
    >>> describe_runs([{"environment": one}, {"environment": one}, {}])
    'Trained with torch 2.13.0+cpu on cpu, 1 thread of 2 CPUs (AMD EPYC) (2 runs); not recorded for 1 run (finished before runs recorded their environment).'
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


def environment(device: Any = None) -> dict[str, Any]:
    """Versions, machine and thread count of this process, as plain JSON values.

    ``device`` (a ``torch.device`` or string) is recorded as given, with the GPU's name for CUDA.
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
        versions["torch"] = torch.__version__  # the imported build (e.g. +cpu), not only the dist
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
    }


def describe(env: dict[str, Any]) -> str:
    """One line for a report: torch build, device, threads and CPU."""
    threads = env.get("threads")
    where = f"torch {env.get('torch')} on {env.get('device') or 'cpu'}"
    if threads:
        where += f", {threads} thread{'s' if threads != 1 else ''} of {env.get('cpus')} CPUs"
        if env.get("cpu"):
            where += f" ({env['cpu']})"
    return where


def describe_runs(runs: list[dict[str, Any]]) -> str:
    """One sentence on where a set of runs (their ``metrics.json`` contents) was trained."""
    lines: dict[str, int] = {}
    for r in runs:
        if r.get("environment"):
            line = describe(r["environment"])
            lines[line] = lines.get(line, 0) + 1

    def n(k: int) -> str:
        return f"{k} run{'s' if k != 1 else ''}"

    missing = len(runs) - sum(lines.values())
    parts = [f"{line} ({n(k)})" for line, k in sorted(lines.items(), key=lambda kv: -kv[1])]
    text = f"Trained with {'; '.join(parts)}" if parts else "Training environment not recorded"
    if missing and parts:
        text += f"; not recorded for {n(missing)}"
    if missing:
        text += " (finished before runs recorded their environment)"
    return text + "."
