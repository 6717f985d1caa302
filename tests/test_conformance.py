"""timm conformance: the selection of ``make conformance`` and the contracts it checks, directly.

``make conformance`` (tools/conformance/run.py) runs timm's own tests/test_models.py; these are
the fast checks: the plugin keeps the right cases (on a generated test file, and on timm's file
when the sdist is cached), and one ``rllm_*`` model meets each contract of timm's suite
(backward, meta device, TorchScript, torch.fx, pruning) with a tiny random LLaMA layer.
"""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
from conftest import ROOT

import rllm_zoo  # noqa: F401  (registers rllm_*)

CONFORMANCE = ROOT / "tools" / "conformance"
sys.path.insert(0, str(CONFORMANCE))

import rllm_conformance as rc  # noqa: E402


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(CONFORMANCE), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _collect(test_file, *args: str) -> list[str]:
    """Node ids the plugin keeps from ``test_file`` (pytest --collect-only in a subprocess)."""
    cmd = [sys.executable, "-m", "pytest", str(test_file), "--collect-only", "-q", "-p", "rllm_conformance"]
    cmd += ["-p", "no:cacheprovider", "--rootdir", str(test_file.parent), *args]
    done = subprocess.run(cmd, env=_env(), cwd=test_file.parent, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [line for line in done.stdout.splitlines() if "::" in line]


# ------------------------------------------------------------------ selection


def test_reference_classification():
    assert rc.kind_of("rllm_vit_micro_patch4_28.untrained") == "zoo"
    assert rc.kind_of("r_llm_boost_resnet18") == "plug" and rc.kind_of("resnet18") is None
    assert rc.kind_of("r_llm_boost_not_a_base") is None
    assert rc.reference_of("rllm_vit_small_patch16_224") == ("vit_small_patch16_224", "vision_transformer")
    assert rc.reference_of("r_llm_boost_convnext_atto") == ("convnext_atto", "convnext")
    refs = {n: rc.reference_of(n) for n in ("rllm_vit_micro_patch4_28", "r_llm_boost_resnet18")}
    # timm's NON_STD_FILTERS / FEAT_INTER_FILTERS, applied to the reference architectures
    assert rc.classify(refs, filter=["vit_*", "deit*"], reference=refs.get) == ["rllm_vit_micro_patch4_28"]
    assert rc.classify(refs, exclude_filters=["vit_*"], reference=refs.get) == ["r_llm_boost_resnet18"]
    assert rc.classify(refs, module=["vision_transformer", "resnet"], reference=refs.get) == list(refs)
    assert rc.classify(refs, module=["convnext"], reference=refs.get) == []


FAKE_TESTS = """
import pytest
from timm import list_models

NON_STD = ["vit_*", "deit*", "beit*"]
FEAT = ["vision_transformer", "resnet", "convnext"]


@pytest.mark.parametrize("model_name", list_models(exclude_filters=["*enormous*"]))
def test_model_forward(model_name):
    pass


@pytest.mark.parametrize("model_name", list_models(exclude_filters=NON_STD, include_tags=True))
def test_model_default_cfgs(model_name):
    pass


@pytest.mark.parametrize("model_name", list_models(filter=NON_STD, include_tags=True))
def test_model_default_cfgs_non_std(model_name):
    pass


@pytest.mark.parametrize("model_name", list_models(module=FEAT))
def test_prune_intermediate_layers_contract(model_name):
    pass


@pytest.mark.parametrize("model_name", list_models(pretrained=True))
def test_model_load_pretrained(model_name):
    pass


@pytest.mark.parametrize("model_name", ["resnet18", "rllm_vit_micro_patch4_28"])
def test_something_else(model_name):
    pass


def test_plain():
    pass
"""


def _ids(lines: list[str], test: str) -> set[str]:
    return {line.split("[", 1)[1].rstrip("]") for line in lines if f"::{test}[" in line}


def test_plugin_selects_on_a_generated_test_file(tmp_path):
    (tmp_path / "test_models.py").write_text(textwrap.dedent(FAKE_TESTS), encoding="utf-8")
    lines = _collect(tmp_path / "test_models.py", "--rllm-select=rllm_vit_micro*,r_llm_boost_[dr]*")
    selected = {
        "rllm_vit_micro_patch4_28",
        "r_llm_boost_deit_tiny_patch16_224",
        "r_llm_boost_deit3_small_patch16_224",
    }
    selected |= {"r_llm_boost_resnet18", "r_llm_boost_regnetx_002"}
    assert _ids(lines, "test_model_forward") == selected
    tags = {t for t in timm.list_models("rllm_vit_micro_patch4_28", include_tags=True)}
    assert len(tags) == 4  # untrained + three RetinaMNIST tags
    # token models go to the non-standard cfg test (as timm's vit_* / deit*), CNNs to the standard one
    assert _ids(lines, "test_model_default_cfgs_non_std") == tags | {
        "r_llm_boost_deit_tiny_patch16_224",
        "r_llm_boost_deit3_small_patch16_224",
    }
    assert _ids(lines, "test_model_default_cfgs") == {"r_llm_boost_resnet18", "r_llm_boost_regnetx_002"}
    # by source module: rllm_* as vision_transformer, a plug variant as its base's module
    assert _ids(lines, "test_prune_intermediate_layers_contract") == {
        "rllm_vit_micro_patch4_28",
        "r_llm_boost_resnet18",
    }
    assert _ids(lines, "test_model_load_pretrained") == tags - {"rllm_vit_micro_patch4_28.untrained"}
    # tests outside the report's groups, and other models, are deselected
    assert not _ids(lines, "test_something_else") and not any("test_plain" in line for line in lines)


def _cached_timm_tests():
    tests = ROOT / ".cache" / "conformance" / f"timm-{timm.__version__}" / "tests" / "test_models.py"
    if not tests.is_file():
        pytest.skip(
            f"timm {timm.__version__}'s tests are not cached: run `make conformance` once to fetch them"
        )
    return tests


@pytest.mark.slow
def test_plugin_selects_from_timms_own_test_file():
    tests = _cached_timm_tests()
    lines = _collect(tests, "-c", str(tests.parents[1] / "pyproject.toml"))
    zoo = set(timm.list_models("rllm_*"))
    plug = {rc.plug_name(b) for b in rc.PLUG_BASES}
    cnn = {rc.plug_name(b) for b in ("resnet18", "convnext_atto", "efficientnet_b0", "mobilenetv3_small_050")}
    cnn |= {rc.plug_name("regnetx_002")}
    for test in (
        "test_model_forward",
        "test_model_backward",
        "test_model_forward_torchscript",
        "test_model_forward_intermediates",
        "test_prune_intermediate_layers_contract",
        "test_model_forward_fx",
        "test_model_backward_fx",
    ):
        assert {i.split("-")[-1] for i in _ids(lines, test)} == zoo | plug, test
    assert {i.split("-")[-1] for i in _ids(lines, "test_model_default_cfgs")} == cnn
    non_std = {i.split("-")[-1].split(".")[0] for i in _ids(lines, "test_model_default_cfgs_non_std")}
    assert non_std == zoo | (plug - cnn)
    assert {i.split("-")[-1] for i in _ids(lines, "test_model_forward_features")} == cnn
    kept = {line.split("::")[1].split("[")[0] for line in lines}
    assert kept <= set(rc.GROUPS)


# ------------------------------------------------------------------ the contracts, on one rllm_* model


@pytest.fixture(scope="module")
def llama(tiny_llm_dir) -> str:
    return str(tiny_llm_dir("llama"))


def _model(llama: str, **kw) -> torch.nn.Module:
    kw = {"llm": llama, "num_classes": 4, "depth": 3, **kw}
    return timm.create_model("rllm_vit_micro_patch4_28", **kw)


def _x(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 28, 28, generator=torch.Generator().manual_seed(0))


def test_backward_every_parameter_gets_a_gradient(llama):
    model = _model(llama).train()
    model(_x()).mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert any(n.startswith("booster.block.") for n in model.state_dict())  # the block: buffers


def test_meta_device_build_and_forward(llama):
    with torch.device("meta"):
        model = timm.create_model("rllm_vit_micro_patch4_28", llm=llama, device="meta").eval()
    off = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type != "meta"]
    assert off == []
    out = model.forward_features(torch.randn(1, 3, 28, 28, device="meta"))
    assert out.shape == (1, 50, 192) and out.device.type == "meta"
    plain = timm.create_model("rllm_vit_micro_patch4_28", llm=llama, device="meta")  # no device context
    assert {t.device.type for t in plain.state_dict().values()} == {"meta"}


