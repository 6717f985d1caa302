"""Dataset recipes: the tuned defaults of a MedMNIST set, under the YAML config and the CLI flags."""

from __future__ import annotations

import dataclasses

import pytest

from rllm_zoo.training import TrainConfig, load_config
from rllm_zoo.training.config import recipe_names, recipe_values

DEFAULTS = TrainConfig()


def test_shipped_recipes_are_valid_configs():
    assert {"retinamnist", "adrenalmnist3d"} <= set(recipe_names())
    for name in recipe_names():
        values = recipe_values(name, None)
        assert values, name
        cfg = load_config(None, {"flag": name})
        for key, value in values.items():
            assert getattr(cfg, key) == value, (name, key)
        assert cfg.recipe == "auto"


def test_precedence_recipe_then_yaml_then_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 7\nlr: 0.002\naug: strong\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"recipe: {recipe}\nflag: dermamnist\nlr: 0.003\n")
    cfg = load_config(config, {"aug": "none"})
    assert (cfg.epochs, cfg.lr, cfg.aug) == (7, 0.003, "none")  # recipe < YAML < flags
    assert load_config(config, {"recipe": "none"}).epochs == DEFAULTS.epochs  # turned off


def test_auto_without_a_recipe_keeps_the_defaults():
    cfg = load_config(None, {"flag": "dermamnist"})
    same = {f.name for f in dataclasses.fields(TrainConfig)} - {"flag"}
    assert all(getattr(cfg, k) == getattr(DEFAULTS, k) for k in same)


def test_bad_recipes_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="neither a shipped recipe"):
        load_config(None, {"flag": "retinamnist", "recipe": "no-such-recipe"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nbanana: 1\n")
    with pytest.raises(ValueError, match="banana cannot be set by a recipe"):
        load_config(None, {"recipe": str(bad)})
