"""rllm_zoo.monai networks: shapes, gradients, frozen LLM block, variants, presets, input errors, and
the compilers and exporters (meta device, TorchScript, jit.trace, torch.fx, torch.compile, torch.export)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rllm_zoo import VARIANTS
from rllm_zoo.booster import frozen_state_names, parameter_counts
from rllm_zoo.monai import (
    BoostedViT,
    BoostedViViT,
    build_booster,
    create_network,
    list_networks,
    preset_config,
)

WIDTH = 32


class TinyBlock(nn.Module):
    """A stand-in 'LLM block' (B, N, 32) -> (B, N, 32) with a declared width and one weight."""

    width = WIDTH

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(WIDTH, WIDTH)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(h))


SMALL = dict(hidden_size=32, mlp_dim=64, num_layers=1, num_heads=4, num_classes=3)


def small_net(family: str, **kw) -> nn.Module:
    """Small networks of each family (3D ViT, 2D ViT, ViViT) on a tiny stand-in block."""
    kw.setdefault("llm", TinyBlock())
    if family == "vit3d":
        return BoostedViT(spatial_dims=3, in_channels=1, img_size=28, patch_size=7, **SMALL, **kw)
    if family == "vit2d":
        return BoostedViT(spatial_dims=2, in_channels=3, img_size=(28, 32), patch_size=4, **SMALL, **kw)
    return BoostedViViT(in_channels=1, img_size=28, patch_size=(4, 7, 7), **SMALL, **kw)


def sample(family: str, batch: int = 2) -> torch.Tensor:
    shape = {"vit3d": (1, 28, 28, 28), "vit2d": (3, 28, 32), "vivit": (1, 28, 28, 28)}[family]
    return torch.rand(batch, *shape)


@pytest.mark.parametrize("family", ["vit3d", "vit2d", "vivit"])
def test_forward_backward_and_frozen_block(family):
    torch.manual_seed(0)
    net = small_net(family)
    block = net.booster.block
    x = sample(family)
    logits = net(x)
    assert logits.shape == (2, 3)
    logits.square().mean().backward()
    trainable = {id(p) for p in net.trainable_parameters()}
    frozen = list(block.state_dict(keep_vars=True).values())  # parameters or buffers
    assert frozen
    for t in frozen:
        assert not t.requires_grad and t.grad is None and id(t) not in trainable
    assert {f"booster.block.{k}" for k in block.state_dict()} <= frozen_state_names(net)
    # every trainable parameter gets a gradient (what DDP needs)
    missing = [n for n, p in net.named_trainable_parameters() if p.grad is None]
    assert missing == []
    assert {id(p) for p in net.booster.adapter_in.parameters()} <= trainable
    assert {id(p) for p in net.booster.adapter_out.parameters()} <= trainable
    # an optimizer built from trainable_parameters() leaves the block alone
    before = [t.clone() for t in frozen]
    torch.optim.SGD(net.trainable_parameters(), lr=0.1).step()
    assert all(torch.equal(a, b) for a, b in zip(before, block.state_dict().values()))


@pytest.mark.parametrize("family", ["vit3d", "vit2d", "vivit"])
def test_forward_features_shapes(family):
    net = small_net(family).eval()
    x = sample(family, batch=1)
    feats = net.forward_features(x)
    tokens = {"vit3d": 1 + 4**3, "vit2d": 1 + 7 * 8, "vivit": 1 + 7}[family]
    assert feats.shape == (1, tokens, 32)
    torch.testing.assert_close(net.head(feats[:, 0]), net(x))  # forward = head(CLS of the features)


def test_vivit_slabs_follow_the_depth_axis():
    """Changing voxels of one depth slab changes only that slab's spatial CLS token."""
    torch.manual_seed(0)
    net = small_net("vivit").eval()
    x = torch.rand(1, 1, 28, 28, 28)
    y = x.clone()
    y[:, :, 8:12] = torch.rand(1, 1, 4, 28, 28)  # slab 2 of 7 (patch depth 4)
    with torch.no_grad():
        a, b = net.encode_slabs(x), net.encode_slabs(y)
    changed = [(a[0, i] - b[0, i]).abs().max().item() > 1e-6 for i in range(7)]
    assert changed == [False, False, True, False, False, False, False]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_booster_variant_runs(variant):
    net = small_net("vit3d", booster=variant)
    assert net.booster.variant == variant
    assert (net.booster.block is None) == (variant == "mlp")
    net(sample("vit3d")).sum().backward()


