"""load_llm_block: one layer read from real checkpoint formats equals transformers' own layer."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

import rllm_zoo
from rllm_zoo import CheckpointError, LLMBooster, load_llm_block
from rllm_zoo.llm import TESTED_FAMILIES, LLMSourceError, UnsupportedArchitectureError, tensor_sha256
from rllm_zoo.llm.native import NATIVE_FAMILIES


def _full_model(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()


def _named_layers(model) -> tuple[str, nn.ModuleList]:
    n = model.config.num_hidden_layers
    return min(
        ((name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n),
        key=lambda t: t[0].count("."),
    )


def _layers(model) -> nn.ModuleList:
    return _named_layers(model)[1]


def _capture_layer_io(model, k, ids):
    cap = {}

    def hook(mod, args, kwargs, out):
        cap["in"] = args[0] if args else kwargs["hidden_states"]
        cap["out"] = out[0] if isinstance(out, tuple) else out

    handle = _layers(model)[k].register_forward_hook(hook, with_kwargs=True)
    with torch.no_grad():
        model(ids)
    handle.remove()
    return cap["in"], cap["out"]


def _paper_mode_reference(model, k, x):
    """Transformers' own layer k, run with no mask and identity rotary (cos=1, sin=0), eager."""
    layer = _layers(model)[k]
    for m in layer.modules():
        if hasattr(m, "is_causal"):
            m.is_causal = False
    kwargs = {}
    rot = next((m for m in model.modules() if type(m).__name__.endswith("RotaryEmbedding")), None)
    if rot is not None:
        extra = {"layer_type": model.config.layer_types[k]} if hasattr(model.config, "layer_types") else {}
        try:
            cos, _ = rot(x, torch.zeros(x.shape[:2], dtype=torch.long), **extra)
        except TypeError:
            cos, _ = rot(x, torch.zeros(x.shape[:2], dtype=torch.long))
        kwargs["position_embeddings"] = (torch.ones_like(cos), torch.zeros_like(cos))
    with torch.no_grad():
        out = layer(x, **kwargs)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("model_type", TESTED_FAMILIES)
