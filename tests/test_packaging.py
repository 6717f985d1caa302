"""A wheel built from pyproject.toml carries everything the package reads at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_wheel_contents_and_import_outside_the_checkout(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("rllm_zoo-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "rllm_zoo").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sources <= names, sorted(sources - names)
    cards = {f"rllm_zoo/hub_cards/{p.name}" for p in (ROOT / "hub_cards").glob("*.md")}
    assert cards and cards <= names, sorted(cards - names)  # top-level hub_cards/ ships as package data
    assert any(n.endswith("entry_points.txt") for n in names)
    # importable from the wheel alone, from a folder that is not the checkout
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import rllm_zoo, timm; from rllm_zoo.hub.cards import template_path; print(rllm_zoo.__file__); "
        "print(len(timm.list_models('rllm_*'))); print(template_path())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(site)) and int(lines[1]) >= 8 and lines[2].startswith(str(site))