def test_baseline_and_no_llm_options():
    assert small_net("vit3d", use_booster=False).booster is None
    no_llm = small_net("vivit", llm=None)
    assert no_llm.booster.variant == "mlp" and no_llm.booster.block is None
    assert small_net("vit3d", booster="mlp", llm=None, llm_width=48).booster.llm_width == 48
    # the mlp control with a block keeps the block's width but not the block
    mlp = small_net("vit3d", booster="mlp")
    assert mlp.booster.llm_width == WIDTH and mlp.booster.block is None
    with pytest.raises(ValueError, match="needs an LLM block"):
        small_net("vit3d", llm=None, booster="hybrid")
    with pytest.raises(ValueError, match=r"unknown booster variant 'resid'.*use_booster=False"):
        small_net("vit3d", booster="resid")
    assert build_booster(8, use_booster=False) is None


def test_unfrozen_llm_block_is_trained():
    net = small_net("vit3d", freeze_llm=False).train()
    assert net.booster.block.proj.weight.requires_grad
    net(sample("vit3d")).sum().backward()
    ids = {id(p) for p in net.trainable_parameters()}
    assert id(net.booster.block.proj.weight) in ids
    assert net.booster.block.proj.weight.grad is not None


def test_random_smollm2_presets_small():
    torch.manual_seed(0)
    for name, x in [
        ("rllm_vit3d_small", torch.rand(2, 1, 28, 28, 28)),
        ("rllm_vivit_tiny", torch.rand(2, 1, 28, 28, 28)),
        ("rllm_vit2d_small", torch.rand(2, 1, 28, 28)),
    ]:
        net = create_network(name, num_classes=4, llm="random:smollm2")
        assert net.booster.llm_width == 576
        assert net.llm_info["source"] == "random:smollm2"
        out = net(x)
        assert out.shape == (2, 4), name
        out.sum().backward()
        assert all(p.grad is None for p in net.booster.block.parameters())


def test_paper_presets_match_the_paper_sizes():
    expected = {
        "rllm_vit3d_paper": ("BoostedViT", 1024, 8, None),
        "rllm_vivit_s": ("BoostedViViT", 512, 4, 4),
        "rllm_vivit_m": ("BoostedViViT", 1024, 8, 8),
    }
    for name, (cls, dim, layers, temporal) in expected.items():
        cfg = preset_config(name)
        args = cfg["args"]
        assert cfg["class"] == cls
        assert (args["hidden_size"], args["num_layers"], args.get("num_temporal_layers")) == (
            dim,
            layers,
            temporal,
        )
        assert (args["img_size"], args["patch_size"], args["num_heads"]) == (28, 4, 8)
    net = create_network("rllm_vit3d_paper", llm=TinyBlock())
    assert net.num_tokens == 344  # 7^3 patches + CLS, as in the paper
    assert len(net.blocks) == 8 and net.hidden_size == 1024
    vivit = create_network("rllm_vivit_s", use_booster=False)
    assert len(vivit.spatial_blocks) == 4 and len(vivit.temporal_blocks) == 4
    with torch.no_grad():
        assert vivit(torch.rand(1, 1, 28, 28, 28)).shape == (1, 2)


def test_list_and_create_network():
    names = list_networks()
    for name in ("rllm_vit3d_small", "rllm_vit3d_paper", "rllm_vivit_s", "rllm_vivit_m", "rllm_vivit_tiny"):
        assert name in names
    assert names == sorted(names)
    with pytest.raises(ValueError, match="did you mean rllm_vivit_s"):
        create_network("rllm_vivit_ss")
    net = create_network("rllm_vit3d_small", use_booster=False, num_classes=5, hidden_size=48, num_heads=4)
    assert net.booster is None and net.num_classes == 5 and net.hidden_size == 48


def test_real_smollm2_booster():
    torch.manual_seed(0)
    net = create_network("rllm_vit3d_small", num_classes=2, llm="smollm2")
    info = net.llm_info
    assert info["source"] == "smollm2" and info["width"] == 576 and info["layer"] == info["num_layers"] - 1
    x = torch.rand(2, 1, 28, 28, 28)
    logits = net(x)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    logits.sum().backward()
    block = list(net.booster.block.state_dict(keep_vars=True).values())  # frozen weights: buffers
    assert parameter_counts(net)[1] >= sum(t.numel() for t in block) > 3_000_000
    assert not {id(t) for t in block} & {id(p) for p in net.trainable_parameters()}
    assert all(t.grad is None for t in block)
    # the booster adds exactly the two adapters to what the optimizer receives
    plain = create_network("rllm_vit3d_small", use_booster=False)
    assert len(net.trainable_parameters()) == len(plain.trainable_parameters()) + 2


