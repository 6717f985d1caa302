"""Shared fixtures: tiny random LLM checkpoints and the embedded SmolLM2 block."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def tiny_config(model_type: str):
    """A tiny transformers config of ``model_type`` (4 layers, width 64, GQA where supported)."""
    from transformers import AutoConfig

    common = dict(vocab_size=128, num_hidden_layers=4, hidden_size=64, num_attention_heads=4)
    extra: dict = {
        "llama": dict(intermediate_size=96, num_key_value_heads=2),
        "mistral": dict(intermediate_size=96, num_key_value_heads=2, sliding_window=None),
        "qwen2": dict(intermediate_size=96, num_key_value_heads=2),
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
