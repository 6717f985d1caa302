"""Faults in models, LLM layers and run checkpoints: each one is a single-line ValueError that names the fix.

The CLI prints ``ValueError`` / ``FileNotFoundError`` messages as ``rllm-zoo <cmd>: error: ...``
without a traceback, so every message here must be one line that says what to do.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import timm
import torch

import rllm_zoo
from rllm_zoo.monai import BoostedViT, BoostedViViT
from rllm_zoo.training import checkpoint as ckpt_mod
from rllm_zoo.training.checkpoint import TEMP_PREFIX, load_checkpoint, remove_stale_temps, save_checkpoint

STANDIN = "random:smollm2"  # a random-init SmolLM2 layer: real architecture, nothing read
TINY_VIT = dict(llm=STANDIN, depth=1)
MONAI_SMALL = dict(hidden_size=32, mlp_dim=64, num_layers=1, num_heads=4, llm=STANDIN)


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg and "\r" not in msg, msg
    return msg


def _good_checkpoint(path):
    save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "llm_sha256": None, "epoch": 2})
    return path


# --- run checkpoints -------------------------------------------------------------------------


def test_fault_truncated_checkpoint(tmp_path):
    path = _good_checkpoint(tmp_path / "best.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    msg = _one_line(e)
    assert f"{path} is damaged or not an rllm-zoo checkpoint" in msg
    assert "delete it and train again" in msg and "last.pt" in msg


def test_fault_empty_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    msg = _one_line(e)
    assert f"{path} is damaged" in msg and "the file is empty" in msg and "--resume" in msg


def test_fault_not_a_torch_archive(tmp_path):
    path = tmp_path / "best.pt"
    path.write_text("epoch: 3\nthis is not a checkpoint\n")
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    msg = _one_line(e)
    assert f"{path} is damaged or not an rllm-zoo checkpoint" in msg and "not a torch zip archive" in msg


def test_fault_corrupt_bytes_in_checkpoint(tmp_path):
    path = _good_checkpoint(tmp_path / "best.pt")
    data = bytearray(path.read_bytes())
    data[200:260] = b"x" * 60  # damage inside the archive, its directory intact
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    msg = _one_line(e)
    assert f"{path} is damaged" in msg and "weights_only" not in msg


class _Payload:  # an arbitrary pickled object (weights_only refuses to build it)
    pass


def test_fault_pickled_object_in_checkpoint(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"model": {}, "epoch": 1, "extra": _Payload()}, path)
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    msg = _one_line(e)
    assert f"{path} is damaged or not an rllm-zoo checkpoint" in msg
    assert "pickled Python objects such as" in msg and "_Payload" in msg
    assert "weights_only" not in msg  # never the advice to unpickle it


def test_fault_checkpoint_missing_keys(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, path)
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    assert "it lacks 'epoch'" in _one_line(e)
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    assert "it lacks 'model', 'epoch'" in _one_line(e)
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    assert "it holds a list" in _one_line(e)


def test_fault_missing_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_checkpoint(tmp_path / "best.pt")
    assert "best.pt does not exist" in _one_line(e)


def test_good_checkpoint_still_loads(tmp_path):
    ckpt = load_checkpoint(_good_checkpoint(tmp_path / "last.pt"))
    assert ckpt["epoch"] == 2 and torch.equal(ckpt["model"]["w"], torch.zeros(3))
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*"))


def test_fault_stale_checkpoint_temp_removed(tmp_path, monkeypatch):
    # save_checkpoint names its temporary file with TEMP_PREFIX (the pattern remove_stale_temps deletes)
    made = []
    real_mkstemp = tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        made.append(name)
        return fd, name

    monkeypatch.setattr(ckpt_mod.tempfile, "mkstemp", spy)
    _good_checkpoint(tmp_path / "last.pt")
    monkeypatch.undo()
    assert made and Path(made[0]).name.startswith(f"{TEMP_PREFIX}last.pt.")

    # what a SIGKILL during torch.save leaves behind
    fd, stale = real_mkstemp(dir=tmp_path, prefix=f"{TEMP_PREFIX}best.pt.")
    with open(fd, "wb") as f:
        f.write(b"PK\x03\x04 half a checkpoint")
    keep = [tmp_path / ".config.yaml.abcd1234", tmp_path / "config.yaml", tmp_path / "last.pt"]
    for p in keep[:2]:
        p.write_text("x")
    (tmp_path / f"{TEMP_PREFIX}dir").mkdir()  # not a file: left alone

    removed = remove_stale_temps(tmp_path)
    assert [str(p) for p in removed] == [stale]
    assert not (tmp_path / stale).exists() and all(p.exists() for p in keep)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    assert remove_stale_temps(tmp_path) == [] and remove_stale_temps(tmp_path / "absent") == []


# --- LLM layers ------------------------------------------------------------------------------


def test_fault_nan_llm_layer(tiny_llm_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nan-llama"
    shutil.copytree(tiny_llm_dir("llama"), folder)
    target = "model.layers.3.mlp.up_proj.weight"
    for shard in sorted(folder.glob("*.safetensors")):
        tensors = load_file(shard)
        if target in tensors:
            tensors[target][1, 2] = float("nan")
            save_file(tensors, shard, metadata={"format": "pt"})
            break
    else:  # pragma: no cover - the fixture's layout changed
        pytest.fail(f"no shard holds {target}")
    with pytest.raises(ValueError) as e:
        rllm_zoo.load_llm_block(str(folder), layer=-1)
    assert isinstance(e.value, rllm_zoo.llm.sources.LLMSourceError)
    msg = _one_line(e)
    assert f"LLM source {str(folder)!r}: layer 3 tensor {target}" in msg
    assert f"(in {shard.name})" in msg and "holds NaN/Inf (1 of" in msg and "re-download" in msg
    # the other layers are intact and still load
    assert rllm_zoo.load_llm_block(str(folder), layer=0).info.layer == 0


def test_fault_llm_layer_overflows_dtype(tiny_llm_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "big-llama"
    shutil.copytree(tiny_llm_dir("llama"), folder)
    target = "model.layers.3.self_attn.q_proj.weight"
    for shard in sorted(folder.glob("*.safetensors")):
        tensors = load_file(shard)
        if target in tensors:
            tensors[target][0, 0] = 1e6  # finite in float32, Inf in float16
            save_file(tensors, shard, metadata={"format": "pt"})
            break
    assert rllm_zoo.load_llm_block(str(folder), layer=-1, dtype=torch.float32).info.layer == 3
    with pytest.raises(ValueError) as e:
        rllm_zoo.load_llm_block(str(folder), layer=-1, dtype=torch.float16)
    msg = _one_line(e)
    assert f"layer 3 tensor {target}" in msg and "overflows float16" in msg and "dtype=torch.float32" in msg


# --- model arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, -5, 2.5, "5", True])
def test_fault_negative_num_classes_timm(bad):
    with pytest.raises(ValueError) as e:
        timm.create_model("rllm_vit_tiny_patch4_28", num_classes=bad, **TINY_VIT)
    assert (
        "num_classes must be an int >= 1 (the number of classes), or 0 for no classifier head" in _one_line(e)
    )
    assert f"got {bad!r}" in str(e.value)


def test_num_classes_zero_is_timm_features_head():
    model = timm.create_model("rllm_vit_tiny_patch4_28", num_classes=0, **TINY_VIT)
    assert model(torch.randn(1, 3, 28, 28)).shape == (1, model.num_features)


@pytest.mark.parametrize("network", [BoostedViT, BoostedViViT])
@pytest.mark.parametrize("bad", [-1, 0])
def test_fault_negative_num_classes_monai(network, bad):
    with pytest.raises(ValueError) as e:
        network(in_channels=1, img_size=28, patch_size=7, num_classes=bad, **MONAI_SMALL)
    msg = _one_line(e)
    assert f"num_classes must be an int >= 1 (the number of logits {network.__name__} outputs" in msg
    assert f"got {bad!r}" in msg


@pytest.mark.parametrize("booster", ["residual", "out", "hybrid", "none", False])
def test_fault_llm_width_with_residual(booster):
    with pytest.raises(ValueError) as e:
        timm.create_model("rllm_vit_tiny_patch4_28", booster=booster, llm_width=576, **TINY_VIT)
    msg = _one_line(e)
    assert "llm_width=576 only sets the adapter width of booster='mlp'" in msg and "drop llm_width" in msg


def test_llm_width_kept_for_mlp_and_none_elsewhere():
    mlp = timm.create_model("rllm_vit_tiny_patch4_28", booster="mlp", llm_width=48, **TINY_VIT)
    assert mlp.booster_args["llm_width"] == 48 and mlp.booster.llm_width == 48
    res = timm.create_model("rllm_vit_tiny_patch4_28", booster="residual", llm_width=None, **TINY_VIT)
    assert res.booster_args["llm_width"] is None


# --- inputs ----------------------------------------------------------------------------------


def test_fault_wrong_input_size_timm():
    model = timm.create_model("rllm_vit_tiny_patch4_28", **TINY_VIT)
    with pytest.raises(ValueError) as e:
        model(torch.randn(1, 3, 32, 32))
    assert _one_line(e) == (
        "input is 32x32 but rllm_vit_tiny_patch4_28 was built for 28x28; "
        "build it with img_size=32 (or resize the input)"
    )
    with pytest.raises(ValueError) as e:
        model.forward_features(torch.randn(1, 3, 28, 36))
    assert "input is 28x36 but rllm_vit_tiny_patch4_28 was built for 28x28" in _one_line(e)
    assert "img_size=(28, 36)" in str(e.value)
    with pytest.raises(ValueError) as e:
        model.forward_intermediates(torch.randn(1, 3, 56, 56), indices=1)
    assert "build it with img_size=56" in _one_line(e)
    assert model(torch.randn(1, 3, 28, 28)).shape == (1, 1000)
    # a model built for dynamic sizes takes any multiple of the patch size
    dyn = timm.create_model("rllm_vit_tiny_patch4_28", dynamic_img_size=True, **TINY_VIT)
    assert dyn(torch.randn(1, 3, 32, 36)).shape == (1, 1000)
    with pytest.raises(ValueError) as e:
        dyn(torch.randn(1, 3, 30, 32))
    assert "input is 30x32, not a multiple of the patch size 4x4" in _one_line(e)


@pytest.mark.parametrize("network", [BoostedViT, BoostedViViT])
def test_fault_wrong_input_size_monai(network):
    net = network(in_channels=1, img_size=28, patch_size=7, num_classes=2, **MONAI_SMALL)
    with pytest.raises(ValueError) as e:
        net(torch.rand(1, 1, 32, 32, 32))
    msg = _one_line(e)
    assert "expected spatial size (28, 28, 28) (img_size), got (32, 32, 32)" in msg
    assert "img_size=(32, 32, 32)" in msg
