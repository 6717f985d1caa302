"""Layer sweeps: which LLM layer boosts, if any (``rllm-zoo sweep``).

A sweep trains a grid of ordinary runs (:func:`~rllm_zoo.training.fit`) into one folder:

* for every LLM source x layer x variant x seed, the ViT with that frozen layer;
* the controls: the plain ViT (``baseline``, booster off), per LLM the ``mlp`` control (the same
  adapters, no block; width of that LLM) and the ``random`` control (a random-init block of the
  same architecture, ``random:<source>``, at ``random_layers``, default the last layer).

Layers are absolute (``29``, ``-1``) or relative to the LLM's depth: ``first``, ``middle``,
``last`` or a fraction such as ``0.25`` (a number with a decimal point). A fraction ``f`` of an
LLM with ``n`` layers is layer ``floor(f * (n - 1) + 0.5)`` (round half up): on 4 layers
``first`` / ``0.25`` / ``middle`` / ``last`` are 0 / 1 / 2 / 3; on SmolLM2's 30 layers ``middle``
is 15. Layers that resolve to the same index run once. ``num_layers`` is read from the LLM's
config only (GGUF header, ``config.json``), never its weights; each run records the absolute
layer (``llm_layer`` in its ``config.yaml`` and ``metrics.json``).

Folder layout (``out``)::

    sweep_plan.json             the spec and the grid (what --report-only rebuilds from)
    runs/<arm>/seed<k>/         one `rllm-zoo train` run folder per arm and seed
    locks/<arm>.seed<k>.lock    a run being trained right now (JSON: pid, host, token, ...)
    sweep.json  sweep.md  sweep.png    the results (rewritten after every invocation)

Resumable and parallel: runs go in seed-major order (every arm of seed 0, then of seed 1, ...),
so a stopped sweep leaves a balanced partial table. A finished run (``metrics.json``) is skipped
after its settings are checked; an interrupted one resumes from its last epoch. Several
processes (on one machine or on several sharing the folder) may work on one sweep at once: a
process claims a run by creating its lock file with ``O_CREAT | O_EXCL`` and skips runs that
others hold. A lock whose process is dead (same host) or whose heartbeat (the file's mtime,
touched every 30 s while training) is older than ``stale_after`` seconds is taken over. Under
``torchrun`` every run of the sweep is trained with DDP by all processes: rank 0 claims and
broadcasts each decision, so independent ``torchrun`` sweeps can also share a folder.

Example:
    >>> from rllm_zoo.training.sweep import SweepSpec, run_sweep
    >>> spec = SweepSpec(train={"flag": "retinamnist", "epochs": 10}, llms=["smollm2"],
    ...                  layers=["first", "middle", "last"], seeds=[0, 1, 2], out="runs/sweep")
    >>> report = run_sweep(spec)                                 # doctest: +SKIP
    >>> report["selection"]["arm"], report["selection"]["test"]["mean"]   # doctest: +SKIP
    ('smollm2-L29-residual', 0.712)
    >>> resolve_layer("middle", 4), resolve_layer("0.25", 4), resolve_layer(-1, 30)
    (2, 1, 29)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from .config import RUNTIME_KEYS, TrainConfig, load_config, read_yaml_mapping
from .locks import HEARTBEAT_S, RunLock, claim_lock, lock_stale, read_lock, wait_for_lock

__all__ = [
    "CONTROLS",
    "VARIANTS",
    "Arm",
    "Job",
    "SweepPlan",
    "SweepSpec",
    "llm_num_layers",
    "load_sweep_spec",
    "plan_sweep",
    "resolve_layer",
    "run_sweep",
]

#: Booster variants a sweep may vary (``mlp`` and ``off`` are the controls).
VARIANTS: tuple[str, ...] = ("residual", "out", "hybrid", "none")
#: The control arms: ViT without booster, adapters without a block, a random-init block.
CONTROLS: tuple[str, ...] = ("baseline", "mlp", "random")
#: Relative layer names and the fraction of the depth they stand for.
NAMED_LAYERS: dict[str, float] = {"first": 0.0, "middle": 0.5, "last": 1.0}
#: TrainConfig keys the sweep sets per run (the rest is shared by all runs).
PER_RUN_KEYS: tuple[str, ...] = ("llm", "llm_layer", "booster", "seed", "out")
#: Keys of a sweep YAML file that configure the sweep; every other key is a TrainConfig key.
SWEEP_KEYS: tuple[str, ...] = (
    "llms",
    "layers",
    "variants",
    "seeds",
    "controls",
    "random_layers",
    "metric",
    "select_on",
    "out",
    "stale_after",
)
PLAN_FILE = "sweep_plan.json"


# ---------------------------------------------------------------------------------------------------------------
# layers


def resolve_layer(layer: str | int | float, num_layers: int) -> int:
    """The absolute index of ``layer`` in an LLM with ``num_layers`` layers.

    ``layer`` is an absolute index (``29``, ``"-1"``: Python-style, negative from the end) or
    relative: ``"first"``, ``"middle"``, ``"last"`` or a fraction in [0, 1] written with a decimal
    point (``"0.25"``, ``0.5``; ``"1"`` is layer 1, ``"1.0"`` the last layer). A fraction ``f`` is
    layer ``floor(f * (num_layers - 1) + 0.5)``: rounded half up, so ``middle`` of 4 layers is 2.

    Example:
        >>> [resolve_layer(x, 4) for x in ("first", "middle", "last", "0.5", "1", -1)]
        [0, 2, 3, 2, 1, 3]
        >>> resolve_layer("middle", 30), resolve_layer(0.25, 30)
        (15, 7)
    """
    if num_layers < 1:
        raise ValueError(f"an LLM needs at least one layer, got num_layers={num_layers}")
    fraction: float | None = None
    if isinstance(layer, bool):
        raise ValueError(f"layer {layer!r}: give an index, first/middle/last or a fraction like 0.25")
    if isinstance(layer, int):
        return _absolute(layer, num_layers)
    if isinstance(layer, float):
        fraction = layer
    else:
        text = str(layer).strip().lower()
        if text in NAMED_LAYERS:
            fraction = NAMED_LAYERS[text]
        elif re.fullmatch(r"[+-]?\d+", text):
            return _absolute(int(text), num_layers)
        else:
            try:
                fraction = float(text)
            except ValueError:
                fraction = None
            if fraction is None or not re.search(r"[.e]", text):
                raise ValueError(
                    f"layer {layer!r}: give an index (29, -1), first/middle/last or a fraction like 0.25"
                ) from None
    if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
        raise ValueError(f"layer {layer!r}: a relative layer is a fraction of the depth in [0, 1]")
    return math.floor(fraction * (num_layers - 1) + 0.5)


def _absolute(layer: int, num_layers: int) -> int:
    if not -num_layers <= layer < num_layers:
        raise ValueError(
            f"layer {layer} is out of range for an LLM of {num_layers} layers "
            f"(valid indices {-num_layers}..{num_layers - 1}; -1 is the last; or first/middle/last/0.25)"
        )
    return layer % num_layers


def relative_depth(layer: int, num_layers: int) -> float:
    """``layer / (num_layers - 1)``: 0 is the first layer, 1 the last (0 for a one-layer LLM)."""
    return layer / (num_layers - 1) if num_layers > 1 else 0.0


@functools.lru_cache(maxsize=32)
def llm_num_layers(source: str) -> int:
    """The number of decoder layers of an LLM source, read from its config only (no weights).

    ``source`` is anything ``llm=`` accepts: an alias (``"smollm2"``), a ``.gguf`` file, a model
    folder, a Hub id (its ``config.json``, from the cache when offline) or a ``random:`` form.

    Example:
        >>> llm_num_layers("smollm2")                                # doctest: +SKIP
        30
    """
    from ..llm.gguf_source import gguf_config
    from ..llm.sources import _hub_snapshot, _local_config, resolve_source

    name = source.partition(":")[2] if source.startswith("random:") else source
    name = name or "smollm2"
    kind, where = resolve_source(name)
    if kind == "gguf":
        config = gguf_config(where)
    elif kind == "folder":
        config = _local_config(Path(where))
    else:
        folder, _, _ = _hub_snapshot(where, None, None, weights=False)
        config = _local_config(Path(folder))
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = int(getattr(text, "num_hidden_layers", 0) or 0)
    if n < 1:
        raise ValueError(f"LLM source {source!r}: its config declares no decoder layers")
    return n


# ---------------------------------------------------------------------------------------------------------------
# the spec


def _as_list(value: Any, key: str) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


@dataclass
class SweepSpec:
    """What a sweep trains. ``train`` holds the TrainConfig keys shared by every run.

    Example:
        >>> spec = SweepSpec(train={"flag": "retinamnist", "epochs": 2}, layers=["first", "last"],
        ...                  seeds=[0, 1]).validate()
        >>> spec.controls, spec.metric, spec.select_on
        (['baseline', 'mlp', 'random'], 'auc', 'val')
    """

    train: dict[str, Any] = field(default_factory=dict)
    llms: list[str] = field(default_factory=lambda: ["smollm2"])
    layers: list[str] = field(default_factory=lambda: ["last"])
    variants: list[str] = field(default_factory=lambda: ["residual"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    controls: list[str] = field(default_factory=lambda: list(CONTROLS))
    #: layers of the random-init control: layer specs, or ["all"] for every grid layer
    random_layers: list[str] = field(default_factory=lambda: ["last"])
    metric: str = "auc"  # the metric of the plot and of --select-on: auc | acc
    select_on: str = "val"  # val: pick the best (LLM, layer, variant) on validation | none
    out: str = "runs/sweep"
    stale_after: float = 600.0  # seconds without heartbeat before another process takes a lock over

    def validate(self) -> SweepSpec:
        """Normalise the lists and check every choice; a ``ValueError`` names the key and the fix."""
        self.llms = [str(s) for s in _as_list(self.llms, "llms")]
        self.layers = [str(s).strip() for s in _as_list(self.layers, "layers")]
        self.variants = [str(s).strip() for s in _as_list(self.variants, "variants")]
        self.controls = [str(s).strip() for s in _as_list(self.controls, "controls")]
        self.random_layers = [str(s).strip() for s in _as_list(self.random_layers, "random_layers")]
        seeds = _as_list(self.seeds, "seeds")
        try:
            self.seeds = [int(s) for s in seeds]
        except (TypeError, ValueError):
            raise ValueError(f"seeds {seeds!r}: give whole numbers >= 0 (e.g. 0,1,2)") from None
        if any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            raise ValueError(f"seeds {self.seeds!r}: give distinct whole numbers >= 0 (e.g. 0,1,2)")
        for key, allowed in (("variants", VARIANTS), ("controls", CONTROLS)):
            bad = [v for v in getattr(self, key) if v not in allowed]
            if bad:
                hint = " (mlp and off are controls: --controls mlp,baseline)" if key == "variants" else ""
                raise ValueError(f"{key}: {', '.join(bad)} not one of {', '.join(allowed)}{hint}")
            if len(set(getattr(self, key))) != len(getattr(self, key)):
                raise ValueError(f"{key}: a value is repeated")
        if not self.variants:
            raise ValueError("variants: give at least one of " + ", ".join(VARIANTS))
        if not self.llms and set(self.controls) - {"baseline"}:
            raise ValueError("llms: give at least one LLM source (e.g. smollm2)")
        if self.llms and not self.layers:
            raise ValueError("layers: give at least one layer (e.g. first,middle,last)")
        if len(set(self.llms)) != len(self.llms):
            raise ValueError("llms: a source is repeated")
        if self.metric not in ("auc", "acc"):
            raise ValueError(f"metric={self.metric!r} is not one of auc, acc")
        if self.select_on not in ("val", "none"):
            raise ValueError(f"select_on={self.select_on!r} is not one of val, none")
        if not (isinstance(self.stale_after, (int, float)) and self.stale_after >= 3 * HEARTBEAT_S):
            raise ValueError(
                f"stale_after must be a number of seconds >= {3 * HEARTBEAT_S:g} (three heartbeats of a "
                f"lock holder), got {self.stale_after!r}"
            )
        for layer in [*self.layers, *(r for r in self.random_layers if r != "all")]:
            resolve_layer(layer, 10_000)  # the syntax; the range is checked per LLM
        if "all" in self.random_layers and len(self.random_layers) > 1:
            raise ValueError("random_layers: 'all' stands alone")
        bad_keys = [k for k in self.train if k in PER_RUN_KEYS]
        if bad_keys:
            raise ValueError(
                f"{', '.join(bad_keys)} is set per run by the sweep; use llms, layers, variants, "
                "seeds and out instead"
            )
        if self.base_config().eval_test is False:  # the shared TrainConfig keys, checked
            raise ValueError(
                "eval_test=false has no place in a sweep: it reports test once per run; "
                "choose on validation with select_on: val"
            )
        return self

    def base_config(self) -> TrainConfig:
        """The TrainConfig shared by every run (per-run keys at their defaults)."""
        return load_config(None, dict(self.train))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_sweep_spec(
    path: str | os.PathLike | None = None,
    sweep: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
) -> SweepSpec:
    """A :class:`SweepSpec` from a YAML file (optional), then overrides (CLI strings or typed values).

    The YAML file is flat: the sweep keys (``llms``, ``layers``, ``variants``, ``seeds``,
    ``controls``, ``random_layers``, ``metric``, ``select_on``, ``out``, ``stale_after``) configure
    the grid, every other key is a TrainConfig key shared by all runs. A plain ``rllm-zoo train``
    config file works as is: its ``llm``, ``llm_layer``, ``booster`` and ``seed`` become the
    defaults of ``llms``, ``layers``, ``variants`` and ``seeds``, and the flags go on top.

    Example:
        >>> spec = load_sweep_spec(None, {"layers": "first,0.5,-1", "seeds": "0,1"}, {"flag": "retinamnist"})
        >>> spec.layers, spec.seeds, spec.train
        (['first', '0.5', '-1'], [0, 1], {'flag': 'retinamnist'})
    """
    data = read_yaml_mapping(path, "sweep and config keys") if path is not None else {}
    nested = data.pop("train", None) or {}
    if not isinstance(nested, dict):
        raise ValueError(f"{path}: 'train' must be a mapping of config keys")
    for one, many in (("llm", "llms"), ("llm_layer", "layers"), ("booster", "variants"), ("seed", "seeds")):
        if one in data:  # a `rllm-zoo train` config: its single value is the sweep's default
            value = data.pop(one)
            data.setdefault(many, [value] if value is not None else [])
    sweep_values = {k: v for k, v in data.items() if k in SWEEP_KEYS}
    train_values = {**nested, **{k: v for k, v in data.items() if k not in SWEEP_KEYS}}
    sweep_values.update({k: v for k, v in (sweep or {}).items() if v is not None})
    train_values.update({k: v for k, v in (train or {}).items() if v is not None})
    unknown = set(sweep_values) - set(SWEEP_KEYS)
    if unknown:
        raise ValueError(f"unknown sweep key(s) {', '.join(sorted(unknown))}; known: {', '.join(SWEEP_KEYS)}")
    if "stale_after" in sweep_values:
        try:
            sweep_values["stale_after"] = float(sweep_values["stale_after"])
        except (TypeError, ValueError):
            raise ValueError(f"stale_after={sweep_values['stale_after']!r} is not a number") from None
    if "out" in sweep_values:
        sweep_values["out"] = str(sweep_values["out"])
    return SweepSpec(train=train_values, **sweep_values).validate()


# ---------------------------------------------------------------------------------------------------------------
# the plan


@dataclass(frozen=True)
class Arm:
    """One arm of the grid: a booster configuration trained once per seed."""

    id: str
    kind: str  # baseline | mlp | llm | random
    llm: str | None = None  # the source as given (random arms: without "random:")
    llm_name: str | None = None
    layer: int | None = None  # absolute
    num_layers: int | None = None
    layer_specs: tuple[str, ...] = ()
    variant: str | None = None

    @property
    def depth(self) -> float | None:
        """Relative depth in [0, 1] (``None`` for arms without a block)."""
        if self.layer is None or self.num_layers is None:
            return None
        return relative_depth(self.layer, self.num_layers)

    def run_keys(self) -> dict[str, Any]:
        """The TrainConfig keys of this arm."""
        if self.kind == "baseline":
            return {"booster": "off", "llm": None, "llm_layer": -1}
        if self.kind == "mlp":
            return {"booster": "mlp", "llm": self.llm, "llm_layer": -1}
        llm = f"random:{self.llm}" if self.kind == "random" else self.llm
        return {"booster": self.variant, "llm": llm, "llm_layer": self.layer}

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "layer_specs": list(self.layer_specs), "depth": self.depth}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Arm:
        keys = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in keys}
        values["layer_specs"] = tuple(values.get("layer_specs") or ())
        return cls(**values)


@dataclass(frozen=True)
class Job:
    """One run: an arm at a seed, in ``<out>/runs/<arm>/seed<seed>``."""

    arm: str
    seed: int

    @property
    def dir(self) -> str:
        return f"runs/{self.arm}/seed{self.seed}"

    @property
    def lock(self) -> str:
        return f"locks/{self.arm}.seed{self.seed}.lock"


@dataclass
class SweepPlan:
    """The spec, its arms (grid order) and the runs in the order they are trained (seed-major)."""

    spec: dict[str, Any]
    base: dict[str, Any]  # the resolved shared TrainConfig (per-run keys at their defaults)
    arms: list[Arm]
    jobs: list[Job]
    llms: dict[str, dict[str, Any]]  # source -> {name, num_layers, layers: {spec: absolute}}

    def arm(self, arm_id: str) -> Arm:
        return next(a for a in self.arms if a.id == arm_id)

    def config(self, job: Job, out: str | os.PathLike) -> TrainConfig:
        """The TrainConfig of one run."""
        values = {**self.base, **self.plan_arm_keys(job), "out": str(Path(out) / job.dir)}
        return TrainConfig(**values).validate()

    def plan_arm_keys(self, job: Job) -> dict[str, Any]:
        return {**self.arm(job.arm).run_keys(), "seed": job.seed}

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "base": self.base,
            "llms": self.llms,
            "arms": [a.to_dict() for a in self.arms],
            "jobs": [{"arm": j.arm, "seed": j.seed, "dir": j.dir} for j in self.jobs],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepPlan:
        return cls(
            spec=d["spec"],
            base=d["base"],
            arms=[Arm.from_dict(a) for a in d["arms"]],
            jobs=[Job(j["arm"], int(j["seed"])) for j in d["jobs"]],
            llms=d["llms"],
        )


def _llm_name(source: str) -> str:
    """A short folder-safe name: ``smollm2``, ``x`` for ``/path/x.gguf``, ``org--name`` for a Hub id."""
    prefix = ""
    if source.startswith("random:"):
        prefix, source = "random-", source.partition(":")[2] or "smollm2"
    path = Path(source).expanduser()
    if path.suffix == ".gguf" or path.exists() or source.startswith(("/", "./", "../", "~")):
        name = path.name.removesuffix(".gguf") or path.resolve().name
    else:
        name = source.replace("/", "--")
    return prefix + (re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "llm")


def plan_sweep(spec: SweepSpec, num_layers: Callable[[str], int] = llm_num_layers) -> SweepPlan:
    """Resolve the layers of every LLM and list the arms and runs (seed-major).

    Arm ids: ``baseline``, ``mlp-<llm>``, ``<llm>-L<layer>-<variant>`` and
    ``random-<llm>-L<layer>-<variant>`` (``<llm>``: a short name of the source).

    Example:
        >>> spec = SweepSpec(train={"flag": "retinamnist"}, llms=["/m/tiny"], layers=["first", "last"],
        ...                  seeds=[0, 1]).validate()
        >>> plan = plan_sweep(spec, num_layers=lambda src: 4)
        >>> [a.id for a in plan.arms]
        ['baseline', 'mlp-tiny', 'tiny-L0-residual', 'tiny-L3-residual', 'random-tiny-L3-residual']
        >>> [(j.arm, j.seed) for j in plan.jobs][:2], len(plan.jobs)
        ([('baseline', 0), ('mlp-tiny', 0)], 10)
    """
    spec.validate()
    base = spec.base_config().to_dict()
    for key in PER_RUN_KEYS:
        base.pop(key, None)
    arms: list[Arm] = []
    if "baseline" in spec.controls:
        arms.append(Arm("baseline", "baseline"))
    llms: dict[str, dict[str, Any]] = {}
    names: set[str] = set()
    grid: list[Arm] = []
    controls: list[Arm] = []
    for source in spec.llms:
        name = _llm_name(source)
        k = 2
        while name in names:
            name, k = f"{_llm_name(source)}-{k}", k + 1
        names.add(name)
        n = num_layers(source)
        mapping = {layer: resolve_layer(layer, n) for layer in spec.layers}
        layers: dict[int, list[str]] = {}
        for layer_spec, idx in mapping.items():
            layers.setdefault(idx, []).append(layer_spec)
        llms[source] = {"name": name, "num_layers": n, "layers": mapping}
        if "mlp" in spec.controls:
            controls.append(Arm(f"mlp-{name}", "mlp", llm=source, llm_name=name, num_layers=n))
        for idx, specs in layers.items():
            for variant in spec.variants:
                grid.append(
                    Arm(f"{name}-L{idx}-{variant}", "llm", source, name, idx, n, tuple(specs), variant)
                )
        if "random" in spec.controls and not source.startswith("random"):
            if spec.random_layers == ["all"]:
                random_layers = {idx: specs for idx, specs in layers.items()}
            else:
                random_layers = {}
                for layer_spec in spec.random_layers:
                    random_layers.setdefault(resolve_layer(layer_spec, n), []).append(layer_spec)
            for idx, specs in random_layers.items():
                for variant in spec.variants:
                    arm_id = f"random-{name}-L{idx}-{variant}"
                    grid_random = Arm(arm_id, "random", source, name, idx, n, tuple(specs), variant)
                    controls.append(grid_random)
    mlps = [a for a in controls if a.kind == "mlp"]
    randoms = [a for a in controls if a.kind == "random"]
    arms += mlps + grid + randoms
    jobs = [Job(a.id, seed) for seed in spec.seeds for a in arms]
    return SweepPlan(spec=spec.to_dict(), base=base, arms=arms, jobs=jobs, llms=llms)


def _shared_settings(base: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in base.items() if k not in RUNTIME_KEYS}


def _check_plan(out: Path, plan: SweepPlan) -> None:
    """A folder holds one sweep: its shared training settings may not change (the grid may grow)."""
    path = out / PLAN_FILE
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # unreadable: rewritten below
    before, now = _shared_settings(old.get("base", {})), _shared_settings(plan.base)
    changed = [
        f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
        for k in sorted(set(before) | set(now))
        if before.get(k) != now.get(k)
    ]
    if changed:
        raise ValueError(
            f"{out} holds a sweep with other training settings ({'; '.join(changed)}); use the same "
            "settings (the grid: llms, layers, variants, seeds, controls may change) or another --out"
        )


def load_plan(out: str | os.PathLike) -> SweepPlan:
    """The plan a sweep stored in ``out`` (for ``--report-only``)."""
    path = Path(out) / PLAN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {out} is not a sweep folder (run `rllm-zoo sweep` first)")
    try:
        return SweepPlan.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is damaged ({e}); rerun the sweep with its flags to rewrite it") from e


# ---------------------------------------------------------------------------------------------------------------
# running


def _log(message: str) -> None:
    print(f"sweep: {message}", file=sys.stderr, flush=True)


class _Coordinator:
    """Single process: decide locally. Under torchrun: rank 0 decides, every rank follows."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))

    def ensure(self) -> None:
        """Create the process group once: fit() leaves a group it did not create in place."""
        if self.world == 1:
            return
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"  # as fit() chooses
            if backend == "nccl":
                local = int(os.environ.get("LOCAL_RANK", self.rank))
                torch.cuda.set_device(local % torch.cuda.device_count())
            dist.init_process_group(backend=backend)

    def share(self, value: Any) -> Any:
        """Rank 0's ``value``, on every rank."""
        from .engine import from_rank0

        self.ensure()
        return from_rank0(value, self.world)

    def close(self) -> None:
        """Leave no process group behind (the last run may have been a finished one)."""
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


