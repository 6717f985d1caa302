"""The LLM booster: one frozen transformer block between two trainable adapters.

This module depends on torch only. With ``z`` the encoder tokens, ``h = A_in(z)``
and ``B`` the frozen block (followed by a unit-weight RMSNorm, as in the R-LLM
code), the variants are::

    residual  z' = A_out(B(h) + h)        # R-LLM, the default
    out       z' = A_out(B(h)) + z
    hybrid    z' = A_out(B(h) + h) + z
    none      z' = A_out(B(h))            # LM4VisualEncoding
    mlp       z' = A_out(h) + z           # control, no LLM

Example:
    >>> import torch
    >>> from rllm_zoo.booster import LLMBooster
    >>> block = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU())
    >>> booster = LLMBooster(dim=32, block=block, llm_width=64)
    >>> booster(torch.randn(2, 50, 32)).shape
    torch.Size([2, 50, 32])
    >>> [n for n, _ in booster.named_trainable_parameters()]
    ['adapter_in.weight', 'adapter_out.weight']
    >>> sorted(frozen_state_names(booster))     # the frozen block's tensors are buffers
    ['block.0.bias', 'block.0.weight']

A frozen block holds its weights as **buffers**: they stay in ``state_dict()`` under the same
names (checkpoints, delta weights and sha256 checks are unchanged) but are not parameters, so
no optimizer, DDP reducer or "every parameter gets a gradient" contract ever sees them.
``freeze=False`` (fine-tuning, the ablation) keeps them as parameters.
"""

from collections.abc import Iterator

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

__all__ = [
    "VARIANTS",
    "LLMBooster",
    "UnitRMSNorm",
    "autocast_on",
    "frozen_state_names",
    "is_tracing",
    "parameter_counts",
    "trainable_parameters",
]

VARIANTS: tuple[str, ...] = ("residual", "out", "hybrid", "none", "mlp")