def test_block_equals_transformers_layer(model_type, tiny_llm_dir):
    folder = tiny_llm_dir(model_type)
    assert len(list(folder.glob("*.safetensors"))) > 1, "the fixture must be sharded"
    model = _full_model(folder)
    k = 2
    torch.manual_seed(1)
    x = torch.randn(2, 9, model.config.get_text_config().hidden_size)

    block = load_llm_block(str(folder), layer=k)
    assert block.info.architecture == model_type and block.info.layer == k and block.info.num_layers == 4
    assert not any(p.requires_grad for p in block.parameters())
    with torch.no_grad():
        y = block(x)
    torch.testing.assert_close(y, _paper_mode_reference(model, k, x), atol=1e-5, rtol=1e-5)
    # LLaMA-family layers run as a pure-torch twin: scriptable and fx-traceable, same outputs
    assert block.native == (model_type in NATIVE_FAMILIES)
    if block.native:
        assert set(block.state_dict()) == {f"layer.{n}" for n in _layers(model)[k].state_dict()}
        with torch.no_grad():
            torch.testing.assert_close(torch.jit.script(block)(x), y, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(torch.fx.symbolic_trace(block)(x), y, atol=1e-6, rtol=1e-6)
        # causal without rotary (native) equals transformers' layer with a causal mask
        causal = load_llm_block(str(folder), layer=k, causal=True)
        assert causal.native
        ref = load_llm_block(str(folder), layer=k, causal=True, rotary=True)
        assert not ref.native
        ref._rotary_dim = int(ref._rotary_call(x[:1, :1], torch.zeros(1, 1, dtype=torch.long))[0].shape[-1])
        ref.use_rotary = False  # the transformers layer with identity rotation and a causal mask
        with torch.no_grad():
            torch.testing.assert_close(causal(x), ref(x), atol=1e-5, rtol=1e-5)

    # with the ablation switches on, it is exactly the layer inside the full forward pass
    ids = torch.randint(0, 128, (2, 7))
    h_in, h_out = _capture_layer_io(model, k, ids)
    exact = load_llm_block(str(folder), layer=k, causal=True, rotary=True)
    with torch.no_grad():
        torch.testing.assert_close(exact(h_in), h_out, atol=1e-5, rtol=1e-5)
    # bidirectional attention really differs from causal (the test can fail)
    with torch.no_grad():
        assert (block(h_in) - h_out).abs().max() > 1e-3

    # only the layer's tensors are read, and the sha256 is of exactly those tensors
    prefix = f"{_named_layers(model)[0]}.{k}"
    sd = {kk: v for kk, v in model.state_dict().items() if kk.startswith(prefix + ".")}
    sd = {kk: v for kk, v in sd.items() if kk[len(prefix) + 1 :] in block.layer.state_dict()}
    assert block.info.sha256 == tensor_sha256(sd, prefix=prefix + ".")


def test_negative_layer_and_bin_checkpoint_match_safetensors(tiny_llm_dir, tmp_path):
    folder = tiny_llm_dir("llama")
    model = _full_model(folder)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    shutil.copy(folder / "config.json", tmp_path / "config.json")
    a = load_llm_block(str(folder), layer=-1)
    b = load_llm_block(str(tmp_path), layer=3)
    assert a.info.layer == b.info.layer == 3
    assert a.info.sha256 == b.info.sha256
    x = torch.randn(1, 5, 64)
    torch.testing.assert_close(a(x), b(x))


def test_dtype_kept_or_converted(tiny_llm_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir("qwen2"), dtype=torch.bfloat16)
    model.save_pretrained(tmp_path, max_shard_size="50KB")
    as_stored = load_llm_block(str(tmp_path), dtype=None)
    as_fp32 = load_llm_block(str(tmp_path))
    assert next(as_stored.parameters()).dtype == torch.bfloat16 and as_stored.info.dtype == "bfloat16"
    assert next(as_fp32.parameters()).dtype == torch.float32
    assert as_stored.info.sha256 == as_fp32.info.sha256  # hash of the stored bytes


def test_random_init_block(tiny_llm_dir):
    folder = str(tiny_llm_dir("llama"))
    a = load_llm_block(f"random:{folder}", layer=1, seed=3)
    b = load_llm_block(folder, layer=1, random_init=True, seed=3)
    c = load_llm_block(folder, layer=1, random_init=True, seed=4)
    real = load_llm_block(folder, layer=1)
    assert a.info.source.startswith("random:") and a.info.sha256 == b.info.sha256 != c.info.sha256
    assert a.info.sha256 != real.info.sha256
    assert all(p.device.type == "cpu" for p in a.parameters())
    y = a(torch.randn(2, 3, 64))
    assert torch.isfinite(y).all()


def test_booster_with_loaded_block_rejects_width_mismatch(tiny_llm_dir):
    block = load_llm_block(str(tiny_llm_dir("gpt2")))
    booster = LLMBooster(32, block)
    assert booster.llm_width == 64
    assert booster(torch.randn(2, 5, 32)).shape == (2, 5, 32)
    with pytest.raises(ValueError, match="llm_width=576 does not match the block's width 64"):
        LLMBooster(32, block, llm_width=576)


# ---------------------------------------------------------------- bad input


def _copy(folder, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(folder, dst)
    return dst


def test_layer_out_of_range_says_how_many(tiny_llm_dir):
    with pytest.raises(IndexError, match=r"layer 4 is out of range: .* has 4 layers \(valid indices -4..3"):
        load_llm_block(str(tiny_llm_dir("llama")), layer=4)


def test_unknown_model_type(tiny_llm_dir, tmp_path):
    dst = _copy(tiny_llm_dir("llama"), tmp_path)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["model_type"] = "llamma"
    (dst / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedArchitectureError, match="tested families: llama, mistral"):
        load_llm_block(str(dst))


def test_non_decoder_model_is_refused(tmp_path):
    from transformers import ViTConfig

    ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    ).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match=r"not a decoder LLM.*tested families"):
        load_llm_block(str(tmp_path))