def test_torchscript_matches_eager(llama):
    with timm.set_scriptable(True):
        model = _model(llama).eval()
    x = _x()
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-5)
    # the eager input checks step aside under TorchScript; eagerly they still explain
    with pytest.raises(ValueError, match="input is 32x32 but rllm_vit_micro_patch4_28 was built for 28x28"):
        model(torch.randn(1, 3, 32, 32))


def test_fx_trace_matches_eager(llama):
    from timm.models import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    model = _model(llama).eval()
    kwargs = dict(
        leaf_modules=get_notrace_modules(),
        autowrap_functions=get_notrace_functions(),
        param_shapes_constant=True,
    )
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kwargs)
    assert any(n.startswith("booster") for n in eval_nodes)  # the booster is in the graph
    fx_model = create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=kwargs
    )
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(next(iter(fx_model(x).values())), model(x), rtol=1e-5, atol=1e-5)


def test_prune_contract(llama):
    model = _model(llama).eval()
    x = _x()
    last = len(model.feature_info) - 1
    with torch.no_grad():
        expected = model(x)
        final, taps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=1e-5, atol=1e-8)
        # taps are block outputs before the booster
        z = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        for i, blk in enumerate(model.blocks):
            z = blk(z)
            torch.testing.assert_close(
                taps[i],
                z[:, 1:].reshape(2, 7, 7, -1).permute(0, 3, 1, 2),
                msg=f"tap {i} is block {i}'s output",
            )
        torch.testing.assert_close(final, model.norm(model.booster(z)))
        kept = copy.deepcopy(model)
        kept.prune_intermediate_layers([last], prune_head=False)
        torch.testing.assert_close(kept(x), expected)
    for i in range(last + 1):
        for prune_norm in (False, True):
            pruned = copy.deepcopy(model)
            take = pruned.prune_intermediate_layers([i], prune_norm=prune_norm)
            assert (pruned.booster is None) == prune_norm  # the booster goes with the norm, or stays
            with torch.no_grad():
                torch.testing.assert_close(
                    pruned.forward_intermediates(x, indices=take, intermediates_only=True)[0], taps[i]
                )
                if not prune_norm:  # the booster runs after the last kept block
                    assert pruned.boost_site.name == f"blocks.{i}"
            pruned.train()
            sel = pruned.forward_intermediates(x, indices=take, intermediates_only=True)
            (sum(t.sum() for t in sel) + pruned.forward_features(x).sum()).backward()
            assert [n for n, p in pruned.named_parameters() if p.grad is None] == [], (i, prune_norm)
    groups = model.group_matcher()
    assert (r"^booster\.", (len(model.blocks) - 1,)) in groups["blocks"]


def test_pickled_hook_era_model_is_not_boosted_twice(llama):
    from rllm_zoo.plug import BoosterHook

    model = _model(llama).eval()
    x = _x()
    with torch.no_grad():
        y = model(x)
    # a model saved when the booster ran as a hook on the last block and the input check as a pre-hook
    model.blocks[-1].register_forward_hook(BoosterHook(model, model.boost_site))
    model.patch_embed.register_forward_pre_hook(model._check_input)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False).eval()
    assert not again.blocks[-1]._forward_hooks and not again.patch_embed._forward_pre_hooks
    with torch.no_grad():
        torch.testing.assert_close(again(x), y)
