"""LLM sources: one frozen decoder layer from a real checkpoint (layer above the booster)."""

from .architectures import TESTED_FAMILIES, UnsupportedArchitectureError
from .block import BlockInfo, LLMBlock, tensor_sha256
from .checkpoint import CheckpointError
from .sources import ALIASES, DEFAULT_LLM, LLMSourceError, embedded_smollm2_path, load_llm_block

__all__ = [
    "ALIASES",
    "DEFAULT_LLM",
    "TESTED_FAMILIES",
    "BlockInfo",
    "CheckpointError",
    "LLMBlock",
    "LLMSourceError",
    "UnsupportedArchitectureError",
    "embedded_smollm2_path",
    "load_llm_block",
    "tensor_sha256",
]
