"""Every usage example in the package's docstrings runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import rllm_zoo

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(rllm_zoo.__path__, prefix="rllm_zoo.")
    if not m.name.endswith("__main__")
)


def test_every_module_is_collected():
    assert {"rllm_zoo.booster", "rllm_zoo.timm_vit", "rllm_zoo.monai.vit", "rllm_zoo.hub.zoo"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} examples in {module} failed (see above)"
    )
