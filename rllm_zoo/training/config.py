"""The training configuration: one dataclass, loadable from YAML and overridable from the CLI."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..atomic import atomic_write_text

__all__ = ["RUNTIME_KEYS", "TrainConfig", "atomic_write_text", "load_config", "recipe_names", "recipe_values"]

#: TrainConfig keys that change how a run executes, not what it computes: they may differ when a
#: run is resumed or a finished run is checked (``fit(resume=True)``, ``rllm-zoo sweep``).
RUNTIME_KEYS: tuple[str, ...] = ("progress", "device", "workers")


@dataclass
class TrainConfig:
    """Everything a run needs; ``config.yaml`` in the run directory holds the resolved copy.

    Example:
        >>> cfg = TrainConfig(flag="retinamnist", epochs=2)
        >>> cfg.model, cfg.booster          # the model is chosen for the data: 2D or 3D
        (None, 'residual')
        >>> TrainConfig(data="my_images/", split="0.8,0.1,0.1").data
        'my_images/'
    """

    # the dataset's tuned recipe under the defaults below (load_config / CLI only): auto (the
    # flag's recipe when one ships, see rllm_zoo/training/recipes/), none, a recipe name or a YAML file
    recipe: str = "auto"
    # data: a MedMNIST flag, or your own data (a folder of class sub-folders, a CSV, a datalist JSON)
    flag: str | None = None
    data: str | None = None
    split: str = "0.7,0.1,0.2"  # train,val,test fractions for own data that carries no split
    split_seed: int = 0  # seed of that split (fixed across --seeds, so seeds vary the model only)
    size: int | None = None  # MedMNIST: 28 (the file's size); own data: the model's input size
    intensity: str = "auto"  # 3D own data: auto | minmax (per volume) | LOW,HIGH (clipped window)
    data_root: str | None = None
    download: bool = False
    aug: str = "light"  # none | light | strong
    # model: any timm name (rllm_* or plain timm ViT) or an rllm_zoo.monai preset for 3D;
    # None: rllm_vit_tiny_patch4_28 for 2D data, rllm_vit3d_small for 3D data
    model: str | None = None
    llm: str | None = "smollm2"
    llm_layer: int = -1
    booster: str = "residual"  # residual | out | hybrid | none | mlp | off (baseline ViT)
    freeze_llm: bool = True
    llm_post_norm: bool = True
    vit_pretrained: str | None = None
    drop_path: float = 0.1
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # optimisation: AdamW + cosine with linear warm-up
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    min_lr: float = 1e-6
    label_smoothing: float = 0.1
    grad_clip: float | None = 1.0
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    # protocol
    select_metric: str = "auc"  # the validation metric that picks the checkpoint: auc | acc | loss
    eval_test: bool = True  # false while tuning a recipe: the test split is never read or scored
    seed: int = 0
    # engine
    out: str = "runs/run"
    device: str = "auto"
    workers: int = 0
    eval_batch_size: int = 256
    max_train_batches: int | None = None  # for smoke tests: cut each epoch short
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        """Check types, ranges and choices; a ``ValueError`` names the key and the fix.

        Example:
            >>> TrainConfig(epochs=2.5).validate()
            Traceback (most recent call last):
            ...
            ValueError: epochs must be an integer, got 2.5 (float)
        """
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), str(f.type))
        choices = {
            "aug": ("none", "light", "strong"),
            "booster": ("residual", "out", "hybrid", "none", "mlp", "off"),
            "precision": ("auto", "fp32", "bf16"),
            "select_metric": ("auc", "acc", "loss"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r} is not one of {', '.join(allowed)}")
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("lr", "weight_decay", "warmup_epochs", "min_lr", "label_smoothing", "drop_path"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{key} must be a finite number >= 0, got {value}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"grad_clip must be > 0 or none, got {self.grad_clip}")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.drop_path < 1:
            raise ValueError("label_smoothing and drop_path must be in [0, 1)")
        if self.max_train_batches is not None and self.max_train_batches < 1:
            raise ValueError(f"max_train_batches must be >= 1 or none, got {self.max_train_batches}")
        if self.workers < 0 or self.seed < 0 or self.split_seed < 0:
            raise ValueError("workers, seed and split_seed must be >= 0")
        if self.flag is not None and self.data is not None:
            raise ValueError("give --flag (a MedMNIST set) or --data (your own files), not both")
        if self.size is not None and self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        intensity_range(self.intensity)
        return self


def _check_type(key: str, value: Any, annotation: str) -> None:
    """``value`` fits the field's annotation (``int``, ``float | None``, ``dict[str, Any]``...)."""
    kinds = {k.strip().split("[")[0] for k in annotation.split("|")}
    if value is None:
        if "None" in kinds:
            return
        raise ValueError(f"{key} needs a value, got none")
    if "bool" in kinds:
        ok, want = isinstance(value, bool), "true or false"
    elif "int" in kinds:
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif "float" in kinds:
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif "dict" in kinds:
        ok, want = isinstance(value, dict), "a mapping (e.g. {depth: 2})"
    else:
        ok, want = isinstance(value, str), "a string"
    if not ok:
        raise ValueError(f"{key} must be {want}, got {value!r} ({type(value).__name__})")


