"""The zoo's pretrained tags: chosen on val, released to zoo/, published in one go, loaded by tag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import yaml

import rllm_zoo
from rllm_zoo.hub import load_from_hub
from rllm_zoo.hub.pull import load_from_folder
from rllm_zoo.hub.zoo import ZOO_ARMS, ZOO_MODELS, publish_zoo, select_best_seed, zoo_name

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"


def _write_metrics(root: Path, seed: int, val_auc: float, test_auc: float) -> None:
    d = root / "retinamnist" / "r_llm" / f"seed{seed}"
    d.mkdir(parents=True)
    m = {
        "seed": seed,
        "select_metric": "val_auc",
        "val": {"auc": val_auc, "acc": 0.5},
        "test": {"auc": test_auc},
    }
    (d / "metrics.json").write_text(json.dumps(m))


def test_best_seed_is_chosen_on_validation_only(tmp_path):
    _write_metrics(tmp_path, 0, val_auc=0.70, test_auc=0.99)
    _write_metrics(tmp_path, 1, val_auc=0.80, test_auc=0.10)
    _write_metrics(tmp_path, 2, val_auc=0.80, test_auc=0.50)
    seed, metrics = select_best_seed(tmp_path, "retinamnist", "r_llm")
    assert seed == 1 and metrics["val"]["auc"] == 0.80  # best val, ties to the lower seed, test ignored
    with pytest.raises(FileNotFoundError, match=r"results_table\.py --only retinamnist"):
        select_best_seed(tmp_path, "retinamnist", "mlp")


def test_every_zoo_member_is_committed_with_its_card():
    assert ZOO.is_dir(), "zoo/ is missing: run python benchmarks/zoo_release.py"
    index = {row["name"]: row for row in json.loads((ZOO / "index.json").read_text())}
    expected = {zoo_name(flag, arm) for flag in ZOO_MODELS for arm in ZOO_ARMS}
    assert set(index) == expected
    for name in expected:
        folder = ZOO / name
        card = (folder / "README.md").read_text()
        meta = yaml.safe_load(card.split("---")[1])
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["seed"] == index[name]["seed"]
        value = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
        assert value["accuracy"] == round(100 * metrics["test"]["acc"], 2)
        assert (folder / "curves.png").is_file() and (folder / "roc.png").is_file()
        assert "![curves](curves.png)" in card


@pytest.mark.slow
def test_publish_all_then_load_by_tag(local_hub):
    rows = publish_zoo(ZOO, progress=False)
    assert len(rows) == len(ZOO_MODELS) * len(ZOO_ARMS)
    for row in rows:
        # SmolLM2 is Apache-2.0 and the other arms ship no LLM weights: everything goes out self-contained
        assert row["weights"] == "full" and row["delta_bytes"] <= row["full_bytes"]
    x2 = torch.rand(2, 3, 28, 28)
    for arm in ZOO_ARMS:
        name = zoo_name("retinamnist", arm)
        tagged = timm.create_model(
            name, pretrained=True
        ).eval()  # registered tag -> rllm-zoo/<name> on HF_ENDPOINT
        local = load_from_folder(ZOO / name).eval()
        with torch.no_grad():
            torch.testing.assert_close(tagged(x2), local(x2), rtol=0, atol=0)
        assert tagged.booster.variant == ("mlp" if arm == "mlp" else "residual")
    name = zoo_name("adrenalmnist3d", "r_llm")
    x3 = torch.rand(1, 1, 28, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(
            load_from_hub(f"rllm-zoo/{name}")(x3), load_from_folder(ZOO / name)(x3), rtol=0, atol=0
        )
    assert rllm_zoo.__version__