def test_monai_inferer_and_state_dict_round_trip():
    from monai.inferers import SimpleInferer

    torch.manual_seed(0)
    net = small_net("vit3d").eval()
    x = sample("vit3d")
    out = SimpleInferer()(x, net)
    twin = small_net("vit3d").eval()
    twin.load_state_dict(net.state_dict())
    torch.testing.assert_close(twin(x), out)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(spatial_dims=4), "spatial_dims=2 or 3, got spatial_dims=4"),
        (
            dict(img_size=28, patch_size=5),
            r"not divisible by patch_size \(5, 5, 5\).*one of \[1, 2, 4, 7, 14, 28\]",
        ),
        (dict(img_size=(28, 28), patch_size=7), r"img_size=\(28, 28\) has 2 entries but spatial_dims=3"),
        (dict(hidden_size=30, num_heads=4), "hidden_size=30 is not divisible by num_heads=4"),
        (dict(in_channels=0), "in_channels must be a positive int"),
        (dict(dropout_rate=1.5), r"dropout_rate must lie in \[0, 1\]"),
    ],
)
def test_constructor_errors_name_the_fix(kwargs, message):
    args = dict(
        in_channels=1, img_size=28, patch_size=7, hidden_size=32, mlp_dim=64, num_layers=1, num_heads=4
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        BoostedViT(llm=None, **args)


def test_vivit_is_3d_only():
    with pytest.raises(ValueError, match=r"BoostedViViT supports spatial_dims=3.*BoostedViT\(spatial_dims=2"):
        BoostedViViT(spatial_dims=2, llm=None)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 3, 28, 28, 28), r"expected 1 input channel\(s\), got 3.*in_channels=3"),
        ((2, 28, 28, 28), r"expected a 5D tensor \(B, C, D, H, W\) for spatial_dims=3.*spatial_dims=2"),
        ((2, 1, 32, 32, 32), r"expected spatial size \(28, 28, 28\).*img_size=\(32, 32, 32\)"),
    ],
)
def test_bad_inputs_raise_clear_errors(shape, message):
    for family in ("vit3d", "vivit"):
        net = small_net(family, llm=None)
        with pytest.raises(ValueError, match=message):
            net(torch.rand(*shape))


def test_2d_network_rejects_volumes():
    net = small_net("vit2d", llm=None)
    with pytest.raises(ValueError, match=r"expected a 4D tensor \(B, C, H, W\) for spatial_dims=2"):
        net(torch.rand(1, 3, 28, 28, 28))


# ---------------------------------------------------------------- compilers and exporters
# The 3D presets, shrunk, with a real (tiny random) llama decoder layer as the frozen block: each
# compiled or exported form must give the eager outputs (1e-5) on a batch it was not built with.

EXPORT_PRESETS = {
    "vit3d": ("rllm_vit3d_small", {}),
    "vivit": ("rllm_vivit_tiny", {"num_temporal_layers": 1}),
}
ATOL = 1e-5


def preset_net(family: str, llm: object, **kw) -> nn.Module:
    """A shrunk 3D preset (rllm_vit3d_small / rllm_vivit_tiny) with the booster on ``llm``."""
    name, extra = EXPORT_PRESETS[family]
    small = dict(hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1, num_classes=2)
    return create_network(name, llm=llm, **small, **extra, **kw)


@pytest.fixture(scope="module")
def tiny_llama(tiny_llm_dir) -> str:
    return str(tiny_llm_dir("llama"))


@pytest.fixture
def fresh(tiny_llama):
    """Factory: a freshly built preset in eval mode that has never run a forward (seeded)."""

    def make(family: str) -> nn.Module:
        torch.manual_seed(0)
        return preset_net(family, tiny_llama).eval()

    return make


def volumes(batch: int = 3) -> torch.Tensor:
    return torch.rand(batch, 1, 28, 28, 28, generator=torch.Generator().manual_seed(batch))


