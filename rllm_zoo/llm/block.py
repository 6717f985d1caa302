"""A single decoder layer of a pretrained LLM, runnable on its own.

In the paper's setting the layer runs with no attention mask (bidirectional
attention) and no rotary positions (identity rotation: cos = 1, sin = 0). For
ablations, ``causal=True`` adds a causal mask and ``rotary=True`` applies the
model's own rotary embedding at positions ``0..N-1``; with both on, the block
reproduces the layer exactly as it runs inside the full model.
"""

import hashlib
import inspect
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..booster import autocast_on, is_tracing

__all__ = ["BlockInfo", "LLMBlock", "TensorHasher", "tensor_sha256"]


@dataclass(frozen=True)
class BlockInfo:
    """Where a block came from: enough to find, verify and cite it again."""

    architecture: str  # transformers model_type, e.g. "llama"
    width: int  # hidden size of the block's tokens
    layer: int  # non-negative layer index in the source model
    num_layers: int  # layers in the source model
    source: str  # model id, folder, GGUF file, or "random:<...>"
    revision: str | None = None  # Hub revision (commit) when known
    sha256: str | None = None  # of the layer's tensors as stored (see tensor_sha256)
    license: str | None = None  # licence of the weights, when known
    dtype: str = "float32"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class TensorHasher:
    """Streaming SHA-256 over (name, dtype, shape, bytes) of tensors fed in any order.

    Names are sorted at the end, so the digest depends on the set of tensors only.
    ``prefix`` is stripped from names, so the digest does not depend on where the layer
    sits in a checkpoint (``model.layers.29.`` vs ``layers.29.``).
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._parts: dict[str, str] = {}

    def update(self, name: str, t: torch.Tensor) -> None:
        t = t.detach().contiguous().cpu()
        key = name[len(self.prefix) :] if self.prefix and name.startswith(self.prefix) else name
        h = hashlib.sha256(f"{key}|{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.view(-1).view(torch.uint8).numpy().data)
        self._parts[key] = h.hexdigest()

    def hexdigest(self) -> str:
        h = hashlib.sha256()
        for key in sorted(self._parts):
            h.update(f"{key}:{self._parts[key]}\n".encode())
        return h.hexdigest()


def tensor_sha256(tensors: dict[str, torch.Tensor], prefix: str = "") -> str:
    """SHA-256 of a set of named tensors (see :class:`TensorHasher`).

    Example:
        >>> a = tensor_sha256({"model.layers.0.w": torch.ones(2)}, prefix="model.layers.0.")
        >>> a == tensor_sha256({"layers.0.w": torch.ones(2)}, prefix="layers.0.")
        True
    """
    hasher = TensorHasher(prefix)
    for name, t in tensors.items():
        hasher.update(name, t)
    return hasher.hexdigest()


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False


class LLMBlock(nn.Module):
    """Run one decoder layer of an LLM on ``(B, N, width)`` tokens.

    Usually made by :func:`rllm_zoo.load_llm_block`. Frozen by default (no gradients).

    Layers of the LLaMA family (:data:`~rllm_zoo.llm.native.NATIVE_FAMILIES`) run as a pure-torch
    twin of the transformers layer (same tensors, same state-dict names; checked against the
    transformers layer when built), so models holding the block can be scripted, fx-traced,
    exported and built on the meta device. Other families, and the ``use_rotary`` ablation, run
    the transformers layer itself (eager, ``torch.compile`` and ``torch.export``).

    Args:
        layer: the transformers decoder layer (``LlamaDecoderLayer``, ``GPT2Block``...).
        info: its :class:`BlockInfo`.
        rotary: the model's rotary embedding module, or ``None``.
        causal: apply a causal mask (ablation; the paper uses none).
        use_rotary: rotate queries and keys at positions ``0..N-1`` (ablation; the paper does not).
        layer_type: for models with per-layer attention types (Gemma 3), the layer's type.
        config: the model's (text) config; enables the native twin.
    """

    __jit_unused_properties__ = ["rotary"]  # noqa: RUF012 - TorchScript reads this class attribute

    def __init__(
        self,
        layer: nn.Module,
        info: BlockInfo,
        rotary: nn.Module | None = None,
        causal: bool = False,
        use_rotary: bool = False,
        layer_type: str | None = None,
        config: object | None = None,
    ) -> None:
        super().__init__()
        self.info = info
        self.width = info.width
        self.causal = bool(causal)
        self.use_rotary = bool(use_rotary)
        self.layer_type = layer_type
        if config is not None:
            self.config = config
        if not self.causal:
            for m in layer.modules():
                if hasattr(m, "is_causal"):
                    m.is_causal = False
        native = None
        if config is not None and not self.use_rotary:
            from .native import native_decoder_layer

            native = native_decoder_layer(layer, config, causal=self.causal)
        self.native = native is not None
        self.layer = native if native is not None else layer
        self._takes_position_embeddings = (not self.native) and _accepts(layer.forward, "position_embeddings")
        if self._takes_position_embeddings and rotary is None:
            raise ValueError(
                f"{type(layer).__name__} expects rotary position embeddings but no rotary module was given"
            )
        # Kept out of the module tree: its buffers are derived from the config, not weights.
        self._rotary = [rotary] if rotary is not None and not self.native else []
        self._rotary_dim: int | None = None
        if not self.native:
            if self._takes_position_embeddings and not self.use_rotary:
                # the identity rotation's width, found now (no state set on a first forward)
                cos, _ = self._rotary_call(torch.zeros(1, 1, self.width), torch.zeros(1, 1, dtype=torch.long))
                self._rotary_dim = int(cos.shape[-1])
        self.requires_grad_(False)
        self.eval()
        if torch.get_default_device().type == "meta":
            self.to("meta")  # built under `with torch.device("meta")`: shapes only, like the model around it

    @property
    def rotary(self) -> nn.Module | None:
        return self._rotary[0] if self._rotary else None

    def _rotary_call(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rot = self.rotary
        assert rot is not None
        kwargs = {}
        if self.layer_type is not None and _accepts(rot.forward, "layer_type"):
            kwargs["layer_type"] = self.layer_type
        if x.device.type != "meta":
            rot.to(x.device)
        return rot(x, position_ids, **kwargs)

    def _position_embeddings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        if self.use_rotary:
            pos = torch.arange(n, device=x.device).unsqueeze(0).expand(b, n)
            return self._rotary_call(x, pos)
        assert self._rotary_dim is not None
        # identity rotation: cos = 1, sin = 0 (broadcasts over batch and tokens)
        dtype = x.dtype if not autocast_on(x) else torch.float32
        ones = torch.ones(1, 1, self._rotary_dim, dtype=dtype, device=x.device)
        return ones.expand(b, n, -1), torch.zeros_like(ones).expand(b, n, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if not is_tracing() and (x.ndim != 3 or x.shape[-1] != self.width):
                raise ValueError(
                    f"{self.info.architecture} layer {self.info.layer} expects tokens of shape "
                    f"(B, N, {self.width}), got {tuple(x.shape)}"
                )
        if self.native:
            return self.layer(x)
        return self._forward_transformers(x)

    @torch.jit.unused
    def _forward_transformers(self, x: torch.Tensor) -> torch.Tensor:
        kwargs: dict = {}
        if self._takes_position_embeddings:
            kwargs["position_embeddings"] = self._position_embeddings(x)
        if self.causal:
            n = x.shape[1]
            mask = torch.full((n, n), torch.finfo(x.dtype).min, dtype=x.dtype, device=x.device).triu(1)
            kwargs["attention_mask"] = mask[None, None].expand(x.shape[0], 1, n, n)
        out = self.layer(x, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def extra_repr(self) -> str:
        i = self.info
        return (
            f"source={i.source!r}, architecture={i.architecture!r}, layer={i.layer}/{i.num_layers}, "
            f"width={i.width}, causal={self.causal}, rotary={self.use_rotary}, native={self.native}"
        )
