"""Build a booster's block from a recorded reference: source, layer, revision, sha256 (and config).

A published boosted model records where its LLM layer came from. A *delta* checkpoint holds
only the trainable weights, so the block is re-read from its source and must hash to the
recorded sha256; a *full* checkpoint holds the block's tensors too, so the block is rebuilt
from the recorded config and nothing is read from the LLM.

Example:
    >>> block = referenced_block("random:smollm2", -1)
    >>> same = referenced_block("random:smollm2", -1, sha256=block.info.sha256)  # verified
    >>> referenced_block("random:smollm2", -1, sha256="0" * 64)  # doctest: +ELLIPSIS +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    LLMChecksumError: ...
"""

from __future__ import annotations

from .block import LLMBlock
from .sources import llm_block_from_config, load_llm_block

__all__ = ["REDISTRIBUTABLE_LICENSES", "LLMChecksumError", "may_redistribute", "referenced_block"]

#: Licences (Hub identifiers) that allow shipping an LLM layer inside a model repo.
REDISTRIBUTABLE_LICENSES = frozenset(
    {
        "apache-2.0",
        "mit",
        "bsd-2-clause",
        "bsd-3-clause",
        "cc0-1.0",
        "cc-by-4.0",
        "cc-by-sa-4.0",
        "openrail",
        "bigscience-openrail-m",
        "creativeml-openrail-m",
        "unlicense",
    }
)


class LLMChecksumError(ValueError):
    """The LLM layer read from a source is not the one a checkpoint was trained with."""


def may_redistribute(license: str | None) -> bool:
    """Whether a licence identifier allows redistributing the LLM's weights (unknown: no).

    Example:
        >>> may_redistribute("apache-2.0"), may_redistribute("llama2"), may_redistribute(None)
        (True, False, False)
    """
    return bool(license) and license.strip().lower() in REDISTRIBUTABLE_LICENSES


def referenced_block(
    source: str,
    layer: int,
    *,
    revision: str | None = None,
    sha256: str | None = None,
    config: dict | None = None,
    license: str | None = None,
) -> LLMBlock:
    """The LLM block a published model refers to.

    Args:
        source: the LLM source (see :func:`rllm_zoo.load_llm_block`).
        layer: the layer index.
        revision: the Hub revision the block was read at.
        sha256: the sha256 of the layer's tensors (``block.info.sha256``) recorded at training
            time; when given, a block read from ``source`` must match it.
        config: the LLM's config (a dict). When given, the block is rebuilt from it and its
            weights are expected from the caller's checkpoint: nothing is read from ``source``.
        license: licence to record when rebuilding from ``config``.

    Raises:
        LLMChecksumError: the layer read from ``source`` does not hash to ``sha256``.
    """
    if config is not None:
        return llm_block_from_config(
            config, layer, source=source, revision=revision, sha256=sha256, license=license
        )
    block = load_llm_block(source, layer=layer, revision=revision)
    if sha256 and block.info.sha256 != sha256:
        raise LLMChecksumError(
            f"layer {block.info.layer} of {source!r}"
            + (f" at revision {revision!r}" if revision else "")
            + f" hashes to sha256 {block.info.sha256[:16]}..., but this checkpoint was trained with "
            f"{sha256[:16]}...: the LLM's weights differ from the ones recorded (another revision, "
            "quantisation or file). Load the exact revision recorded in the model's config, or use the "
            "self-contained (full) weights of the model."
        )
    return block
