"""The house's layers: each part of rllm_zoo imports only from its own layer or the ones below it."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "rllm_zoo"

#: bottom to top; a part may import from its own layer and any layer before it
LAYERS: list[set[str]] = [
    {"atomic", "progress", "hf_cache", "environment", "booster"},  # torch only
    {"llm"},  # LLM sources
    {"plug", "timm_boost", "timm_vit", "monai", "cam", "flops"},  # model families
    {"data"},
    {"hub", "bundles"},
    {"training"},
    {"predict", "cli", "__main__", "__init__"},
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def _imported_parts(path: Path) -> set[tuple[str, int]]:
    """(part, line) of every rllm_zoo import in ``path``, at module level or inside functions."""
    pkg = list(path.relative_to(PACKAGE).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
            target = base + (node.module.split(".") if node.module else [])
            names = target[:1] if target else [a.name for a in node.names]
        elif node.module and node.module.startswith("rllm_zoo."):
            names = [node.module.split(".")[1]]
        else:
            continue
        found |= {(n, node.lineno) for n in names}
    return found


def test_every_part_has_a_layer():
    parts = {_part(p) for p in PACKAGE.rglob("*.py")}
    assert parts <= set(RANK), (
        f"give these parts a layer in tests/test_layers.py: {sorted(parts - set(RANK))}"
    )


def test_imports_only_go_down():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _part(path)
        for other, line in _imported_parts(path):
            if other != me and other in RANK and RANK[other] > RANK[me]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({me}) imports {other}")
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_the_check_can_fail(tmp_path, monkeypatch):
    """A planted upward import is found (hub -> training, the circle this test guards against)."""
    fake = tmp_path / "rllm_zoo"
    (fake / "hub").mkdir(parents=True)
    (fake / "hub" / "push.py").write_text("def f():\n    from ..training.package import load_run\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", fake)
    found = _imported_parts(fake / "hub" / "push.py")
    assert ("training", 2) in found and RANK["training"] > RANK[_part(fake / "hub" / "push.py")]
