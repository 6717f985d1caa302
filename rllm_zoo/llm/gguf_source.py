"""Read one layer of a GGUF file: only that layer's tensors are dequantised.

Name mapping and tensor fix-ups (LLaMA's q/k permutation, Gemma's norm offset...)
come from transformers' own GGUF integration, applied per tensor.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError
from .gguf_index import GGUFIndex

__all__ = ["GGUFCheckpoint", "gguf_config", "gguf_license"]


def _reader(path: Path):
    """A (cached) lean index of the file; the cache key includes size and mtime."""
    st = Path(path).stat()
    return _cached_reader(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _cached_reader(path: str, size: int, mtime_ns: int) -> GGUFIndex:
    try:
        return GGUFIndex(path)
    except (ValueError, OSError, IndexError, KeyError, struct.error) as e:
        raise CheckpointError(
            f"{path} is not a readable GGUF file ({type(e).__name__}: {e}); it may be truncated or "
            "corrupt: re-download it"
        ) from e


def gguf_config(path: str | os.PathLike):
    """The transformers config stored in a GGUF file's metadata (parsed once per file)."""
    path = Path(path)
    _reader(path)  # clear error for corrupt files before transformers parses them
    st = path.stat()
    return copy.deepcopy(_cached_config(str(path.resolve()), st.st_size, st.st_mtime_ns))


def cache_dir() -> Path:
    """rllm_zoo's own cache folder (``$RLLM_ZOO_CACHE``, else ``~/.cache/rllm_zoo``)."""
    return Path(os.environ.get("RLLM_ZOO_CACHE", Path.home() / ".cache" / "rllm_zoo"))


@functools.lru_cache(maxsize=4)
def _cached_config(path: str, size: int, mtime_ns: int):
    """Parse the config once per file version; later processes read it from a small JSON cache.

    transformers parses the whole GGUF metadata (tokenizer included) for the config, which
    takes seconds for a 49k-token vocabulary; the cached JSON holds only the config.
    """
    from transformers import AutoConfig

    key = hashlib.sha256(f"{path}|{size}|{mtime_ns}".encode()).hexdigest()[:32]
    cached = cache_dir() / "gguf-config" / f"{key}.json"
    if cached.is_file():
        try:
            d = json.loads(cached.read_text(encoding="utf-8"))
            return AutoConfig.for_model(d.pop("model_type"), **d)
        except (ValueError, KeyError, TypeError):
            pass  # stale or damaged cache entry: rebuild it below
    p = Path(path)
    try:
        config = AutoConfig.from_pretrained(str(p.parent), gguf_file=p.name)
    except (ValueError, KeyError, OSError) as e:
        raise CheckpointError(f"cannot read the model config from {p} ({e}); is it an LLM GGUF file?") from e
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(config.to_json_string(use_diff=False), encoding="utf-8")
        os.replace(tmp, cached)
    except OSError:
        pass  # a read-only home is fine: the in-process cache still applies
    return config


def gguf_license(path: str | os.PathLike) -> str | None:
    """``general.license`` from the GGUF metadata, if present."""
    value = _reader(Path(path)).fields.get("general.license")
    return str(value) if isinstance(value, str) else None


class _NamesOnly:
    """The part of a model that ``get_gguf_hf_weights_map`` reads: config and names."""

    def __init__(self, config, names: Iterable[str]) -> None:
        self.config = config
        self._names = list(names)

    def state_dict(self) -> dict[str, None]:
        return dict.fromkeys(self._names)

    def named_children(self) -> list:
        return []


class GGUFCheckpoint:
    """Per-tensor reader of a GGUF file, keyed by transformers parameter names.

    Args:
        path: the .gguf file.
        names: the transformers parameter names to map (for example one layer's,
            ``model.layers.29.self_attn.q_proj.weight``...).
        config: the model's transformers config.
    """

    #: tensors are freshly dequantised arrays, not views of the file: no copy needed
    owns_tensors = True

    def __init__(self, path: str | os.PathLike, names: Iterable[str], config) -> None:
        from transformers.modeling_gguf_pytorch_utils import (
            TENSOR_PROCESSORS,
            TensorProcessor,
            get_gguf_hf_weights_map,
        )

        self.path = Path(path)
        self.index = _reader(self.path)
        self.architecture = str(self.index.fields.get("general.architecture", ""))
        processor_cls = TENSOR_PROCESSORS.get(self.architecture, TensorProcessor)
        self.processor = processor_cls(config=config.to_dict())
        # transformers' own name mapping, run over just the wanted names (one map build)
        gguf_to_hf = get_gguf_hf_weights_map(_NamesOnly(config, names), self.processor)
        self.hf_to_gguf = {hf: g for g, hf in gguf_to_hf.items() if g in self.index.tensors}
        self.folder = self.path.parent

    def keys(self) -> list[str]:
        return list(self.hf_to_gguf)

    def iter_tensors(self, names: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        for name in names:
            gname = self.hf_to_gguf[name]
            try:
                weights = self.index.dequantize(gname)
            except (ValueError, IndexError, KeyError) as e:
                raise CheckpointError(f"cannot dequantise {gname} from {self.path}: {e}") from e
            result = self.processor.process(
                weights=weights, name=gname, tensor_key_mapping={}, parsed_parameters={}
            )
            weights = result.weights
            # own the memory (a permuted view or a read-only map must not back a parameter)
            if not (weights.flags.owndata and weights.flags.writeable and weights.flags.c_contiguous):
                weights = np.array(weights, copy=True, order="C")
            yield name, torch.from_numpy(weights)

    def read(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        return dict(self.iter_tensors(names))
