"""Plug-and-play boosting of any timm or MONAI backbone (rllm_zoo.boost, r_llm_boost, create_network).

Every case uses random init and the tiny random llama (``tiny_llm_dir("llama")``, width 64), except
one case with the real embedded SmolLM2 layer. Sizes are tiny so the file runs in about a minute.
"""

from __future__ import annotations

import copy
import io

import pytest
import timm
import timm.optim
import torch
from conftest import TINY_UNETR
from torch import nn

import rllm_zoo
from rllm_zoo import boost, trainable_parameters
from rllm_zoo.booster import frozen_state_names
from rllm_zoo.hub import load_from_hub, push_to_hub
from rllm_zoo.hub.pull import load_from_folder
from rllm_zoo.hub.weights import frozen_block_names, llm_reference
from rllm_zoo.llm.sources import LLM_PATH_ENV
from rllm_zoo.monai import create_network
from rllm_zoo.plug import BoostSite, boost_sites, find_booster, resolve_site

T = dict(depth=2, embed_dim=64, num_heads=2)  # a tiny width for the wider ViTs
#: timm name -> (base kwargs, input size, default site)
TIMM = {
    "vit_tiny_patch16_224": (dict(img_size=32, depth=2), 32, "blocks.1"),
    "deit_tiny_patch16_224": (dict(img_size=32, depth=2), 32, "blocks.1"),
    "deit_tiny_distilled_patch16_224": (dict(img_size=32, depth=2), 32, "blocks.1"),
    "deit3_small_patch16_224": (dict(img_size=32, **T), 32, "blocks.1"),
    "eva02_tiny_patch14_224": (dict(img_size=28, depth=2), 28, "blocks.1"),
    "beit_base_patch16_224": (dict(img_size=32, **T), 32, "blocks.1"),
    "vit_small_patch14_reg4_dinov2": (dict(img_size=28, **T), 28, "blocks.1"),
    "cait_xxs24_224": (dict(img_size=32, depth=2), 32, "blocks.1"),
    "resnet18": ({}, 64, "layer4"),
    "convnext_atto": ({}, 64, "stages.3"),
    "efficientnet_b0": ({}, 64, "blocks.6"),
    "mobilenetv3_small_100": ({}, 64, "blocks.5"),
    "regnetx_002": ({}, 64, "s4"),
}
#: MONAI name -> (network kwargs, input shape, default site)
MONAI = {
    "ViT": (
        dict(
            in_channels=1,
            img_size=32,
            patch_size=16,
            hidden_size=32,
            mlp_dim=64,
            num_layers=2,
            num_heads=4,
            classification=True,
            num_classes=3,
        ),
        (1, 32, 32, 32),
        "blocks.1",
    ),
    "UNETR": (
        TINY_UNETR,
        (1, 32, 32, 32),
        "vit.blocks.11",
    ),
    "SwinUNETR": (
        dict(
            in_channels=1,
            out_channels=2,
            feature_size=12,
            depths=(1, 1, 1, 1),
            num_heads=(1, 1, 1, 1),
            spatial_dims=2,
        ),
        (1, 64, 64),
        "swinViT.layers4.0",
    ),
    "BasicUNet": (
        dict(spatial_dims=3, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4)),
        (1, 32, 32, 32),
        "down_4",
    ),
}


@pytest.fixture(scope="module")
def llm(tiny_llm_dir) -> str:
    return str(tiny_llm_dir("llama"))


@pytest.fixture
def llm_path(llm, monkeypatch) -> str:
    """The tiny llama, findable by the base name a published model records (for delta reloads)."""
    from pathlib import Path

    monkeypatch.setenv(LLM_PATH_ENV, str(Path(llm).parent))
    return llm


def _x(shape: tuple[int, ...], batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, *shape, generator=torch.Generator().manual_seed(1))


def _out(y):
    return y[0] if isinstance(y, tuple) else y  # MONAI ViT returns (x, hidden_states)


def _timm(name: str, **kw) -> nn.Module:
    base_kw, _, _ = TIMM[name]
    return timm.create_model("r_llm_boost", base=name, num_classes=3, **base_kw, **kw)


def _monai(name: str, **kw) -> nn.Module:
    return create_network(name, **MONAI[name][0], **kw)


