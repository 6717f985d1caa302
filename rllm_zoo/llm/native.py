"""A pure-torch decoder layer for the LLaMA family, numerically the transformers layer it replaces.

transformers' decoder layers take keyword arguments, caches and attention back-ends that
TorchScript cannot compile and ``torch.fx`` cannot trace. In the booster's setting (no mask,
no rotary positions, no cache) a layer of the LLaMA family is a few lines of torch:
:class:`NativeDecoderLayer` holds the *same* tensors under the *same* names
(``self_attn.q_proj.weight``, ``mlp.gate_proj.weight``, ``input_layernorm.weight``...), so
state dicts, delta checkpoints and sha256 fingerprints do not change, while the model becomes
scriptable, fx-traceable, exportable and meta-device safe.

:func:`native_decoder_layer` converts a loaded transformers layer when its family is one of
:data:`NATIVE_FAMILIES` and every part is recognised, then checks the two agree on a small
input; anything else keeps the transformers layer (which still runs eagerly, under
``torch.compile`` and ``torch.export``).

Example:
    >>> from transformers import LlamaConfig
    >>> from transformers.models.llama.modeling_llama import LlamaDecoderLayer
    >>> cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4,
    ...                   num_key_value_heads=2, num_hidden_layers=1)
    >>> native = native_decoder_layer(LlamaDecoderLayer(cfg, 0), cfg)
    >>> type(native).__name__, sorted(native.state_dict())[:2]
    ('NativeDecoderLayer', ['input_layernorm.weight', 'mlp.down_proj.weight'])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NATIVE_FAMILIES", "NativeDecoderLayer", "native_decoder_layer"]

#: transformers ``model_type`` values with a native layer (pre-norm, q/k/v/o attention, gated MLP).
NATIVE_FAMILIES: tuple[str, ...] = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
)
#: families whose RMSNorm scales by ``1 + weight`` in float32 (Gemma) instead of ``weight``.
_OFFSET_NORM = ("gemma", "gemma2", "gemma3_text")
#: families whose layer norms the attention and MLP outputs too (sandwich norms).
_SANDWICH = ("gemma2", "gemma3_text")


class RMSNorm(nn.Module):
    """RMSNorm as the LLaMA (``weight * x``) or Gemma (``(1 + weight) * x``, in float32) family computes it."""

    def __init__(self, weight: torch.Tensor, eps: float, offset: bool) -> None:
        super().__init__()
        self.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight)
        self.eps = float(eps)
        self.offset = bool(offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.offset:
            return (y * (1.0 + self.weight.float())).to(x.dtype)
        return self.weight * y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}, offset={self.offset}"


class Attention(nn.Module):
    """Multi-head / grouped-query attention without positions, optionally causal and soft-capped."""

    def __init__(
        self,
        q_proj: nn.Linear,
        k_proj: nn.Linear,
        v_proj: nn.Linear,
        o_proj: nn.Linear,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        scaling: float,
        q_norm: RMSNorm | None = None,
        k_norm: RMSNorm | None = None,
        softcap: float = 0.0,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = q_proj, k_proj, v_proj, o_proj
        self.q_norm = q_norm if q_norm is not None else nn.Identity()
        self.k_norm = k_norm if k_norm is not None else nn.Identity()
        self.num_heads = int(num_heads)
        self.num_kv_heads = int(num_kv_heads)
        self.head_dim = int(head_dim)
        self.scaling = float(scaling)
        self.softcap = float(softcap)
        self.causal = bool(causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n = x.shape[0], x.shape[1]
        q = self.q_norm(self.q_proj(x).view(b, n, self.num_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        if self.softcap > 0.0:
            scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling
            scores = torch.tanh(scores / self.softcap) * self.softcap
            if self.causal:
                mask = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
                scores = scores.masked_fill(mask, float("-inf"))
            weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            out = torch.matmul(weights, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scaling)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))

    def extra_repr(self) -> str:
        return (
            f"heads={self.num_heads}, kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, "
            f"softcap={self.softcap}, causal={self.causal}"
        )


class GatedMLP(nn.Module):
    """``down(act(gate(x)) * up(x))`` with SiLU or GELU (exact or tanh)."""

    def __init__(self, gate_proj: nn.Linear, up_proj: nn.Linear, down_proj: nn.Linear, act: str) -> None:
        super().__init__()
        if act not in ("silu", "gelu", "gelu_tanh"):
            raise ValueError(f"unsupported activation {act!r}")
        self.gate_proj, self.up_proj, self.down_proj = gate_proj, up_proj, down_proj
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate_proj(x)
        if self.act == "silu":
            g = F.silu(g)
        elif self.act == "gelu_tanh":
            g = F.gelu(g, approximate="tanh")
        else:
            g = F.gelu(g)
        return self.down_proj(g * self.up_proj(x))

    def extra_repr(self) -> str:
        return f"act={self.act!r}"


class NativeDecoderLayer(nn.Module):
    """One pre-norm decoder layer (LLaMA, Mistral, Qwen2/3, Gemma 1/2/3) in plain torch.

    Built by :func:`native_decoder_layer` from a transformers layer; attribute names follow
    transformers, so ``state_dict()`` keys are those of the layer it replaces.
    """

    def __init__(
        self,
        self_attn: Attention,
        mlp: GatedMLP,
        input_layernorm: RMSNorm,
        post_attention_layernorm: RMSNorm,
        pre_feedforward_layernorm: RMSNorm | None = None,
        post_feedforward_layernorm: RMSNorm | None = None,
    ) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.mlp = mlp
        self.input_layernorm = input_layernorm
        self.post_attention_layernorm = post_attention_layernorm
        self.sandwich = pre_feedforward_layernorm is not None
        if pre_feedforward_layernorm is not None and post_feedforward_layernorm is not None:
            self.pre_feedforward_layernorm = pre_feedforward_layernorm
            self.post_feedforward_layernorm = post_feedforward_layernorm
        else:
            self.pre_feedforward_layernorm = nn.Identity()
            self.post_feedforward_layernorm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sandwich:  # Gemma 2/3: norms around attention and MLP outputs
            x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x)))
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


def _activation(act: Any) -> str | None:
    name = type(act).__name__
    if isinstance(act, nn.SiLU) or name in ("SiLUActivation",):
        return "silu"
    if name in ("GELUTanh", "PytorchGELUTanh") or (
        isinstance(act, nn.GELU) and getattr(act, "approximate", "none") == "tanh"
    ):
        return "gelu_tanh"
    if name == "GELUActivation" or (
        isinstance(act, nn.GELU) and getattr(act, "approximate", "none") == "none"
    ):
        return "gelu"
    return None


def _norm(module: Any, offset: bool) -> RMSNorm | None:
    weight = getattr(module, "weight", None)
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    if not isinstance(weight, torch.Tensor) or eps is None or "RMSNorm" not in type(module).__name__:
        return None
    return RMSNorm(weight, float(eps), offset)


def _linear(module: Any) -> nn.Linear | None:
    return module if type(module) is nn.Linear else None


def native_decoder_layer(
    layer: nn.Module, config: Any, causal: bool = False, check: bool = True
) -> NativeDecoderLayer | None:
    """The native twin of a transformers decoder ``layer``, or ``None`` when it is not one we know.

    The twin shares ``layer``'s tensors (no copy). With ``check`` (and real, non-meta tensors)
    both run on a small random input and must agree closely, else ``None`` is returned.
    """
    model_type = str(getattr(config, "model_type", ""))
    if model_type not in NATIVE_FAMILIES:
        return None
    offset = model_type in _OFFSET_NORM
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    if attn is None or mlp is None:
        return None
    projs = [_linear(getattr(attn, n, None)) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
    mlps = [_linear(getattr(mlp, n, None)) for n in ("gate_proj", "up_proj", "down_proj")]
    act = _activation(getattr(mlp, "act_fn", None))
    norms = {
        n: _norm(getattr(layer, n, None), offset) for n in ("input_layernorm", "post_attention_layernorm")
    }
    if any(p is None for p in projs + mlps) or act is None or any(v is None for v in norms.values()):
        return None
    q_norm = k_norm = None
    if hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
        q_norm, k_norm = (
            _norm(getattr(attn, "q_norm", None), offset),
            _norm(getattr(attn, "k_norm", None), offset),
        )
        if q_norm is None or k_norm is None:
            return None
    pre_ff = post_ff = None
    if model_type in _SANDWICH:
        pre_ff = _norm(getattr(layer, "pre_feedforward_layernorm", None), offset)
        post_ff = _norm(getattr(layer, "post_feedforward_layernorm", None), offset)
        if pre_ff is None or post_ff is None:
            return None
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    scaling = float(getattr(attn, "scaling", head_dim**-0.5))
    softcap = float(getattr(config, "attn_logit_softcapping", None) or 0.0)
    q, k, v, o = projs
    if q.out_features != heads * head_dim or k.out_features != kv_heads * head_dim or heads % kv_heads:
        return None
    gate, up, down = mlps
    native = NativeDecoderLayer(
        Attention(q, k, v, o, heads, kv_heads, head_dim, scaling, q_norm, k_norm, softcap, causal),
        GatedMLP(gate, up, down, act),
        norms["input_layernorm"],
        norms["post_attention_layernorm"],
        pre_ff,
        post_ff,
    )
    if set(native.state_dict()) != set(layer.state_dict()):
        return None  # a part we do not model (extra norms, biases, scales): keep transformers'
    if check and not any(t.is_meta for t in layer.state_dict().values()):
        if not _agrees(native, layer, int(config.hidden_size), causal, head_dim):
            return None
    return native


@torch.no_grad()
def _agrees(native: nn.Module, layer: nn.Module, width: int, causal: bool, head_dim: int) -> bool:
    """Both layers on one small random input (float32 copy semantics kept): close enough?"""
    p = next(iter(layer.state_dict().values()))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 5, width, generator=gen, device="cpu").to(dtype=p.dtype, device=p.device)
    ones = torch.ones(1, 5, head_dim, dtype=p.dtype, device=p.device)
    kwargs: dict[str, Any] = {"position_embeddings": (ones, torch.zeros_like(ones))}
    if causal:
        mask = torch.full((5, 5), torch.finfo(p.dtype).min, dtype=p.dtype, device=p.device).triu(1)
        kwargs["attention_mask"] = mask[None, None]
    try:
        ref = layer(x, **kwargs)
    except TypeError:  # a layer that takes no position embeddings
        kwargs.pop("position_embeddings")
        ref = layer(x, **kwargs)
    ref = ref[0] if isinstance(ref, tuple) else ref
    out = native(x)
    if not torch.isfinite(ref).all():
        return bool(torch.equal(torch.isfinite(out), torch.isfinite(ref)))
    scale = max(float(ref.abs().max()), 1.0)
    tol = 1e-4 if p.dtype == torch.float32 else 3e-2
    return bool(float((out.float() - ref.float()).abs().max()) <= tol * scale)
