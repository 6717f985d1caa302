"""Push -> pull through the local Hub server: timm repos and MONAI bundles, full and delta weights."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml

import rllm_zoo
from rllm_zoo.hub import HubError, load_from_hub, push_to_hub
from rllm_zoo.llm import LLMChecksumError
from rllm_zoo.monai import create_network

METRICS = {
    "select_metric": "val_auc",
    "selected_epoch": 3,
    "val": {"acc": 0.55, "auc": 0.75},
    "test": {"acc": 0.5, "auc": 0.7},
}


def tiny_2d(llm: str = "smollm2", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("rllm_vit_micro_patch4_28", num_classes=5, depth=1, llm=llm).eval()


def tiny_3d(llm: str = "smollm2", seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_network("rllm_vit3d_small", num_classes=2, num_layers=1, llm=llm, **kw).eval()


X2 = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
X3 = torch.rand(2, 1, 28, 28, 28, generator=torch.Generator().manual_seed(1))


def incomplete_files(root: Path) -> list[Path]:
    return list(root.rglob("*.incomplete"))


@pytest.mark.parametrize("weights", ["full", "delta"])
def test_timm_round_trip(local_hub, weights):
    model = tiny_2d()
    repo = local_hub.new_repo_id("retina")
    res = push_to_hub(model, repo, weights=weights, dataset_flag="retinamnist", metrics=METRICS)
    assert res.weights == weights and res.commit
    # timm's own hf-hub path, after `import rllm_zoo`
    again = timm.create_model(f"hf-hub:{repo}", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(X2), model(X2), rtol=0, atol=0)
    assert again.booster.block.info.sha256 == model.booster.block.info.sha256
    # delta repos re-read the layer (no llm_config), full repos rebuild it from the config
    assert ("rebuilt_from_config" in again.booster.block.info.extra) == (weights == "full")
    assert torch.equal(load_from_hub(repo)(X2), again(X2))


def test_delta_is_smaller_and_auto_follows_the_licence(local_hub):
    model = tiny_2d()
    full = push_to_hub(model, local_hub.new_repo_id("a"), weights="full")
    delta = push_to_hub(model, local_hub.new_repo_id("b"), weights="delta")
    auto = push_to_hub(model, local_hub.new_repo_id("c"))
    block_bytes = sum(t.numel() * t.element_size() for t in model.booster.block.state_dict().values())
    assert full.weights_bytes - delta.weights_bytes >= block_bytes
    assert auto.weights == "full"  # SmolLM2 is Apache-2.0: redistributable


@pytest.mark.fault
def test_checksum_mismatch_is_refused(local_hub, tmp_path):
    model = tiny_2d()
    repo = local_hub.new_repo_id("tampered")
    push_to_hub(model, repo, weights="delta")
    from huggingface_hub import hf_hub_download

    cfg = json.loads(Path(hf_hub_download(repo, "config.json")).read_text())
    cfg["model_args"]["llm_sha256"] = "0" * 64
    local_hub.add_files(repo, {"config.json": json.dumps(cfg).encode()})
    with pytest.raises(LLMChecksumError, match="hashes to sha256"):
        timm.create_model(f"hf-hub:{repo}", pretrained=True)


def test_revision_pinning(local_hub):
    repo = local_hub.new_repo_id("pinned")
    first = push_to_hub(tiny_2d(seed=0), repo, weights="delta")
    second = push_to_hub(tiny_2d(seed=1), repo, weights="delta")
    a = timm.create_model(f"hf-hub:{repo}@{first.commit}", pretrained=True).eval()
    b = timm.create_model(f"hf-hub:{repo}", pretrained=True).eval()
    assert torch.equal(a(X2), tiny_2d(seed=0)(X2)) and torch.equal(b(X2), tiny_2d(seed=1)(X2))
    assert torch.equal(load_from_hub(repo, revision=second.commit)(X2), b(X2))


def test_offline_after_one_pull(local_hub):
    repo = local_hub.new_repo_id("cached")
    model = tiny_2d()
    push_to_hub(model, repo, weights="full")
    online = load_from_hub(repo)
    timm.create_model(f"hf-hub:{repo}", pretrained=True)
    local_hub.set_offline()
    local_hub.reset_stats()
    assert torch.equal(load_from_hub(repo)(X2), online(X2))
    assert torch.equal(timm.create_model(f"hf-hub:{repo}", pretrained=True).eval()(X2), online(X2))
    assert local_hub.requests == []
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        load_from_hub(local_hub.new_repo_id("never-pulled"))


@pytest.mark.parametrize("weights", ["full", "delta"])
def test_monai_bundle_round_trip(local_hub, tmp_path, weights):
    import monai.bundle

    net = tiny_3d()
    repo = local_hub.new_repo_id("adrenal")
    res = push_to_hub(net, repo, weights=weights, dataset_flag="adrenalmnist3d", metrics=METRICS)
    assert res.tag == rllm_zoo.bundles.BUNDLE_VERSION
    name = repo.split("/")[1]
    # MONAI's own download + load (latest version = the tag we pushed)
    monai.bundle.download(name=name, source="huggingface_hub", repo=repo, bundle_dir=tmp_path)
    loaded = monai.bundle.load(
        name=name,
        source="huggingface_hub",
        repo=repo,
        bundle_dir=tmp_path,
        workflow_type="inference",
        device="cpu",
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(X3), net(X3), rtol=0, atol=0)
        torch.testing.assert_close(load_from_hub(repo)(X3), net(X3), rtol=0, atol=0)
    state = torch.load(tmp_path / name / "models" / "model.pt", weights_only=True)
    assert any(k.startswith("booster.block.") for k in state) == (weights == "full")
    meta = json.loads((tmp_path / name / "configs" / "metadata.json").read_text())
    assert meta["eval_metrics"] == {"test_acc": 0.5, "test_auc": 0.7}


def test_bundle_passes_monai_verifiers(local_hub, tmp_path):
    schema = Path(__file__).resolve().parents[2] / "shared" / "monai" / "meta_schema_20240725.json"
    if not schema.is_file():
        pytest.skip(f"MONAI schema not found at {schema}")
    from monai.bundle import verify_metadata

    net = tiny_3d(llm="random:smollm2")
    folder = tmp_path / "bundle"
    rllm_zoo.save_pretrained(net, folder, dataset_flag="adrenalmnist3d", metrics=METRICS)
    verify_metadata(
        meta_file=str(folder / "configs" / "metadata.json"), filepath=str(schema), create_dir=False
    )


def test_mlp_control_and_baseline_round_trip(local_hub):
    for booster in ("mlp", False):
        torch.manual_seed(0)
        model = timm.create_model("rllm_vit_micro_patch4_28", num_classes=5, depth=1, booster=booster).eval()
        repo = local_hub.new_repo_id(f"b-{booster}")
        push_to_hub(model, repo)
        again = load_from_hub(repo)
        assert torch.equal(again(X2), model(X2))


# ------------------------------------------------------------------ errors


@pytest.mark.fault
def test_missing_repo_revision_and_pickle_only(local_hub):
    with pytest.raises(HubError, match="no such repo"):
        load_from_hub(local_hub.new_repo_id("absent"))
    repo = local_hub.new_repo_id("r")
    push_to_hub(tiny_2d(), repo, weights="delta")
    with pytest.raises(HubError, match="revision does not exist"):
        load_from_hub(repo, revision="v9")
    # a repo that only has a pickle checkpoint is refused without unpickling it
    pkl = local_hub.new_repo_id("pickled")
    from huggingface_hub import hf_hub_download

    cfg = Path(hf_hub_download(repo, "config.json")).read_bytes()
    local_hub.add_files(pkl, {"config.json": cfg, "pytorch_model.bin": b"\x80\x04not really a pickle"})
    with pytest.raises(HubError, match="safetensors only"):
        load_from_hub(pkl)
    with pytest.raises(RuntimeError, match="safetensors only"):
        timm.create_model(f"hf-hub:{pkl}", pretrained=True)


@pytest.mark.fault
def test_server_error_leaves_nothing_partial(local_hub, tmp_path):
    repo = local_hub.new_repo_id("flaky")
    push_to_hub(tiny_2d(), repo, weights="full")
    local_hub.inject("status", "model.safetensors", method="GET", status=500, count=None)
    with pytest.raises(HubError, match="HTTP 500"):
        load_from_hub(repo)
    local_hub.clear_faults()
    local_hub.inject("drop", "model.safetensors", method="GET", after_bytes=100_000, reset=True)
    with pytest.raises(HubError):
        load_from_hub(repo)
    assert incomplete_files(Path(local_hub.hf_home)) == []
    assert load_from_hub(repo) is not None  # and the next try succeeds


@pytest.mark.fault
def test_timeout_is_a_clear_error(local_hub, monkeypatch):
    from huggingface_hub import constants

    repo = local_hub.new_repo_id("slow")
    push_to_hub(tiny_2d(), repo, weights="delta")
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 0.5)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.5)
    local_hub.inject("delay", "model.safetensors", method="GET", seconds=3, after_bytes=1000, count=None)
    with pytest.raises(HubError, match=r"did not answer|could not be reached"):
        load_from_hub(repo)
    assert incomplete_files(Path(local_hub.hf_home)) == []


def test_push_rejects_bad_input(local_hub, tmp_path):
    with pytest.raises(ValueError, match="org/name"):
        push_to_hub(tiny_2d(), "no-slash")
    with pytest.raises(TypeError, match="not an rllm_zoo model"):
        push_to_hub(torch.nn.Linear(2, 2), local_hub.new_repo_id("x"))
    with pytest.raises(ValueError, match="weights must be one of"):
        push_to_hub(tiny_2d(), local_hub.new_repo_id("x"), weights="half")
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="dataset_flag"):
        rllm_zoo.save_pretrained(tiny_3d(llm="random:smollm2"), out)
    assert not out.exists() and not list(tmp_path.glob(".never*"))


# ------------------------------------------------------------------ model cards


def _card_parts(text: str) -> tuple[dict, list[str]]:
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert m, "card has no YAML header"
    return yaml.safe_load(m.group(1)), re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["timm", "monai"])
def test_card_metadata_and_snippets_run(local_hub, tmp_path, family):
    from huggingface_hub import ModelCard, hf_hub_download

    model = tiny_2d() if family == "timm" else tiny_3d()
    repo = local_hub.new_repo_id(f"card-{family}")
    flag = "retinamnist" if family == "timm" else "adrenalmnist3d"
    push_to_hub(model, repo, dataset_flag=flag, metrics=METRICS)
    text = Path(hf_hub_download(repo, "README.md")).read_text()
    meta, snippets = _card_parts(text)
    assert meta["library_name"] == family and "r-llm" in meta["tags"] and meta["license"] == "apache-2.0"
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    results = meta["model-index"][0]["results"][0]
    assert {m["type"]: m["value"] for m in results["metrics"]} == {"accuracy": 50.0, "roc_auc": 70.0}
    assert ModelCard(text).data.eval_results[0].dataset_config == flag
    for needle in ("Not for clinical use", "Apache-2.0", "@inproceedings{lai2024rllm", "layer 29 of 30"):
        assert needle.lower() in text.lower(), needle
    assert snippets, "no python snippets in the card"
    for i, code in enumerate(snippets):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env={**__import__("os").environ, **local_hub.env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"snippet {i} failed:\n{code}\n{proc.stderr[-3000:]}"
        assert "tensor(" in proc.stdout


def test_card_without_metrics_has_no_model_index(tmp_path):
    folder = tmp_path / "m"
    rllm_zoo.save_pretrained(tiny_2d(llm="random:smollm2"), folder)
    meta, _ = _card_parts((folder / "README.md").read_text())
    assert "model-index" not in meta and "base_model" not in meta


@pytest.mark.slow
def test_publish_and_reuse_example_runs_against_the_endpoint(local_hub, medmnist_root, tmp_path):
    import os

    repo = local_hub.new_repo_id("example")
    script = Path(__file__).resolve().parents[1] / "examples" / "publish_and_reuse.py"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "--repo-id",
            repo,
            "--data-root",
            str(medmnist_root),
            "--epochs",
            "1",
            "--model-kwargs",
            '{"depth": 1}',
            "--out",
            str(tmp_path / "run"),
            "--weights",
            "delta",
        ],
        cwd=tmp_path,
        env={**os.environ, **local_hub.env, "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "outputs identical = True" in proc.stdout and "pushed delta weights" in proc.stdout
    assert local_hub.requests_matching(f"/api/models/{repo}/commit/", "POST")


class _NotATensor:
    """Stands for arbitrary code in a pickle: torch's weights_only unpickler must refuse it."""


