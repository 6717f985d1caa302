"""``MetricsJSONSaver``: an ignite/MONAI handler that writes an engine's metrics to a JSON file.

Example (in a bundle config, as one of the evaluator's handlers)::

    {"_target_": "rllm_zoo.monai.MetricsJSONSaver", "filepath": "$@bundle_root + '/eval/metrics.json'",
     "extra": {"split": "test"}}
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["MetricsJSONSaver"]


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a metric value (tensors and numpy scalars become numbers/lists)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    elif hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class MetricsJSONSaver:
    """Write ``engine.state.metrics`` (plus ``extra``) to ``filepath`` when the engine completes.

    Only rank 0 writes in a distributed run. The file holds
    ``{"metrics": {...}, "num_samples": N, **extra}``; non-finite values become ``null``.

    Args:
        filepath: JSON file to write (parent folders are created).
        extra: more JSON-serialisable fields to store next to the metrics.

    Example:
        >>> from ignite.engine import Engine
        >>> import tempfile, os
        >>> engine = Engine(lambda e, b: None)
        >>> out = os.path.join(tempfile.mkdtemp(), "m.json")
        >>> MetricsJSONSaver(out, extra={"split": "test"}).attach(engine)
        >>> _ = engine.run([0, 1])
        >>> json.load(open(out))["split"]
        'test'
    """

    def __init__(self, filepath: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
        self.filepath = Path(filepath)
        self.extra = dict(extra or {})

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        if not engine.has_event_handler(self, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        dataloader = getattr(engine.state, "dataloader", None)
        dataset = getattr(dataloader, "dataset", None)
        payload = {
            "metrics": {k: _plain(v) for k, v in sorted(engine.state.metrics.items())},
            "num_samples": len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None,
            **self.extra,
        }
        self.filepath.parent.mkdir(parents=True, exist_ok=True)
        self.filepath.write_text(json.dumps(payload, indent=2) + "\n")