def _check_frozen_block(model: nn.Module) -> None:
    """After a backward pass: the block is held as buffers (no gradient, out of every optimizer); the adapters learn."""
    state = model.state_dict(keep_vars=True)
    block = {id(state[n]) for n in frozen_state_names(model)}
    assert block and not any(state[n].requires_grad for n in frozen_state_names(model))
    assert not {id(p) for p in model.parameters()} & block  # buffers, not parameters
    assert not {id(p) for p in trainable_parameters(model)} & block
    assert (
        model.booster.adapter_in.weight.grad is not None and model.booster.adapter_out.weight.grad is not None
    )
    opt = timm.optim.create_optimizer_v2(model, opt="adamw", lr=1e-3)
    assert not {id(p) for g in opt.param_groups for p in g["params"]} & block


# ------------------------------------------------------------------ timm: every family


@pytest.mark.parametrize("name", sorted(TIMM))
def test_timm_backbone_shape_baseline_and_frozen_block(name, llm):
    base_kw, size, site = TIMM[name]
    x = _x((3, size, size))
    torch.manual_seed(0)
    plain = timm.create_model(name, num_classes=3, **base_kw).eval()
    torch.manual_seed(0)
    off = _timm(name, booster=False).eval()
    torch.manual_seed(0)
    boosted = _timm(name, llm=llm)
    # booster=False is the timm model exactly; the boosted one adds booster.* and keeps every backbone tensor
    assert off.booster is None and off.state_dict().keys() == plain.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(off(x), plain(x), rtol=0, atol=0)
    plain_sd, boosted_sd = plain.state_dict(), boosted.state_dict()
    assert all(torch.equal(v, boosted_sd[k]) for k, v in plain_sd.items())
    assert set(boosted_sd) - set(plain_sd) == {k for k in boosted_sd if k.startswith("booster.")}
    assert type(boosted) is type(plain) and boosted.boost_site.name == site
    assert boosted.pretrained_cfg["architecture"] == "r_llm_boost" and boosted.booster_args["base"] == name
    # same output shape; gradients everywhere but the frozen block
    boosted.train()
    y = boosted(x)
    assert y.shape == plain(x).shape == (2, 3)
    y.square().mean().backward()
    _check_frozen_block(boosted)


@pytest.mark.parametrize("name", sorted(TIMM))
def test_timm_backbone_save_load_full_and_delta(name, llm_path, tmp_path):
    _, size, _ = TIMM[name]
    x = _x((3, size, size))
    torch.manual_seed(0)
    model = _timm(name, llm=llm_path).eval()
    with torch.no_grad():
        expected = model(x)
    sizes = {}
    for mode in ("full", "delta"):
        info = rllm_zoo.save_pretrained(model, tmp_path / mode, weights=mode)
        sizes[mode] = info["weights_bytes"]
        again = load_from_folder(tmp_path / mode).eval()
        with torch.no_grad():
            torch.testing.assert_close(again(x), expected, rtol=0, atol=0)
        assert again.boost_site == model.boost_site and again.booster_args["base"] == name
        assert again.booster.block.info.sha256 == model.booster.block.info.sha256
        assert ("rebuilt_from_config" in again.booster.block.info.extra) == (mode == "full")
    block_bytes = sum(t.numel() * t.element_size() for t in model.booster.block.state_dict().values())
    assert sizes["full"] - sizes["delta"] >= block_bytes


@pytest.mark.parametrize("variant", ["residual", "out", "hybrid", "none", "mlp"])
@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "resnet18"])
def test_variants(name, variant, llm):
    _, size, _ = TIMM[name]
    model = _timm(name, llm=llm, booster=variant)
    assert model.booster.variant == variant and (model.booster.block is None) == (variant == "mlp")
    assert model.booster.llm_width == 64
    y = model(_x((3, size, size)))
    assert y.shape == (2, 3)
    y.sum().backward()
    if variant != "mlp":
        _check_frozen_block(model)
    else:
        assert not frozen_block_names(model) and llm_reference(model)["source"] is None