def _run_jobs(plan: SweepPlan, out: Path, stale_after: float) -> dict[str, list[str]]:
    from .engine import fit

    coord = _Coordinator()
    done: dict[str, list[str]] = {"trained": [], "finished_before": [], "busy": []}
    total = len(plan.jobs)
    for i, job in enumerate(plan.jobs, 1):
        name = f"{job.arm}/seed{job.seed}"
        cfg = plan.config(job, out)
        lock: RunLock | None = None
        decision = None
        coord.ensure()
        if coord.rank == 0:
            if (out / job.dir / "metrics.json").is_file():
                try:  # checks the run's settings; reads, never trains or writes
                    fit(cfg, resume=True)
                    decision = "finished"
                except ValueError as e:
                    decision = f"error: {e}"
            else:
                lock = claim_lock(out / job.lock, stale_after, what=name)
                if lock is not None and (out / job.dir / "metrics.json").is_file():
                    lock.release()  # finished by another process between our look and our claim
                    lock, decision = None, "finished"
                elif lock is None:
                    holder = read_lock(out / job.lock) or {}
                    decision = f"busy (pid {holder.get('pid', '?')} on {holder.get('host', '?')})"
                else:
                    decision = "train"
        decision = coord.share(decision)
        if decision.startswith("error: "):
            coord.close()
            raise ValueError(f"{name}: {decision.removeprefix('error: ')}")
        if decision == "finished":
            done["finished_before"].append(name)
            continue
        if decision != "train":
            if coord.rank == 0:
                _log(f"[{i}/{total}] {name}: {decision}, skipped")
            done["busy"].append(name)
            continue
        if coord.rank == 0:
            _log(f"[{i}/{total}] {name}: training")
            assert lock is not None
            lock.start_heartbeat()
        started = time.monotonic()
        try:
            metrics = fit(cfg, resume=True)
        except BaseException:
            if coord.rank == 0:
                _log(f"[{i}/{total}] {name}: failed (its lock is released; rerun to resume it)")
            raise
        finally:
            if lock is not None:
                lock.release()
        if coord.rank == 0:
            minutes, seconds = divmod(round(time.monotonic() - started), 60)
            val = (metrics.get("val") or {}).get(plan.spec.get("metric", "auc"))
            score = (
                f", val {plan.spec.get('metric', 'auc').upper()} {100 * val:.2f}" if val is not None else ""
            )
            _log(f"[{i}/{total}] {name}: done in {minutes}m{seconds:02d}s{score}")
        done["trained"].append(name)
    coord.close()
    return done