@pytest.mark.fault
def test_bundle_with_code_in_its_pickle_is_refused(local_hub, tmp_path):
    import pickle

    net = tiny_3d(llm="random:smollm2")
    folder = tmp_path / "bundle"
    rllm_zoo.save_pretrained(net, folder, dataset_flag="adrenalmnist3d")
    (folder / "models" / "model.pt").write_bytes(pickle.dumps({"x": _NotATensor()}))
    repo = local_hub.new_repo_id("evil-bundle")
    local_hub.add_files(
        repo, {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    )
    with pytest.raises(HubError, match="never unpickles code"):
        load_from_hub(repo)


def test_bundle_offline_after_one_pull(local_hub):
    net = tiny_3d(llm="random:smollm2")
    repo = local_hub.new_repo_id("adrenal-offline")
    push_to_hub(net, repo, dataset_flag="adrenalmnist3d")
    online = load_from_hub(repo)
    local_hub.set_offline()
    local_hub.reset_stats()
    assert torch.equal(load_from_hub(repo)(X3), online(X3)) and local_hub.requests == []


def test_cli_push_and_pull(local_hub, tmp_path, capsys):
    from rllm_zoo.cli import main

    folder = tmp_path / "pkg"
    model = tiny_2d()
    rllm_zoo.save_pretrained(
        model, folder, dataset_flag="retinamnist", metrics={**METRICS, "flag": "retinamnist"}
    )
    repo = local_hub.new_repo_id("cli")
    assert main(["push", str(folder), "--repo-id", repo, "--weights", "delta"]) == 0
    pushed = json.loads(capsys.readouterr().out)
    assert pushed["weights"] == "delta" and pushed["repo_id"] == repo
    out = tmp_path / "pulled"
    assert main(["pull", f"{repo}@{pushed['commit']}", "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["llm"]["sha256"] == model.booster.block.info.sha256
    again = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert torch.equal(again(X2), model(X2))
    assert main(["pull", local_hub.new_repo_id("missing")]) == 2
    assert "no such repo" in capsys.readouterr().err
    assert main(["push", str(tmp_path / "nothing"), "--repo-id", repo]) == 2


@pytest.mark.parametrize("family", ["timm", "monai"])
def test_a_pulled_model_resaves_in_either_mode(tmp_path, family):
    from rllm_zoo.hub.pull import load_from_folder

    model, x, flag = (tiny_2d(), X2, "retinamnist") if family == "timm" else (tiny_3d(), X3, "adrenalmnist3d")
    rllm_zoo.save_pretrained(model, tmp_path / "full", weights="full", dataset_flag=flag)
    rebuilt = load_from_folder(tmp_path / "full")  # its block comes from llm_config
    for mode in ("delta", "full", "auto"):
        rllm_zoo.save_pretrained(rebuilt, tmp_path / mode, weights=mode, dataset_flag=flag)
        assert torch.equal(load_from_folder(tmp_path / mode).eval()(x), model(x)), mode


def test_auto_weights_follow_the_llm_licence(local_hub, tiny_llm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RLLM_ZOO_LLM_PATH", str(tmp_path))  # a local LLM is recorded by its name only
    import shutil

    for license, expected in (("llama2", "delta"), (None, "delta"), ("apache-2.0", "full")):
        folder = tmp_path / f"llm-{license}"
        shutil.copytree(tiny_llm_dir("llama"), folder)
        if license:
            (folder / "README.md").write_text(f"---\nlicense: {license}\n---\n# a tiny llama\n")
        model = timm.create_model("rllm_vit_micro_patch4_28", num_classes=5, depth=1, llm=str(folder)).eval()
        repo = local_hub.new_repo_id(f"lic-{license}")
        res = push_to_hub(model, repo)
        assert res.weights == expected, license
        again = load_from_hub(repo)
        assert torch.equal(again(X2), model(X2))
        if expected == "delta":  # the layer is re-read from the local folder and checked
            assert again.booster.block.info.source == folder.name