def test_boost_in_place_and_at(llm):
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=3, num_classes=2)
    assert boost(vit, llm=llm, at=1) is vit  # in place, returned
    assert vit.boost_site == BoostSite("blocks.1", 192, "tokens") and vit.booster_args["boost_at"] == 1
    assert [s.name for s in boost_sites(vit)] == ["blocks.0", "blocks.1", "blocks.2"]
    # the boosted tokens feed the next blocks: blocks.1's output is what the booster returns
    seen = {}
    vit.blocks[2].register_forward_pre_hook(lambda m, a: seen.setdefault("in", a[0]))
    vit.blocks[1].register_forward_hook(lambda m, a, o: seen.setdefault("out", o))
    vit.eval()(_x((3, 32, 32)))
    torch.testing.assert_close(seen["in"], seen["out"])
    res = boost(timm.create_model("resnet18"), llm=llm, at="layer3")
    assert res.boost_site == BoostSite("layer3", 256, "channels_first")
    assert resolve_site(res, at=-2).name == "layer3"
    # any module by name: width and layout are inferred (or given)
    net = boost(Wrapped(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3)), llm=llm, at="body.2")
    assert net.boost_site == BoostSite("body.2", 16, "channels_first")
    assert net(torch.rand(2, 1, 6, 6)).shape == (2, 16, 4, 4)
    seq = boost(Wrapped(nn.Identity(), nn.Linear(4, 4)), llm=llm, at="body.0", layout="tokens", dim=4)
    assert seq.boost_site == BoostSite("body.0", 4, "tokens") and seq(torch.rand(1, 3, 4)).shape == (1, 3, 4)
    with pytest.raises(ValueError, match=r"an nn\.Sequential cannot hold model\.booster"):
        boost(nn.Sequential(nn.Linear(4, 4)), llm=llm, at="0")