class UnitRMSNorm(nn.Module):
    """RMSNorm with a fixed unit weight (no parameters), computed in float32.

    Example:
        >>> UnitRMSNorm(eps=0.0)(torch.full((1, 2, 4), 3.0)).tolist()
        [[[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]]
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


#: attribute of a block listing the parameters :func:`_params_to_buffers` turned into buffers
_FROZEN_ATTR = "_rllm_zoo_frozen"


def _params_to_buffers(module: nn.Module) -> None:
    """Re-register every parameter of ``module`` as a (persistent) buffer of the same name."""
    moved: list[str] = list(getattr(module, _FROZEN_ATTR, []))
    for prefix, m in module.named_modules():
        for name, p in list(m._parameters.items()):
            if p is None:
                continue
            del m._parameters[name]
            m.register_buffer(name, p.detach(), persistent=True)
            moved.append(f"{prefix}.{name}" if prefix else name)
    object.__setattr__(module, _FROZEN_ATTR, moved)


def _buffers_to_params(module: nn.Module) -> None:
    """Undo :func:`_params_to_buffers` (trainable parameters again)."""
    for full in getattr(module, _FROZEN_ATTR, []):
        prefix, _, name = full.rpartition(".")
        m = module.get_submodule(prefix) if prefix else module
        t = m._buffers.pop(name)
        m.register_parameter(name, nn.Parameter(t, requires_grad=True))
    object.__setattr__(module, _FROZEN_ATTR, [])


def _block_width(block: nn.Module | None) -> int | None:
    """The token width a block declares (``block.width`` or ``block.info.width``), if any."""
    if block is None:
        return None
    width = getattr(block, "width", None)
    if width is None:
        width = getattr(getattr(block, "info", None), "width", None)
    return int(width) if width is not None else None


class LLMBooster(nn.Module):
    """Boost ViT tokens with one frozen LLM block (Lai et al., CVPR-W 2024).

    Args:
        dim: width of the encoder tokens ``z`` (the ViT embedding size).
        block: the frozen transformer block, mapping ``(B, N, llm_width)`` to the same
            shape (for example ``rllm_zoo.load_llm_block("smollm2")``). ``None`` only for
            the ``mlp`` variant.
        variant: one of :data:`VARIANTS`; ``residual`` is the paper's R-LLM.
        llm_width: width of the block's tokens. Inferred from ``block.width`` /
            ``block.info.width`` when omitted; required for ``mlp`` without a block.
        post_norm: apply a unit-weight RMSNorm after the block (the R-LLM code does).
        norm_eps: epsilon of that RMSNorm.
        freeze: keep the block frozen: no gradients for its parameters, always in eval
            mode, and never returned by :meth:`trainable_parameters`. ``False`` fine-tunes the
            block (its parameters get gradients), the ablation the paper found to hurt.
        adapter_bias: give the adapters a bias (the paper's adapters have none).

    Under ``torch.autocast`` the block runs in the caller's autocast dtype; outside of
    autocast it runs in the dtype of its parameters and the result is cast back to the
    input dtype.
    """

    def __init__(
        self,
        dim: int,
        block: nn.Module | None = None,
        variant: str = "residual",
        llm_width: int | None = None,
        post_norm: bool = True,
        norm_eps: float = 1e-6,
        freeze: bool = True,
        adapter_bias: bool = False,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown booster variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        declared = _block_width(block)
        if llm_width is not None and declared is not None and int(llm_width) != declared:
            raise ValueError(
                f"llm_width={llm_width} does not match the block's width {declared}; "
                f"drop llm_width or pass llm_width={declared}"
            )
        width = llm_width if llm_width is not None else declared
        if width is None:
            raise ValueError(
                "cannot tell the LLM width: pass llm_width=... or a block with a `width` attribute"
            )
        if block is None and variant != "mlp":
            raise ValueError(f"variant {variant!r} needs an LLM block; only 'mlp' runs without one")
        self.dim = dim
        self.llm_width = int(width)
        self.variant = variant
        self.freeze = bool(freeze)
        self.adapter_in = nn.Linear(dim, self.llm_width, bias=adapter_bias)
        self.adapter_out = nn.Linear(self.llm_width, dim, bias=adapter_bias)
        # The mlp control never calls a block: do not carry one around.
        self.block = block if variant != "mlp" else None
        self.post_norm = UnitRMSNorm(norm_eps) if (post_norm and self.block is not None) else nn.Identity()
        if self.block is not None:
            # frozen (the paper): weights as buffers, always eval; unfrozen: the block is fine-tuned
            self._hold_block(self.freeze)

    def set_frozen(self, freeze: bool) -> "LLMBooster":
        """Freeze (weights become buffers, eval mode) or unfreeze (parameters, trainable) the block."""
        if self.block is not None and bool(freeze) != self.freeze:
            self.freeze = bool(freeze)
            self._hold_block(self.freeze)
        return self

    def _hold_block(self, frozen: bool) -> None:
        if frozen:
            _params_to_buffers(self.block)
            self.block.eval()
        else:
            _buffers_to_params(self.block)
            self.block.requires_grad_(True)
            self.block.train(self.training)

    def train(self, mode: bool = True) -> "LLMBooster":
        super().train(mode)
        if self.block is not None and self.freeze:
            self.block.eval()  # a frozen block never runs dropout
        return self

    def run_block(self, h: torch.Tensor) -> torch.Tensor:
        """``B(h)``: the block followed by the optional unit RMSNorm."""
        assert self.block is not None
        return self._block_out(h)

    def _block_out(self, h: torch.Tensor) -> torch.Tensor:
        x = h
        tracing = False
        if not torch.jit.is_scripting():
            tracing = is_tracing()
            # outside autocast the block runs in its own dtype; under autocast, in the caller's
            # (fx records the graph outside autocast)
            if tracing or not autocast_on(h):
                dtype = _float_dtype(self.block)
                if dtype is not None:
                    x = h.to(dtype)
        out = self.block(x)
        if not torch.jit.is_scripting():
            if not tracing and out.shape != h.shape:
                raise RuntimeError(
                    f"the LLM block returned shape {tuple(out.shape)} for input {tuple(h.shape)}; "
                    "a booster block must map (B, N, llm_width) to the same shape"
                )
        return self.post_norm(out).to(h.dtype)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if not is_tracing() and (z.ndim != 3 or z.shape[-1] != self.dim):
                raise ValueError(f"expected tokens of shape (B, N, {self.dim}), got {tuple(z.shape)}")
        h = self.adapter_in(z)
        v = self.variant
        if self.block is None:  # the mlp control
            return self.adapter_out(h) + z
        else:
            b = self._block_out(h)
            if v == "residual":
                return self.adapter_out(b + h)
            if v == "out":
                return self.adapter_out(b) + z
            if v == "hybrid":
                return self.adapter_out(b + h) + z
            return self.adapter_out(b)  # none

    @torch.jit.unused
    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) pairs an optimizer should receive."""
        for name, p in self.named_parameters():
            if p.requires_grad:
                yield name, p

    @torch.jit.unused
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters an optimizer should receive: the adapters (and the block if unfrozen)."""
        return [p for _, p in self.named_trainable_parameters()]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, llm_width={self.llm_width}, variant={self.variant!r}, freeze={self.freeze}"


def autocast_on(x: torch.Tensor) -> bool:
    """``torch.is_autocast_enabled`` for ``x``'s device; False where autocast does not exist (meta).

    Example:
        >>> autocast_on(torch.zeros(1)), autocast_on(torch.zeros(1, device="meta"))
        (False, False)
    """
    kind = x.device.type
    return kind in ("cpu", "cuda", "xpu", "mps", "hpu") and torch.is_autocast_enabled(kind)


def is_tracing() -> bool:
    """True under ``torch.jit.trace`` or ``torch.fx`` symbolic tracing, where input checks step aside.

    The checks compare shapes in Python: a tracer would bake their outcome into the graph (and
    warn), and fx proxies cannot be compared at all. Every model of the zoo skips them there (and
    under TorchScript, with ``if not torch.jit.is_scripting()``); eager calls, ``torch.compile``
    and ``torch.export`` keep them.

    Example:
        >>> is_tracing()
        False
    """
    return torch.jit.is_tracing() or is_fx_symbolic_tracing()


def _float_dtype(block: nn.Module) -> torch.dtype | None:
    for t in block.buffers():
        if t.is_floating_point():
            return t.dtype
    for t in block.parameters():
        if t.is_floating_point():
            return t.dtype
    return None


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of any model that require gradients (frozen booster blocks excluded).

    Example:
        >>> opt = torch.optim.AdamW(trainable_parameters(torch.nn.Linear(2, 2)), lr=1e-3)
    """
    return [p for p in model.parameters() if p.requires_grad]


def frozen_state_names(model: nn.Module) -> set[str]:
    """State-dict names of the frozen LLM block tensors of every booster in ``model``.

    These are what a delta checkpoint leaves out and what is re-read from the LLM source.

    Example:
        >>> frozen_state_names(torch.nn.Linear(2, 2))
        set()
    """
    names: set[str] = set()
    for prefix, m in model.named_modules():
        if isinstance(m, LLMBooster) and m.block is not None and m.freeze:
            head = f"{prefix}.block." if prefix else "block."
            names |= {head + k for k in m.block.state_dict()}
    names |= {n for n, p in model.named_parameters() if not p.requires_grad}
    return names


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """``(trainable, frozen)`` element counts: frozen counts frozen LLM blocks and frozen parameters.

    Example:
        >>> parameter_counts(torch.nn.Linear(2, 2))
        (6, 0)
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    state = model.state_dict(keep_vars=True)
    frozen = sum(state[n].numel() for n in frozen_state_names(model) if n in state)
    return trainable, frozen
