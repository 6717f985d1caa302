"""The timm model API contract, over every registered rllm_* name (in the spirit of timm's tests)."""

from __future__ import annotations

import pytest
import timm
import torch

import rllm_zoo
from rllm_zoo import BoostedVisionTransformer, booster_args
from rllm_zoo.booster import frozen_state_names

NAMES = timm.list_models("rllm_*")
STANDIN = "random:smollm2"  # a random-init SmolLM2 layer: real architecture, nothing read


def _create(name, **kw):
    kw.setdefault("llm", STANDIN)
    return timm.create_model(name, **kw)


def _input(model, batch=2):
    return torch.randn(batch, *model.pretrained_cfg["input_size"])


def test_family_is_registered():
    assert len(NAMES) >= 7
    for size in ("tiny", "small", "base"):
        assert f"rllm_vit_{size}_patch16_224" in NAMES
    assert {"rllm_vit_tiny_patch4_28", "rllm_vit_small_patch4_28", "rllm_vit_tiny_patch8_64"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_and_contract(name):
    model = _create(name, num_classes=7)
    assert isinstance(model, BoostedVisionTransformer)
    cfg = model.pretrained_cfg
    b = 1 if cfg["input_size"][-1] >= 224 else 2
    x = _input(model, b)
    out = model(x)
    assert out.shape == (b, 7)
    out.mean().backward()
    # the frozen LLM block is held as buffers: in the state dict, never a parameter, so every
    # parameter gets a gradient (timm's backward contract) and an optimizer never sees the block
    frozen = frozen_state_names(model)
    assert frozen and all(n.startswith("booster.block.") for n in frozen)
    assert not any(n.startswith("booster.block.") for n, _ in model.named_parameters())
    assert frozen <= set(model.state_dict())
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert len(model.trainable_parameters()) == len(list(model.parameters()))
    # cfg consistency
    sd = model.state_dict()
    assert cfg["first_conv"] + ".weight" in sd and cfg["classifier"] + ".weight" in sd
    assert cfg["license"] and cfg["paper_ids"] and len(cfg["mean"]) == len(cfg["std"]) == 3
    assert cfg["input_size"][1] == model.patch_embed.img_size[0]
    # features / head API
    with torch.no_grad():
        feats = model.forward_features(x)
    assert feats.shape[0] == b and feats.shape[-1] == model.num_features == model.embed_dim
    assert model.forward_head(feats, pre_logits=True).shape == (b, model.num_features)
    assert model.get_classifier() is model.head
    model.reset_classifier(3)
    assert model.forward_head(feats).shape == (b, 3)
    model.reset_classifier(0)
    assert model.forward_head(feats).shape == (b, model.num_features)
    assert "pos_embed" in model.no_weight_decay()
    groups = model.group_matcher()
    assert {"stem", "blocks"} <= set(groups)
    model.set_grad_checkpointing(True)
    torch.testing.assert_close(model.forward_head(model.forward_features(x)), model.forward_head(feats))


@pytest.mark.parametrize("name", ["rllm_vit_tiny_patch4_28", "rllm_vit_small_patch8_64"])
def test_forward_intermediates_and_features_only(name):
    model = _create(name).eval()
    x = _input(model)
    grid = model.patch_embed.grid_size
    final, inter = model.forward_intermediates(x, indices=3)
    assert len(inter) == 3 and all(t.shape == (2, model.embed_dim, *grid) for t in inter)
    torch.testing.assert_close(final, model.forward_features(x))
    # taps are block outputs before the booster; the final output is norm(booster(last block))
    last = model.forward_intermediates(
        x, indices=[len(model.blocks) - 1], intermediates_only=True, output_fmt="NLC"
    )[0]
    z = _run_blocks(model, x)
    torch.testing.assert_close(last, z[:, model.num_prefix_tokens :])
    torch.testing.assert_close(final, model.norm(model.booster(z)))
    # features_only prunes the norm and, with it, the booster: the features are the taps
    feat_model = _create(name, features_only=True, out_indices=(5, 11)).eval()
    assert feat_model.model.booster is None
    feats = feat_model(x)
    assert [f.shape for f in feats] == [(2, model.embed_dim, *grid)] * 2
    assert feat_model.feature_info.channels() == [model.embed_dim] * 2


def _run_blocks(model, x):
    z = model.norm_pre(model._pos_embed(model.patch_embed(x)))
    for blk in model.blocks:
        z = blk(z)
    return z


def test_booster_sits_before_final_norm():
    model = _create("rllm_vit_tiny_patch4_28").eval()
    x = _input(model, 1)
    z = model.booster(_run_blocks(model, x))
    torch.testing.assert_close(model.forward_features(x), model.norm(z))


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("img_size", [28, 64, 128, 224])
def test_channels_and_sizes(in_chans, img_size):
    model = _create(
        "rllm_vit_tiny_patch16_224" if img_size % 16 == 0 else "rllm_vit_tiny_patch4_28",
        in_chans=in_chans,
        img_size=img_size,
        num_classes=2,
    )
    assert model(torch.randn(1, in_chans, img_size, img_size)).shape == (1, 2)


def test_real_smollm2_member(smollm2_block):
    model = timm.create_model("rllm_vit_tiny_patch4_28", num_classes=5)  # default LLM: SmolLM2 layer -1
    info = model.booster.block.info
    assert (info.source, info.layer, info.width) == ("smollm2", 29, 576)
    assert info.sha256 == smollm2_block.info.sha256
    assert booster_args(model)["llm"] == "smollm2"
    y = model(torch.randn(2, 3, 28, 28))
    y.sum().backward()
    assert torch.isfinite(y).all() and not list(model.booster.block.parameters())  # frozen: buffers


@pytest.mark.parametrize("variant", ["residual", "out", "hybrid", "none", "mlp", False])
def test_variants_and_baseline(variant):
    model = _create("rllm_vit_tiny_patch4_28", booster=variant, num_classes=2)
    if variant is False:
        assert model.booster is None and not any(k.startswith("booster.") for k in model.state_dict())
    else:
        assert model.booster.variant == variant
        assert (model.booster.block is None) == (variant == "mlp")
    assert model(torch.randn(1, 3, 28, 28)).shape == (1, 2)


def test_save_for_hf_then_local_dir_rebuilds_identical_model(tmp_path):
    from timm.models import save_for_hf

    model = _create("rllm_vit_tiny_patch4_28", num_classes=4, booster="hybrid").eval()
    save_for_hf(model, tmp_path, model_args=booster_args(model), safe_serialization=True)
    again = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert booster_args(again) == booster_args(model) and again.num_classes == 4
    x = torch.randn(2, 3, 28, 28)
    torch.testing.assert_close(again(x), model(x))


def test_weights_resampled_to_another_size(tmp_path):
    from timm.models import save_for_hf

    model = _create("rllm_vit_tiny_patch4_28", num_classes=4)
    save_for_hf(model, tmp_path, model_args=booster_args(model), safe_serialization=True)
    big = timm.create_model(f"local-dir:{tmp_path}", pretrained=True, img_size=56)
    assert big.pos_embed.shape[1] == 1 + 14 * 14
    torch.testing.assert_close(big.booster.adapter_in.weight, model.booster.adapter_in.weight)
    assert big(torch.randn(1, 3, 56, 56)).shape == (1, 4)


def test_vit_part_from_a_timm_checkpoint(tmp_path):
    from timm.models import save_for_hf

    src = timm.create_model("vit_tiny_patch16_224", num_classes=10)
    save_for_hf(src, tmp_path, safe_serialization=True)
    model = _create("rllm_vit_tiny_patch16_224", vit_pretrained=f"local-dir:{tmp_path}", num_classes=10)
    torch.testing.assert_close(model.blocks[3].mlp.fc1.weight, src.blocks[3].mlp.fc1.weight)
    torch.testing.assert_close(model.head.weight, src.head.weight)
    # a bare weights file, at another resolution and channel count (timm adapts both)
    small = _create("rllm_vit_tiny_patch4_28", vit_pretrained=str(tmp_path / "model.safetensors"), in_chans=1)
    torch.testing.assert_close(small.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    assert small.pos_embed.shape[1] == 50
    with pytest.raises(ValueError, match="width 192 but this model has 384"):
        _create("rllm_vit_small_patch16_224", vit_pretrained=f"local-dir:{tmp_path}")


def test_pretrained_tag_without_hub_fails_clearly(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert "rllm_vit_micro_patch4_28.retinamnist_r_llm" in timm.list_pretrained("rllm_*")
    with pytest.raises(RuntimeError, match="could not be fetched from the Hugging Face Hub repo 'rllm-zoo/"):
        _create("rllm_vit_micro_patch4_28.retinamnist_r_llm", pretrained=True)
    with pytest.raises(RuntimeError, match="has no published pretrained weights"):
        _create("rllm_vit_small_patch16_224", pretrained=True)


def test_bad_input_errors():
    with pytest.raises(
        ValueError,
        match=r"expected images of shape \(B, 3, H, W\), got \(1, 1, 28, 28\); create the model with in_chans=1",
    ):
        _create("rllm_vit_tiny_patch4_28")(torch.randn(1, 1, 28, 28))
    with pytest.raises(ValueError, match="unknown booster variant 'resid'"):
        _create("rllm_vit_tiny_patch4_28", booster="resid")
    with pytest.raises(ValueError, match="img_size 30 is not divisible by patch_size 4"):
        _create("rllm_vit_tiny_patch4_28", img_size=30)
    model = _create("rllm_vit_tiny_patch4_28")
    with pytest.raises(ValueError, match="llm_width=64 does not match the block's width 576"):
        rllm_zoo.LLMBooster(192, model.booster.block, llm_width=64)


def test_freeze_llm_false_fine_tunes_the_block():
    frozen = timm.create_model("rllm_vit_micro_patch4_28", num_classes=2, depth=1, llm="random:smollm2")
    tuned = timm.create_model(
        "rllm_vit_micro_patch4_28", num_classes=2, depth=1, llm="random:smollm2", freeze_llm=False
    )
    block_params = sum(p.numel() for p in tuned.booster.block.parameters())
    n_frozen = sum(p.numel() for p in frozen.trainable_parameters())
    assert sum(p.numel() for p in tuned.trainable_parameters()) == n_frozen + block_params
    tuned(torch.rand(1, 3, 28, 28)).sum().backward()
    assert all(p.grad is not None for p in tuned.booster.block.parameters() if p.ndim > 1)