def collect_runs(out: str | os.PathLike, plan: SweepPlan) -> dict[str, list[dict[str, Any]]]:
    """The finished runs' ``metrics.json`` per arm (in seed order), checked against the plan."""
    out = Path(out)
    runs: dict[str, list[dict[str, Any]]] = {a.id: [] for a in plan.arms}
    for job in sorted(plan.jobs, key=lambda j: (j.arm, j.seed)):
        path = out / job.dir / "metrics.json"
        if not path.is_file():
            continue
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); delete the run folder to retrain it") from e
        arm = plan.arm(job.arm)
        keys = arm.run_keys()
        layer = m.get("llm_layer")
        if (
            m.get("seed") != job.seed
            or m.get("booster") != keys["booster"]
            or (arm.kind in ("llm", "random") and layer is not None and layer != arm.layer)
        ):
            raise ValueError(
                f"{path} is a run of booster={m.get('booster')!r} layer={layer!r} seed={m.get('seed')!r}, "
                f"not of arm {arm.id} seed {job.seed}; the folder was changed by hand"
            )
        runs[job.arm].append({**m, "dir": job.dir})
    return runs


def run_sweep(
    spec: SweepSpec | None = None, out: str | os.PathLike | None = None, *, report_only: bool = False
) -> dict[str, Any]:
    """Train every missing run of ``spec`` (resumable, parallel-safe), then write the report.

    Writes ``sweep_plan.json`` and, from all finished runs, ``sweep.json``, ``sweep.md`` and
    ``sweep.png`` into ``spec.out``. With ``report_only`` only the report is rebuilt, from the
    plan stored in ``out`` (``spec`` may then be ``None``); nothing is trained.

    Returns the content of ``sweep.json`` plus ``"this_process"``: the runs this call
    ``trained``, found ``finished_before`` or left because another process holds them (``busy``).

    Example:
        >>> report = run_sweep(load_sweep_spec("sweep.yaml"))       # doctest: +SKIP
        >>> report = run_sweep(out="runs/sweep", report_only=True)  # doctest: +SKIP
    """
    from .sweep_report import build_report, write_report

    if spec is None and out is None:
        raise ValueError("give a SweepSpec, or out= with report_only=True")
    folder = Path(out if out is not None else spec.out)  # type: ignore[union-attr]
    rank = int(os.environ.get("RANK", "0"))
    activity: dict[str, list[str]] = {"trained": [], "finished_before": [], "busy": []}
    if report_only:
        plan = load_plan(folder)
    else:
        assert spec is not None
        spec.validate()
        plan = plan_sweep(spec)
        error = None
        if rank == 0:
            try:
                _check_plan(folder, plan)
                atomic_write_text(folder / PLAN_FILE, json.dumps(plan.to_dict(), indent=2) + "\n")
            except ValueError as e:
                error = str(e)
        coord = _Coordinator()
        error = coord.share(error)  # under torchrun every rank stops, not rank 0 alone
        if error is not None:
            coord.close()
            raise ValueError(error)
        activity = _run_jobs(plan, folder, float(spec.stale_after))
    report: dict[str, Any] = {}
    if rank == 0:
        stale_after = float(plan.spec.get("stale_after", 600.0))
        lock = wait_for_lock(folder / "locks" / "report.lock", stale_after, what="report")
        if lock is None:
            _log("another process held the report lock for 2 min; writing the report anyway")
        try:  # serialised, so the last process to finish writes the complete report
            report = build_report(plan, collect_runs(folder, plan), busy=_busy_runs(folder, plan))
            write_report(folder, report)
        finally:
            if lock is not None:
                lock.release()
        if activity["busy"]:
            _log(
                f"{len(activity['busy'])} run(s) held by other processes; the report is rewritten by the "
                "last process to finish (or: rllm-zoo sweep --report-only --out " + str(folder) + ")"
            )
    return {**report, "this_process": activity}


def _busy_runs(out: Path, plan: SweepPlan) -> list[str]:
    """Runs without metrics whose lock is held by a live process right now."""
    stale_after = float(plan.spec.get("stale_after", 600.0))
    busy = []
    for job in plan.jobs:
        lock = out / job.lock
        if lock.exists() and not (out / job.dir / "metrics.json").is_file():
            if not lock_stale(lock, read_lock(lock), stale_after):
                busy.append(f"{job.arm}/seed{job.seed}")
    return busy
