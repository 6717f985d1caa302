"""The README's runnable snippets run, and the README's commands are what CI calls."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_opens_with_the_two_commands_and_ci_calls_the_test_one():
    first = re.search(r"```bash\n(.*?)```", README, re.S).group(1).splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_ten_line_booster_example_runs(capsys):
    block = _python_blocks()[0]
    assert len([ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]) <= 10
    exec(compile(block, "README.md", "exec"), {})
    assert "llama 576 29 apache-2.0" in capsys.readouterr().out


@pytest.mark.slow
def test_publish_snippet_runs_against_a_hub(local_hub):
    import torch

    block = next(b for b in _python_blocks() if "push_to_hub" in b)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    x = torch.rand(1, 3, 28, 28)
    model = scope["model"].eval()
    assert torch.equal(scope["again"].eval()(x), model(x)) and torch.equal(scope["same"].eval()(x), model(x))
    assert scope["pushed"].weights == "delta"
