"""The MONAI bundle verbs the model zoo's CI runs, on bundles the zoo writes for its 3D networks.

Bundles: ``rllm_vit3d_small`` packaged by :func:`rllm_zoo.bundles.package_bundle` (the path of a
trained 3D run), ``rllm_vivit_tiny`` through the bundle generator's ``network_name`` key, and
MONAI's ``UNETR`` boosted (a network bundle), all shrunk and boosted by a tiny random llama layer
(``tiny_llm_dir``). Verbs: ``verify_metadata`` (offline schema), ``verify_net_in_out``,
``ckpt_export`` (TorchScript by script, and by trace with its checks on), ``onnx_export`` with a
dynamic batch axis run by onnxruntime on a batch of 3 AdrenalMNIST3D-format volumes; plus the
model-zoo submission rules (required files, version/changelog, 25 MB limit, large_files.yml).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SHARED, TINY_UNETR, write_medmnist_npz

from rllm_zoo.bundles import (
    bundle_files,
    check_model_zoo,
    export_submission,
    package_bundle,
    write_large_files,
)
from rllm_zoo.bundles.zoo import LARGE_FILES, REQUIRED_FILES, read_large_files
from rllm_zoo.monai import create_network

SCHEMA = SHARED / "monai" / "meta_schema_20240725.json"
SMALL = dict(hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1)
DYNAMIC_BATCH = {
    "input_names": ["image"],
    "output_names": ["pred"],
    "dynamic_axes": {"image": {0: "batch"}, "pred": {0: "batch"}},
}
KINDS = ("vit", "vivit", "unetr")

needs_schema = pytest.mark.skipif(not SCHEMA.is_file(), reason=f"MONAI bundle schema not found at {SCHEMA}")


def configs(bundle: Path) -> dict[str, str]:
    return {
        "meta_file": str(bundle / "configs" / "metadata.json"),
        "config_file": str(bundle / "configs" / "inference.json"),
    }


def generated_vivit_bundle(out: Path, llm: str) -> Path:
    """The bundle generator's AdrenalMNIST3D bundle switched to ``rllm_vivit_tiny`` (its ``network_name``
    key), shrunk, with the weights of the network its ``network_def`` builds in models/model.pt."""
    from monai.bundle import ConfigParser

    for rel, text in bundle_files("adrenalmnist3d").items():
        if rel.endswith(".json") and rel != "configs/metadata.json":
            cfg = json.loads(text)
            if "network_def" in cfg:
                cfg.update(network_name="rllm_vivit_tiny", llm=llm, llm_layer=-1)
                cfg["network_def"].update(SMALL, num_temporal_layers=1)
            text = json.dumps(cfg, indent=4) + "\n"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text, encoding="utf-8")
    parser = ConfigParser()
    parser.read_config(str(out / "configs" / "inference.json"))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    (out / "models").mkdir()
    torch.save(net.state_dict(), out / "models" / "model.pt")
    return out


@pytest.fixture(scope="module")
def tiny_llama(tiny_llm_dir) -> str:
    return str(tiny_llm_dir("llama"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, tiny_llama) -> dict[str, Path]:
    """kind -> bundle folder (built once per module)."""
    root = tmp_path_factory.mktemp("bundles")
    torch.manual_seed(0)
    vit = create_network("rllm_vit3d_small", num_classes=2, llm=tiny_llama, **SMALL)
    package_bundle(vit, root / "vit", dataset_flag="adrenalmnist3d")
    torch.manual_seed(0)
    unetr = create_network("UNETR", **TINY_UNETR, llm=tiny_llama)
    package_bundle(unetr, root / "unetr")
    return {
        "vit": root / "vit",
        "vivit": generated_vivit_bundle(root / "vivit", tiny_llama),
        "unetr": root / "unetr",
    }


@pytest.fixture(scope="module")
def adrenal_batch(tmp_path_factory, bundles) -> torch.Tensor:
    """3 test volumes of a generated AdrenalMNIST3D-format file, through the bundle's own preprocessing."""
    from monai.bundle import ConfigParser

    from rllm_zoo.bundles import bundle_records

    data = tmp_path_factory.mktemp("medmnist")
    write_medmnist_npz(data, "adrenalmnist3d", n=(4, 4, 4))
    records = bundle_records("adrenalmnist3d", str(data), "test", limit=3)
    parser = ConfigParser()
    parser.read_config(str(bundles["vit"] / "configs" / "inference.json"))
    prep = parser.get_parsed_content("preprocessing")
    return torch.stack([torch.as_tensor(prep(r)["image"]) for r in records]).float()