def test_missing_shard(tiny_llm_dir, tmp_path):
    dst = _copy(tiny_llm_dir("llama"), tmp_path)
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["model.layers.3.mlp.down_proj.weight"]
    (dst / shard).unlink()
    with pytest.raises(CheckpointError, match=f"shard '{shard}' listed in the index .* is missing"):
        load_llm_block(str(dst), layer=-1)
    load_llm_block(str(dst), layer=0)  # other layers never touch that shard


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_truncated_or_corrupt_safetensors(tiny_llm_dir, tmp_path, damage):
    dst = _copy(tiny_llm_dir("llama"), tmp_path)
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    path = dst / index["weight_map"]["model.layers.3.self_attn.q_proj.weight"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x07" * len(data))
    with pytest.raises(CheckpointError, match="truncated or corrupt: re-download"):
        load_llm_block(str(dst), layer=3)


def test_corrupt_gguf(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable GGUF file"):
        load_llm_block(str(bad))


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused_not_unpickled(tiny_llm_dir, tmp_path, capsys):
    shutil.copy(tiny_llm_dir("llama") / "config.json", tmp_path / "config.json")
    torch.save(
        {"model.layers.3.mlp.up_proj.weight": torch.zeros(1), "x": Evil()}, tmp_path / "pytorch_model.bin"
    )
    with pytest.raises(CheckpointError, match=r"refused to load .* Convert the checkpoint to safetensors"):
        load_llm_block(str(tmp_path))
    assert "this must never run" not in capsys.readouterr().out


def test_missing_path_in_offline_mode(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LLMSourceError, match="HF_HUB_OFFLINE=1 forbids downloading it"):
        load_llm_block("no-such-org/no-such-model")


def test_missing_local_path():
    with pytest.raises(LLMSourceError, match="not an existing file or folder"):
        load_llm_block("./does/not/exist")


def test_block_input_width_checked(tiny_llm_dir):
    block = load_llm_block(str(tiny_llm_dir("opt")))
    with pytest.raises(ValueError, match=r"expects tokens of shape \(B, N, 64\)"):
        block(torch.randn(1, 2, 63))


# ---------------------------------------------------------------- the real embedded LLM


@pytest.mark.slow
def test_real_smollm2_layer_matches_transformers_gguf_loading(smollm2_block):
    from transformers import AutoModelForCausalLM

    from rllm_zoo.llm import embedded_smollm2_path

    info = smollm2_block.info
    assert (info.architecture, info.width, info.layer, info.num_layers) == ("llama", 576, 29, 30)
    assert info.license == "apache-2.0" and info.source == rllm_zoo.DEFAULT_LLM
    path = embedded_smollm2_path()
    full = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    ref = full.model.layers[29].state_dict()
    mine = smollm2_block.layer.state_dict()
    assert set(ref) == set(mine)
    for name in ref:
        torch.testing.assert_close(mine[name], ref[name], atol=0, rtol=0, msg=name)
    x = torch.randn(2, 197, 576)
    with torch.no_grad():
        y = smollm2_block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_hub_id_resolves_through_the_hf_cache(tiny_llm_dir, tmp_path, monkeypatch):
    """A Hub id goes through huggingface_hub (here offline, from a populated cache)."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someorg--tiny-llama"
    snap = repo / "snapshots" / commit
    shutil.copytree(tiny_llm_dir("llama"), snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    block = load_llm_block("someorg/tiny-llama", layer=2)
    local = load_llm_block(str(tiny_llm_dir("llama")), layer=2)
    assert block.info.revision == commit and block.info.sha256 == local.info.sha256
    assert block.info.source == "someorg/tiny-llama"
    pinned = load_llm_block("someorg/tiny-llama", layer=2, revision=commit)
    assert pinned.info.sha256 == local.info.sha256
    with pytest.raises(LLMSourceError, match="HF_HUB_OFFLINE=1 forbids downloading"):
        load_llm_block("someorg/tiny-llama", revision="v9")