def intensity_range(text: str) -> tuple[float, float] | str | None:
    """``intensity`` as ``"auto"``, ``None`` (per-volume min-max) or a ``(low, high)`` window.

    Example:
        >>> intensity_range("-1000,400")
        (-1000.0, 400.0)
    """
    if text in ("auto", "minmax"):
        return None if text == "minmax" else "auto"
    try:
        low, high = (float(v) for v in str(text).split(","))
    except ValueError:
        low = high = float("nan")
    if not low < high:
        raise ValueError(f"intensity={text!r}: use auto, minmax or LOW,HIGH with LOW < HIGH (e.g. -1000,400)")
    return low, high


def _coerce(value: str, annotation: str) -> Any:
    """Turn a CLI string into the field's type."""
    if value.lower() in ("none", "null") and "None" in annotation:
        return None
    if "bool" in annotation:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if "dict" in annotation:
        return yaml.safe_load(value) or {}
    if "int" in annotation and "float" not in annotation:
        return int(value)
    if "float" in annotation:
        return float(value)
    return value


def read_yaml_mapping(path: str | os.PathLike, what: str = "config keys") -> dict[str, Any]:
    """A YAML file holding a mapping; a missing, malformed or non-mapping file is one clear error."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path}: no such config file") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not valid YAML ({first}); fix or delete the file") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a YAML mapping of {what}")
    return data


RECIPES_DIR = Path(__file__).parent / "recipes"


def recipe_names() -> list[str]:
    """Names of the recipes that ship with rllm_zoo (one per tuned MedMNIST dataset).

    Example:
        >>> "retinamnist" in recipe_names()
        True
    """
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_values(recipe: str, flag: str | None) -> dict[str, Any]:
    """The config keys of ``recipe`` (``auto``: the recipe named after ``flag``, if any; ``none``: none).

    Example:
        >>> recipe_values("auto", "retinamnist")["epochs"] > 0
        True
        >>> recipe_values("none", "retinamnist")
        {}
    """
    if recipe == "none" or (recipe == "auto" and (flag is None or flag not in recipe_names())):
        return {}
    name = flag if recipe == "auto" else recipe
    path = RECIPES_DIR / f"{name}.yaml" if name in recipe_names() else Path(name)
    if not path.is_file():
        raise ValueError(
            f"recipe={recipe!r}: neither a shipped recipe ({', '.join(recipe_names())}) nor a YAML file; "
            "use auto, none, one of those names or a path"
        )
    values = read_yaml_mapping(path, "recipe keys")
    bad = sorted(set(values) - {f.name for f in dataclasses.fields(TrainConfig)} | ({"recipe"} & set(values)))
    if bad:
        raise ValueError(f"{path}: {', '.join(bad)} cannot be set by a recipe")
    return values


def load_config(
    path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """A config from the dataset's recipe, then YAML (optional), then ``overrides`` (typed or CLI strings).

    Keys set in the YAML file or ``overrides`` always win over the recipe; ``recipe: none`` turns
    the recipe off (plain :class:`TrainConfig` defaults).
    """
    data = read_yaml_mapping(path, "config keys") if path is not None else {}
    merged = {**data, **(overrides or {})}
    recipe = merged.get("recipe", "auto")
    if isinstance(recipe, str):
        merged = {**recipe_values(recipe, merged.get("flag")), **merged}
    data = {}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for key, value in merged.items():
        if key not in fields:
            raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(fields)}")
        if isinstance(value, str) and fields[key].type != "str":
            try:
                value = _coerce(value, str(fields[key].type))
            except (ValueError, yaml.YAMLError) as e:
                raise ValueError(f"{key}={value!r} is not {fields[key].type} ({e})") from e
        data[key] = value
    return TrainConfig(**data).validate()