def batch_for(kind: str, adrenal_batch: torch.Tensor) -> torch.Tensor:
    if kind == "unetr":
        return torch.rand(3, 1, 32, 32, 32, generator=torch.Generator().manual_seed(3))
    return adrenal_batch


def input_shape(kind: str, batch: int) -> list[int]:
    return [batch, 1, *([32] * 3 if kind == "unetr" else [28] * 3)]


def eager(bundle: Path, x: torch.Tensor) -> torch.Tensor:
    """The bundle's network_def with models/model.pt, in eager mode, on ``x``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def").eval()
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    with torch.no_grad():
        return net(x)


# ---------------------------------------------------------------- metadata, shapes, zoo rules


@needs_schema
@pytest.mark.parametrize("kind", KINDS)
def test_verify_metadata_offline_and_zoo_rules(kind, bundles, tmp_path):
    from monai.bundle import verify_metadata

    schema = tmp_path / "schema.json"  # verify_metadata must not write next to shared/
    shutil.copy(SCHEMA, schema)
    bundle = bundles[kind]
    verify_metadata(meta_file=configs(bundle)["meta_file"], filepath=str(schema))
    check_model_zoo(bundle, schema=schema)
    assert all((bundle / rel).is_file() for rel in REQUIRED_FILES)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    assert not (bundle / LARGE_FILES).exists()  # small weights: nothing to list
    readme = (bundle / "docs" / "README.md").read_text()
    assert "ckpt_export" in readme and "'dynamic_axes'" in readme
    # a hooked booster (MONAI's own networks) cannot be scripted: the README's export traces
    assert ("# TorchScript by tracing" in readme) == (kind == "unetr")


@pytest.mark.parametrize("kind", KINDS)
def test_verify_net_in_out(kind, bundles):
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", device="cpu", **configs(bundles[kind]))


# ---------------------------------------------------------------- exports


def _ckpt_export(bundle: Path, ts: Path, **kw) -> None:
    """MONAI's ckpt_export of the bundle's network_def with its checkpoint, to ``ts``."""
    from monai.bundle import ckpt_export

    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(bundle / "models" / "model.pt"),
        **kw,
        **configs(bundle),
    )


@pytest.mark.parametrize("kind", ("vit", "vivit"))
def test_ckpt_export_script(kind, bundles, adrenal_batch, tmp_path):
    bundle = bundles[kind]
    ts = tmp_path / "model.ts"
    _ckpt_export(bundle, ts)
    extra = {"metadata.json": "", "inference.json": ""}
    loaded = torch.jit.load(str(ts), _extra_files=extra)
    assert json.loads(extra["inference.json"])["network_def"]["_target_"] == "rllm_zoo.monai.create_network"
    x = batch_for(kind, adrenal_batch)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), eager(bundle, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_ckpt_export_trace_with_its_checks(kind, bundles, adrenal_batch, tmp_path):
    bundle = bundles[kind]
    ts = tmp_path / "model.ts"
    _ckpt_export(
        bundle,
        ts,
        use_trace=True,  # input_shape from the metadata: batch 1
        converter_kwargs={"verify": True, "check_trace": True, "device": torch.device("cpu")},
    )
    x = batch_for(kind, adrenal_batch)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(ts))(x), eager(bundle, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_export_dynamic_batch_runs_in_onnxruntime(kind, bundles, adrenal_batch, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from monai.bundle import onnx_export

    bundle = bundles[kind]
    path = tmp_path / "model.onnx"
    onnx_export(
        net_id="network_def",
        filepath=str(path),
        ckpt_file=str(bundle / "models" / "model.pt"),
        input_shape=input_shape(kind, 2),
        converter_kwargs=DYNAMIC_BATCH,
        **configs(bundle),
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("image", "pred") and isinstance(inp.shape[0], str)
    x = batch_for(kind, adrenal_batch)
    (pred,) = session.run(None, {"image": x.numpy()})
    assert pred.shape[0] == 3
    torch.testing.assert_close(torch.from_numpy(pred), eager(bundle, x), atol=1e-4, rtol=1e-4)


def test_ckpt_export_command_line(bundles, tmp_path):
    """``python -m monai.bundle ckpt_export`` as the model zoo's CI runs it (TorchScript by script)."""
    bundle = bundles["vit"]
    env = dict(os.environ, OMP_NUM_THREADS="2", HF_HUB_DISABLE_TELEMETRY="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ts = tmp_path / "verify_model.ts"
    cmd = [
        sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(ts),
        "--ckpt_file", "models/model.pt", "--meta_file", "configs/metadata.json",
        "--config_file", "configs/inference.json", "--bundle_root", str(bundle),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=bundle, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert ts.is_file() and torch.jit.load(str(ts)) is not None


# ---------------------------------------------------------------- large files


def test_large_weights_go_through_large_files_yml(tmp_path, tiny_llama):
    from monai.bundle import download_large_files

    folder = tmp_path / "hub" / "vit"
    torch.manual_seed(0)
    net = create_network("rllm_vit3d_small", num_classes=2, llm=tiny_llama, **SMALL)
    limit_mb = 0.05  # a small threshold: the ~0.2 MB weights are "large"
    info = package_bundle(
        net, folder, dataset_flag="adrenalmnist3d", max_file_mb=limit_mb, url=folder.as_uri()
    )
    weights = folder / "models" / "model.pt"
    assert weights.stat().st_size > limit_mb * 2**20
    assert [e["path"] for e in info["large_files"]] == ["models/model.pt"]
    (entry,) = read_large_files(folder)
    assert entry["url"] == f"{folder.as_uri()}/models/model.pt" and entry["hash_type"] == "sha256"
    text = (folder / LARGE_FILES).read_text()
    assert text.startswith('large_files:\n  - path: "models/model.pt"\n')
    check_model_zoo(folder, max_file_mb=limit_mb)

    # the submission leaves the large file out; MONAI's download_large_files brings it back, hash-checked
    sub = tmp_path / "model-zoo" / "r_llm_vit3d"
    copied = {p.relative_to(sub).as_posix() for p in export_submission(folder, sub, max_file_mb=limit_mb)}
    assert "models/model.pt" not in copied and LARGE_FILES in copied and "README.md" not in copied
    assert all((sub / rel).stat().st_size <= limit_mb * 2**20 for rel in copied)
    check_model_zoo(sub, max_file_mb=limit_mb)  # models/model.pt is listed, so it counts as present
    download_large_files(bundle_path=str(sub))
    assert (sub / "models" / "model.pt").read_bytes() == weights.read_bytes()

    # a tampered large file, an unlisted one, no url: one-line errors that name the fix
    (sub / "models" / "model.pt").write_bytes(b"tampered")
    with pytest.raises(ValueError, match=r"models/model.pt does not match its sha256 in large_files.yml"):
        check_model_zoo(sub, max_file_mb=limit_mb)
    (folder / LARGE_FILES).unlink()
    with pytest.raises(
        ValueError, match=r"models/model.pt is 0.2 MB, over the 0.05 MB limit, and not listed"
    ):
        check_model_zoo(folder, max_file_mb=limit_mb)
    with pytest.raises(ValueError, match=r"exceed the model zoo's 0.05 MB limit: pass url="):
        write_large_files(folder, None, max_file_mb=limit_mb)
    # under the default 25 MB nothing is listed and a stale large_files.yml goes away
    (folder / LARGE_FILES).write_text("large_files: []\n")
    assert write_large_files(folder, None) == [] and not (folder / LARGE_FILES).exists()
    check_model_zoo(folder)


def test_zoo_rules_name_what_is_missing(bundles, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(bundles["unetr"], bundle)
    (bundle / "LICENSE").unlink()
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["changelog"] = {"0.0.1": "older"}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        ValueError, match=r"LICENSE is missing; metadata.json changelog has no entry for version"
    ):
        check_model_zoo(bundle)
    with pytest.raises(ValueError, match="is not a MONAI bundle"):
        check_model_zoo(tmp_path)
    with pytest.raises(ValueError, match="max_file_mb must be a positive number"):
        check_model_zoo(bundle, max_file_mb=0)
