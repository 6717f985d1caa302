"""Build the R-LLM booster of a MONAI network from its plain-argument options.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Tiny(nn.Linear):          # a stand-in "LLM block" with a declared width
    ...     width = 16
    ...     def __init__(self): super().__init__(16, 16)
    >>> booster = build_booster(32, llm=Tiny())
    >>> booster(torch.randn(2, 5, 32)).shape
    torch.Size([2, 5, 32])
    >>> build_booster(32, use_booster=False) is None
    True
    >>> build_booster(32, llm=None).variant       # no LLM: the MLP control
    'mlp'
"""

from __future__ import annotations

from torch import nn

from ..booster import VARIANTS, LLMBooster
from ..llm import referenced_block

__all__ = ["DEFAULT_MLP_WIDTH", "build_booster"]

#: adapter width of the no-LLM control when neither ``llm`` nor ``llm_width`` tells one
#: (SmolLM2-135M's width, so the control matches the default booster's adapters).
DEFAULT_MLP_WIDTH = 576


def _declared_width(block: nn.Module) -> int | None:
    width = getattr(block, "width", None)
    if width is None:
        width = getattr(getattr(block, "info", None), "width", None)
    return int(width) if width is not None else None


def build_booster(
    hidden_size: int,
    *,
    use_booster: bool = True,
    llm: str | nn.Module | None = "smollm2",
    llm_layer: int = -1,
    booster: str = "residual",
    freeze_llm: bool = True,
    llm_post_norm: bool = True,
    llm_width: int | None = None,
    llm_revision: str | None = None,
    llm_sha256: str | None = None,
    llm_config: dict | None = None,
    llm_license: str | None = None,
) -> LLMBooster | None:
    """The :class:`~rllm_zoo.booster.LLMBooster` a network asked for, or ``None`` for the baseline.

    Args:
        hidden_size: width of the encoder tokens.
        use_booster: ``False`` gives the plain network (returns ``None``).
        llm: an LLM source for :func:`rllm_zoo.load_llm_block` (``"smollm2"``,
            ``"random:smollm2"``, a Hub id, a folder or a ``.gguf`` file), an ``nn.Module`` block
            mapping ``(B, N, width)`` to the same shape (with a ``width`` attribute), or ``None``
            for no LLM, which makes the booster the ``"mlp"`` control.
        llm_layer: which layer of the LLM (``-1``: the last, the paper's choice).
        booster: variant, one of :data:`rllm_zoo.booster.VARIANTS`.
        freeze_llm: keep the block frozen (the paper); ``False`` fine-tunes it.
        llm_post_norm: unit-weight RMSNorm after the block (as in the R-LLM code).
        llm_width: adapter width; read from the block when omitted. For the ``mlp`` control
            with an LLM source string, giving it skips loading the LLM just to learn its width.
        llm_revision: Hub revision of ``llm``.
        llm_sha256: sha256 the layer must hash to (published models record it).
        llm_config: LLM config dict: rebuild the block from it without reading ``llm`` (for
            checkpoints that hold the block's weights).
        llm_license: licence recorded on a block rebuilt from ``llm_config``.
    """
    if not use_booster:
        return None
    if booster not in VARIANTS:
        raise ValueError(
            f"unknown booster variant {booster!r}: choose one of {', '.join(VARIANTS)}, "
            f"or use_booster=False for the plain baseline"
        )
    if llm is None:
        if booster not in ("mlp", "residual"):
            raise ValueError(
                f"booster={booster!r} needs an LLM block but llm=None: pass llm='smollm2' (or another "
                f"source), or booster='mlp' for the no-LLM control"
            )
        return LLMBooster(hidden_size, None, variant="mlp", llm_width=llm_width or DEFAULT_MLP_WIDTH)
    if isinstance(llm, str):
        if booster == "mlp" and llm_width is None and llm_config:
            llm_width = int(llm_config["hidden_size"])
        if booster == "mlp" and llm_width is not None:
            return LLMBooster(hidden_size, None, variant="mlp", llm_width=llm_width)
        block: nn.Module = referenced_block(
            llm, llm_layer, revision=llm_revision, sha256=llm_sha256, config=llm_config, license=llm_license
        )
    elif isinstance(llm, nn.Module):
        block = llm
    else:
        raise ValueError(f"llm must be a source string, an nn.Module block or None, got {type(llm).__name__}")
    if booster == "mlp":
        width = llm_width or _declared_width(block)
        return LLMBooster(hidden_size, None, variant="mlp", llm_width=width)
    return LLMBooster(
        hidden_size, block, variant=booster, llm_width=llm_width, post_norm=llm_post_norm, freeze=freeze_llm
    )
