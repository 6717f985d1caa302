"""Shared fixtures: tiny random LLM checkpoints and the embedded SmolLM2 block."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
#: a UNETR small enough for a test (32^3 input, width 32), boosted or plain
TINY_UNETR = dict(
    in_channels=1, out_channels=2, img_size=32, feature_size=4, hidden_size=32, mlp_dim=64, num_heads=4
)


def tiny_config(model_type: str):
    """A tiny transformers config of ``model_type`` (4 layers, width 64, GQA where supported)."""
    from transformers import AutoConfig

    common = dict(vocab_size=128, num_hidden_layers=4, hidden_size=64, num_attention_heads=4)
    extra: dict = {
        "llama": dict(intermediate_size=96, num_key_value_heads=2),
        "mistral": dict(intermediate_size=96, num_key_value_heads=2, sliding_window=None),
        "qwen2": dict(intermediate_size=96, num_key_value_heads=2),
        "qwen3": dict(intermediate_size=96, num_key_value_heads=2, head_dim=16),
        "gemma": dict(intermediate_size=96, num_key_value_heads=1, head_dim=16),
        "gemma2": dict(intermediate_size=96, num_key_value_heads=2, head_dim=16),
        "gemma3_text": dict(intermediate_size=96, num_key_value_heads=2, head_dim=16, sliding_window=8),
        "phi3": dict(intermediate_size=96, num_key_value_heads=2, pad_token_id=0),
        "gpt2": dict(n_embd=64, n_layer=4, n_head=4, n_positions=64),
        "opt": dict(ffn_dim=96, word_embed_proj_dim=64, max_position_embeddings=64),
    }[model_type]
    if model_type == "gpt2":
        common = dict(vocab_size=128)
    return AutoConfig.for_model(model_type, **common, **extra, bos_token_id=None, eos_token_id=None)


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory):
    """Factory: save a tiny random causal LM of a family as sharded safetensors; cached per family."""
    cache: dict[str, Path] = {}

    def make(model_type: str) -> Path:
        if model_type not in cache:
            from transformers import AutoModelForCausalLM

            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(tiny_config(model_type), attn_implementation="eager")
            # make every weight non-trivial (norm weights start at 1 or 0)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.05)
            out = tmp_path_factory.mktemp(f"tiny-{model_type}")
            model.save_pretrained(out, max_shard_size="50KB")
            cache[model_type] = out
        return cache[model_type]

    return make


@pytest.fixture(scope="session")
def smollm2_block():
    """The real embedded SmolLM2-135M layer -1 (loaded once per test session)."""
    import rllm_zoo

    return rllm_zoo.load_llm_block("smollm2", layer=-1)


def write_medmnist_npz(root: Path, flag: str, n: tuple[int, int, int] = (32, 16, 16), size: int = 28) -> Path:
    """A small file in the official MedMNIST format (keys ``<split>_images`` / ``<split>_labels``).

    Labels carry signal: the image mean brightness depends on the class, so a model can learn.
    """
    import medmnist
    import numpy as np

    info = medmnist.INFO[flag]
    n_labels = len(info["label"])
    is_3d = flag.endswith("3d")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        if info["task"].startswith("multi-label"):
            labels = rng.integers(0, 2, size=(count, n_labels))
            level = labels[:, 0]
        else:
            labels = np.arange(count).reshape(-1, 1) % n_labels
            level = labels[:, 0]
        shape = (count, size, size, size) if is_3d else (count, size, size)
        if not is_3d and info["n_channels"] == 3:
            shape = (*shape, 3)
        base = rng.integers(0, 60, size=shape)
        bright = (level * (150 // max(n_labels - 1, 1))).reshape((-1,) + (1,) * (len(shape) - 1))
        arrays[f"{split}_images"] = (base + bright).clip(0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    path = root / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(scope="session")
def medmnist_root(tmp_path_factory):
    """A data root with small synthetic files for a few flags of each task type."""
    root = tmp_path_factory.mktemp("medmnist")
    for flag in ("dermamnist", "pneumoniamnist", "chestmnist", "retinamnist"):
        write_medmnist_npz(root, flag)
    write_medmnist_npz(root, "nodulemnist3d", n=(16, 8, 8))
    return root


# ---------------------------------------------------------------------------------------------------------------
# A local Hugging Face Hub (tests/hub_server.py) for tests that download or upload through huggingface_hub.


@pytest.fixture(scope="session")
def local_hub_server():
    """A :class:`hub_server.LocalHubServer` serving on 127.0.0.1 for the whole session.

    Repos persist across tests: make fresh ones with ``local_hub.new_repo_id()``. Prefer ``local_hub``, which also
    points the client at the server.
    """
    from hub_server import LocalHubServer

    server = LocalHubServer().start()
    yield server
    server.stop()


@pytest.fixture
def local_hub(local_hub_server, monkeypatch, tmp_path):
    """The local Hub, with this process's huggingface_hub pointed at it for the test (fresh cache and HF_HOME).

    Sets HF_ENDPOINT, HF_HOME/HF_HUB_CACHE (under ``tmp_path / "hf_home"``), a dummy HF_TOKEN, HF_HUB_DISABLE_XET=1,
    HF_HUB_DISABLE_TELEMETRY=1 and HF_HUB_OFFLINE=0 in ``os.environ`` and patches the constants huggingface_hub
    computed from them at import (see ``hub_server.point_hub_client``); the request log and faults start empty.

    Usage::

        def test_x(local_hub):
            repo = local_hub.new_repo_id()
            sha = local_hub.add_files(repo, {"config.json": "{}"}, tag="v1")  # direct seeding, no HTTP
            path = hf_hub_download(repo, "config.json")
            local_hub.inject("drop", "config.json", method="GET")  # fault injection
            subprocess.run([sys.executable, "-c", code], env={**os.environ, **local_hub.env})  # same endpoint
            local_hub.set_offline()  # HF_HUB_OFFLINE=1: constants, os.environ and local_hub.env
            hf_hub_download(repo, "config.json")  # now served from the cache, no request is made
    """
    from hub_server import point_hub_client, reset_hub_client

    local_hub_server.reset_stats()
    local_hub_server.clear_faults()
    point_hub_client(monkeypatch, local_hub_server, tmp_path / "hf_home")
    yield local_hub_server
    local_hub_server.clear_faults()
    reset_hub_client()
    local_hub_server.env = {}
    local_hub_server.hf_home = None
    local_hub_server._patcher = None


def pytest_collection_modifyitems(items):
    """``test_fault*`` tests are fault-injection cases (marker ``fault``: rows of docs/reliability.md)."""
    for item in items:
        if item.name.startswith("test_fault"):
            item.add_marker(pytest.mark.fault)
