"""LLM sources: one frozen decoder layer from a real checkpoint (layer above the booster)."""

from .architectures import TESTED_FAMILIES, UnsupportedArchitectureError
from .block import BlockInfo, LLMBlock, tensor_sha256
from .checkpoint import CheckpointError
from .hub_ranges import HubFetchError, LayerNotCachedError
from .reference import LLMChecksumError, may_redistribute, referenced_block
from .sources import (
    ALIASES,
    DEFAULT_LLM,
    LLMSourceError,
    embedded_smollm2_path,
    llm_block_from_config,
    load_llm_block,
)

__all__ = [
    "ALIASES",
    "DEFAULT_LLM",
    "TESTED_FAMILIES",
    "BlockInfo",
    "CheckpointError",
    "HubFetchError",
    "LLMBlock",
    "LLMChecksumError",
    "LLMSourceError",
    "LayerNotCachedError",
    "UnsupportedArchitectureError",
    "embedded_smollm2_path",
    "llm_block_from_config",
    "load_llm_block",
    "may_redistribute",
    "referenced_block",
    "tensor_sha256",
]