class Wrapped(nn.Module):
    """A model of no known family: its layers in ``body``."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_errors_name_the_fix(llm):
    with pytest.raises(ValueError, match=r"supports timm token models .* at='<module name>'") as e:
        boost(Wrapped(nn.Linear(2, 2)), llm=llm)
    assert "\n" not in str(e.value)
    with pytest.raises(
        ValueError, match=r"at='lyaer4': ResNet has no module of that name \(did you mean layer4"
    ):
        boost(timm.create_model("resnet18"), llm=llm, at="lyaer4")
    with pytest.raises(ValueError, match="at=9 is out of range"):
        boost(timm.create_model("resnet18"), llm=llm, at=9)
    with pytest.raises(ValueError, match=r"cannot tell the layout .* pass layout="):
        boost(Wrapped(nn.Identity(), nn.ReLU()), llm=llm, at="body.0")
    model = boost(timm.create_model("resnet18"), llm=llm)
    with pytest.raises(ValueError, match=r"already holds a booster \(at layer4\)"):
        boost(model, llm=llm)
    with pytest.raises(ValueError, match=r"width 100 does not match the width of layer4 \(512\)"):
        rllm_zoo.plug.attach_booster(
            timm.create_model("resnet18"), rllm_zoo.LLMBooster(100, nn.Identity(), llm_width=8)
        )
    with pytest.raises(ValueError, match="unknown booster variant 'resid'"):
        boost(timm.create_model("resnet18"), llm=llm, variant="resid")
    with pytest.raises(ValueError, match="one of rllm_zoo's own boosted networks"):
        boost(timm.create_model("rllm_vit_micro_patch4_28", llm=llm, booster=False), llm=llm)
    with pytest.raises(ValueError, match="r_llm_boost needs base="):
        timm.create_model("r_llm_boost")
    with pytest.raises(RuntimeError, match="for the base model's own weights pass base_pretrained=True"):
        timm.create_model("r_llm_boost", base="resnet18", pretrained=True, llm=llm)


def test_base_pretrained_weights_from_a_local_file(llm, tmp_path):
    from safetensors.torch import save_file

    kw = dict(img_size=32, depth=2, num_classes=10)
    src = timm.create_model("deit_tiny_patch16_224", **kw)
    save_file(src.state_dict(), tmp_path / "deit.safetensors")
    file = str(tmp_path / "deit.safetensors")
    a = timm.create_model(
        "r_llm_boost",
        base="deit_tiny_patch16_224",
        base_pretrained=True,
        base_pretrained_cfg_overlay=dict(file=file, num_classes=10),
        llm=llm,
        **kw,
    )
    b = timm.create_model("r_llm_boost", base="deit_tiny_patch16_224", base_pretrained=file, llm=llm, **kw)
    for k, v in src.state_dict().items():
        assert torch.equal(a.state_dict()[k], v), k
        # a bare file says nothing of its classes: timm keeps its classifier only when told (as for `a`)
        assert torch.equal(b.state_dict()[k], v) != (k == "head.weight"), k  # (biases start at 0)
    # pretrained=True on r_llm_boost itself loads a boosted checkpoint
    rllm_zoo.save_pretrained(a, tmp_path / "boosted", weights="full")
    c = timm.create_model(
        "r_llm_boost",
        base="deit_tiny_patch16_224",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "boosted" / "model.safetensors"), num_classes=10),
        llm=llm,
        **kw,
    ).eval()
    x = _x((3, 32, 32))
    torch.testing.assert_close(c(x), a.eval()(x), rtol=0, atol=0)


def test_copies_export_and_features(llm):
    model = _timm("resnet18", llm=llm).eval()
    x = _x((3, 64, 64))
    with torch.no_grad():
        y = model(x)
        twin = copy.deepcopy(model)
        nn.init.zeros_(twin.booster.adapter_out.weight)  # the copy's hook runs the copy's booster
        assert not torch.equal(twin(x), y) and torch.equal(model(x), y)
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        torch.testing.assert_close(torch.load(buf, weights_only=False)(x), y, rtol=0, atol=0)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), y, rtol=1e-4, atol=1e-5)
    # TorchScript cannot compile a forward hook: one line that says so and names what works
    with pytest.raises(AttributeError, match=r"forward hook on 'layer4'.*torch\.jit\.trace"):
        torch.jit.script(model)
    scripted = torch.jit.script(torch.fx.symbolic_trace(model))
    torch.testing.assert_close(scripted(x), y, rtol=1e-4, atol=1e-5)
    hooks = [h for m in model.modules() for h in m._forward_hooks.values()]
    assert len(hooks) == 1 and getattr(hooks[0], "__name__", None) is None
    feats = timm.create_model("r_llm_boost", base="resnet18", llm=llm, features_only=True, out_indices=(3, 4))
    assert [tuple(f.shape) for f in feats(x)] == [(2, 256, 4, 4), (2, 512, 2, 2)]
    assert any(k.startswith("model.booster.block.") for k in feats.state_dict())
    # a boosted model nested in another module: the hub helpers find its block by type
    assert frozen_block_names(nn.Sequential(model)) == {f"0.{k}" for k in frozen_block_names(model)}
    assert find_booster(nn.Sequential(model))[0] == "0.booster"


def test_real_smollm2_layer(smollm2_block):
    model = boost(timm.create_model("convnext_atto", num_classes=2), llm="smollm2")
    info = model.booster.block.info
    assert (info.source, info.layer, info.width, info.sha256) == (
        "smollm2",
        29,
        576,
        smollm2_block.info.sha256,
    )
    y = model(torch.rand(2, 3, 64, 64))
    y.sum().backward()
    assert torch.isfinite(y).all()
    _check_frozen_block(model)


def test_zoo_models_use_the_same_mechanism(llm):
    vit = timm.create_model("rllm_vit_micro_patch4_28", llm=llm, depth=2)
    assert vit.boost_site == BoostSite("blocks.1", 192, "tokens") and find_booster(vit)[0] == "booster"
    net = create_network("rllm_vit3d_small", llm=llm, num_layers=2)
    assert net.boost_site == BoostSite("blocks.1", 192, "tokens")
    vivit = create_network("rllm_vivit_tiny", llm=llm)
    assert vivit.boost_site.name == "temporal_blocks.1"


# ------------------------------------------------------------------ MONAI networks


@pytest.mark.parametrize("name", sorted(MONAI))
def test_monai_network_shape_baseline_and_frozen_block(name, llm):
    import monai.networks.nets as nets

    kw, shape, site = MONAI[name]
    x = _x(shape)
    torch.manual_seed(0)
    plain = getattr(nets, name)(**kw).eval()
    torch.manual_seed(0)
    off = _monai(name, use_booster=False).eval()
    torch.manual_seed(0)
    boosted = _monai(name, llm=llm)
    assert off.booster is None and off.state_dict().keys() == plain.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(_out(off(x)), _out(plain(x)), rtol=0, atol=0)
    plain_sd, boosted_sd = plain.state_dict(), boosted.state_dict()
    assert all(torch.equal(v, boosted_sd[k]) for k, v in plain_sd.items())
    assert type(boosted) is type(plain) and boosted.boost_site.name == site and boosted.network_name == name
    boosted.train()
    y = _out(boosted(x))
    assert y.shape == _out(plain(x)).shape
    y.square().mean().backward()
    _check_frozen_block(boosted)


@pytest.mark.parametrize("name", sorted(MONAI))
def test_monai_network_save_load_full_and_delta(name, llm_path, tmp_path):
    x = _x(MONAI[name][1])
    torch.manual_seed(0)
    net = _monai(name, llm=llm_path, booster="hybrid").eval()
    with torch.no_grad():
        expected = _out(net(x))
    for mode in ("full", "delta"):
        rllm_zoo.save_pretrained(net, tmp_path / mode, weights=mode)
        state = torch.load(tmp_path / mode / "models" / "model.pt", weights_only=True)
        assert any(k.startswith("booster.block.") for k in state) == (mode == "full")
        again = load_from_folder(tmp_path / mode)
        assert type(again) is type(net) and again.booster.variant == "hybrid"
        with torch.no_grad():
            torch.testing.assert_close(_out(again(x)), expected, rtol=0, atol=0)


def test_monai_bundle_loads_through_monai(llm, tmp_path):
    import monai.bundle

    torch.manual_seed(0)
    net = _monai("UNETR", llm=llm).eval()
    rllm_zoo.save_pretrained(net, tmp_path / "unetr", weights="full")
    from conftest import SHARED

    schema = SHARED / "monai" / "meta_schema_20240725.json"
    if schema.is_file():  # the metadata passes MONAI's own verifier
        monai.bundle.verify_metadata(
            meta_file=str(tmp_path / "unetr" / "configs" / "metadata.json"),
            filepath=str(schema),
            create_dir=False,
        )
    loaded = monai.bundle.load(
        name="unetr", bundle_dir=tmp_path, workflow_type="inference", device="cpu", source="monaihosting"
    ).eval()
    x = _x(MONAI["UNETR"][1], batch=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def test_unetr_segmentation_step_on_a_3d_volume(llm):
    from monai.losses import DiceLoss

    torch.manual_seed(0)
    net = create_network("UNETR", **{**MONAI["UNETR"][0], "out_channels": 2}, llm=llm)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 32)] * 3, indexing="ij"))
    label = (grid.square().sum(0) < 0.4).long()[None, None]  # a sphere
    image = label.float() + 0.1 * torch.randn(1, 1, 32, 32, 32)
    block_before = [t.clone() for t in net.booster.block.state_dict().values()]
    opt = torch.optim.AdamW(trainable_parameters(net), lr=1e-3)
    loss_fn = DiceLoss(to_onehot_y=True, softmax=True)
    logits = net(image)
    assert logits.shape == (1, 2, 32, 32, 32)
    loss = loss_fn(logits, label)
    loss.backward()
    _check_frozen_block(net)
    opt.step()
    assert torch.isfinite(loss) and all(
        torch.equal(a, b) for a, b in zip(block_before, net.booster.block.state_dict().values())
    )


def test_swin_unetr_3d_bottleneck(llm):
    kw = {**MONAI["SwinUNETR"][0], "spatial_dims": 3}
    net = create_network("SwinUNETR", **kw, llm=llm, booster="out").eval()
    assert net.boost_site == BoostSite("swinViT.layers4.0", 192, "channels_first")
    with torch.no_grad():
        assert net(torch.rand(1, 1, 64, 64, 64)).shape == (1, 2, 64, 64, 64)


# ------------------------------------------------------------------ the Hub and training


def test_push_and_pull_through_the_hub(local_hub, llm_path):
    x = _x((3, 32, 32))
    torch.manual_seed(0)
    model = _timm("deit_tiny_patch16_224", llm=llm_path).eval()
    for mode in ("full", "delta"):
        repo = local_hub.new_repo_id(f"deit-{mode}")
        assert push_to_hub(model, repo, weights=mode).weights == mode
        again = timm.create_model(
            f"hf-hub:{repo}", pretrained=True
        ).eval()  # plain timm, after import rllm_zoo
        with torch.no_grad():
            torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
            torch.testing.assert_close(load_from_hub(repo)(x), model(x), rtol=0, atol=0)
    torch.manual_seed(0)
    net = _monai("UNETR", llm=llm_path).eval()
    repo = local_hub.new_repo_id("unetr")
    assert push_to_hub(net, repo, weights="delta").tag == rllm_zoo.bundles.BUNDLE_VERSION
    x3 = _x(MONAI["UNETR"][1], batch=1)
    with torch.no_grad():
        torch.testing.assert_close(load_from_hub(repo)(x3), net(x3), rtol=0, atol=0)


def test_training_run_with_a_boosted_timm_backbone(llm, medmnist_root, tmp_path):
    from rllm_zoo.training import TrainConfig, fit
    from rllm_zoo.training.package import load_run, package_run

    cfg = TrainConfig(
        flag="retinamnist",
        data_root=str(medmnist_root),
        model="deit_tiny_patch16_224",
        size=28,
        model_kwargs={"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2},
        llm=llm,
        epochs=1,
        batch_size=16,
        out=str(tmp_path / "run"),
        progress=False,
    )
    metrics = fit(cfg)
    assert metrics["llm_architecture"] == "llama" and metrics["params_frozen"] > 0
    model, _, _ = load_run(tmp_path / "run")
    assert model.booster_args["base"] == "deit_tiny_patch16_224" and model.boost_site.name == "blocks.1"
    folder = package_run(tmp_path / "run", weights="full")
    x = _x((3, 28, 28))
    with torch.no_grad():
        torch.testing.assert_close(load_from_folder(folder).eval()(x), model(x), rtol=0, atol=0)


def test_backbones_doc_is_the_scripts_output():
    import importlib.util
    import json

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location(
        "backbones_table", ROOT / "benchmarks" / "backbones_table.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    saved = json.loads((ROOT / "docs" / "backbones.json").read_text(encoding="utf-8"))
    doc = (ROOT / "docs" / "backbones.md").read_text(encoding="utf-8")
    assert doc == script.render(saved, "backbones.json"), "run python benchmarks/backbones_table.py"
    families = {r["family"] for r in saved["rows"]}
    assert families == {
        "timm token model",
        "timm CNN",
        "MONAI ViT",
        "MONAI UNETR",
        "MONAI SwinUNETR",
        "MONAI BasicUNet",
    }
    assert saved["llm"] == "smollm2" and all(0 < r["booster_share"] < 1 for r in saved["rows"])


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224"])
def test_plugged_model_keeps_timms_contracts(name, llm):
    """Gradient checkpointing keeps the booster; pruning keeps it with its site, or removes it with the site."""
    kw = {"img_size": 32, "depth": 3} if name.startswith("vit") else {}
    model = boost(timm.create_model(name, num_classes=3, **kw), llm=llm).eval()
    x = _x((3, 32, 32))
    with torch.no_grad():
        y = model(x)
        model.set_grad_checkpointing()  # resnet's checkpointing calls the stage's blocks, not the stage
        torch.testing.assert_close(model(x), y)
        model.set_grad_checkpointing(False)
    last = len(model.feature_info) - 1
    kept = copy.deepcopy(model)
    kept.prune_intermediate_layers([last], prune_head=False)
    with torch.no_grad():
        torch.testing.assert_close(kept(x), y)
    assert kept.booster is not None and kept.boost_site == model.boost_site
    pruned = copy.deepcopy(model)
    take = pruned.prune_intermediate_layers([last - 1])
    assert pruned.booster is None and pruned.boost_site is None  # its site is gone: so is the booster
    assert not any(k.startswith("booster.") for k in pruned.state_dict()) and model.booster is not None
    pruned.train()
    feats = pruned.forward_intermediates(x, indices=take, intermediates_only=True)
    (feats[0].sum() + pruned.forward_features(x).sum()).backward()
    assert [n for n, p in pruned.named_parameters() if p.grad is None] == []
