"""Package a trained 2D run as a timm / Hugging Face folder (config.json + model.safetensors)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..data import dataset_info
from .checkpoint import load_checkpoint, load_weights
from .config import load_config
from .models import build_model

__all__ = ["package_run"]


def package_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write ``<run>/package`` (or ``out``): a folder that ``timm.create_model("local-dir:...")`` loads.

    The folder is assembled in a temporary sibling and renamed into place, so a failure
    never leaves a half-written package.
    """
    from timm.models import save_for_hf

    from ..timm_vit import booster_args

    run = Path(run_dir)
    cfg = load_config(run / "config.yaml")
    info = dataset_info(cfg.flag)
    if info.is_3d:
        raise ValueError("3D runs are packaged as MONAI bundles: see examples/bundles/make_bundle.py")
    model = build_model(cfg, info)
    load_weights(model, load_checkpoint(run / "best.pt"))
    dest = Path(out) if out is not None else run / "package"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        args = {**booster_args(model), "in_chans": info.n_channels, "img_size": cfg.size}
        save_for_hf(
            model,
            tmp,
            model_args=args,
            safe_serialization=True,
            model_config={"label_names": list(info.class_names)},
        )
        for extra in ("metrics.json", "config.yaml", "curves.png", "roc.png"):
            if (run / extra).is_file():
                shutil.copy2(run / extra, tmp / ("train_config.yaml" if extra == "config.yaml" else extra))
        meta = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        meta.setdefault("rllm_zoo", {})["dataset"] = info.flag
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