def assert_like_eager(net: nn.Module, out: torch.Tensor, x: torch.Tensor) -> None:
    with torch.no_grad():
        ref = net(x)
    assert out.shape == ref.shape == (x.shape[0], 2)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", EXPORT_PRESETS)
def test_booster_is_called_by_forward_not_by_a_hook(family):
    net = small_net(family if family == "vivit" else "vit3d")
    site = "temporal_blocks.0" if family == "vivit" else "blocks.0"
    assert net.boost_site.name == site and net.boost_site.layout == "tokens"
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    x = sample("vivit" if family == "vivit" else "vit3d")
    with torch.no_grad():
        boosted = net(x)
        net.booster = None  # the plain path: forward skips the booster
        plain = net(x)
    assert not torch.allclose(boosted, plain)


def test_networks_pickled_with_a_booster_hook_run_the_booster_once():
    import copy

    from rllm_zoo.plug import BoosterHook

    net = small_net("vit3d").eval()
    x = sample("vit3d")
    with torch.no_grad():
        expected = net(x)
    net.blocks[-1].register_forward_hook(BoosterHook(net, net.boost_site))  # as networks built before
    twin = copy.deepcopy(net)  # __setstate__ drops the old hook
    assert not twin.blocks[-1]._forward_hooks
    with torch.no_grad():
        torch.testing.assert_close(twin(x), expected)


@pytest.mark.parametrize("family", EXPORT_PRESETS)
def test_meta_device_build_and_forward(family, tiny_llama):
    with torch.device("meta"):
        net = preset_net(family, tiny_llama)
        out = net(torch.empty(3, 1, 28, 28, 28))
    assert out.shape == (3, 2) and out.device.type == "meta"
    assert {t.device.type for t in net.state_dict().values()} == {"meta"}


@pytest.mark.parametrize("family", EXPORT_PRESETS)
def test_meta_device_plain_network(family):
    with torch.device("meta"):
        net = preset_net(family, None, use_booster=False)
        assert net(torch.empty(2, 1, 28, 28, 28)).shape == (2, 2)


@pytest.mark.parametrize("family", EXPORT_PRESETS)
def test_torchscript_matches_eager(family, fresh):
    net = fresh(family)
    scripted = torch.jit.script(net)
    x = volumes()
    with torch.no_grad():
        out = scripted(x)
    assert_like_eager(net, out, x)


@pytest.mark.parametrize("family", EXPORT_PRESETS)
def test_jit_trace_of_a_fresh_model_matches_eager(family, fresh):
    import warnings

    net = fresh(family)  # traced before any eager call: no state may be set lazily by a first forward
    x = volumes()
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)  # nothing baked in from Python values
        traced = torch.jit.trace(net, volumes(1), check_trace=True, check_inputs=[(volumes(2),)])
    with torch.no_grad():
        out = traced(x)  # another batch size than the traced one
    assert_like_eager(net, out, x)


@pytest.mark.parametrize("family", EXPORT_PRESETS)
def test_fx_symbolic_trace_matches_eager(family, fresh):
    net = fresh(family)
    graph = torch.fx.symbolic_trace(net)
    assert "booster" in graph.code  # the booster is part of the graph, not a hook
    x = volumes()
    with torch.no_grad():
        out = graph(x)
    assert_like_eager(net, out, x)


@pytest.mark.parametrize("family", EXPORT_PRESETS)
def test_torch_compile_fullgraph_matches_eager(family, fresh):
    torch._dynamo.reset()
    net = fresh(family)
    compiled = torch.compile(net, fullgraph=True)
    x = volumes()
    with torch.no_grad():
        out = compiled(x)
    assert_like_eager(net, out, x)


@pytest.mark.parametrize("family", EXPORT_PRESETS)
def test_torch_export_with_a_dynamic_batch_matches_eager(family, fresh):
    net = fresh(family)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(net, (volumes(2),), dynamic_shapes=({0: batch},))
    x = volumes()
    with torch.no_grad():
        out = program.module()(x)
    assert_like_eager(net, out, x)


@pytest.mark.parametrize("family", EXPORT_PRESETS)
def test_input_checks_stay_in_eager_mode(family, fresh):
    net = fresh(family)
    with pytest.raises(ValueError, match=r"expected 1 input channel\(s\), got 2"):
        net(torch.rand(1, 2, 28, 28, 28))
    scripted = torch.jit.script(net)  # compiled without the Python checks
    assert "check_input" not in scripted.code
