"""pytest plugin: run timm's own ``tests/test_models.py`` over rllm_zoo's models only.

Loaded with ``-p rllm_conformance`` (``tools/conformance`` on ``PYTHONPATH``) by
``tools/conformance/run.py`` (``make conformance``), next to the ``tests/`` of timm's source
distribution. It

* imports :mod:`rllm_zoo` (registers the ``rllm_*`` ViTs) and registers, for this session only,
  one boosted variant ``r_llm_boost_<base>`` per plug-and-play family (:data:`PLUG_BASES`: a small
  timm base boosted by :func:`rllm_zoo.boost` through the ``r_llm_boost`` entry point, with a
  random-init SmolLM2 layer so nothing is downloaded);
* classifies each of those models as timm classifies its reference architecture, because timm
  picks a model's tests by *name* (``NON_STD_FILTERS``: ``vit_*``, ``deit*``...) and *source
  module* (``FEAT_INTER_FILTERS``), which our names do not match: an ``rllm_*`` model is classed
  as a timm ``vision_transformer`` ViT (``rllm_vit_x`` as ``vit_x``), ``r_llm_boost_<base>`` as
  ``<base>`` (see :func:`reference_of`). Only these names are listed to timm's parametrisations;
* keeps only the parametrised cases of :data:`GROUPS` whose ``model_name`` is one of them, and
  writes every case's outcome to the JSON file named by ``--rllm-report``.

Usage (what ``run.py`` does)::

    PYTHONPATH=tools/conformance python -m pytest -p rllm_conformance \\
        .cache/conformance/timm-1.0.31/tests/test_models.py --rllm-report out.json

``--rllm-select PATTERN[,PATTERN]`` narrows the models (fnmatch), e.g. ``rllm_vit_micro*``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: test function of timm's tests/test_models.py -> report group
GROUPS: dict[str, str] = {
    "test_model_forward": "forward",
    "test_model_backward": "backward",
    "test_model_default_cfgs": "default_cfgs",
    "test_model_default_cfgs_non_std": "default_cfgs_non_std",
    "test_model_forward_features": "forward_features",
    "test_model_forward_intermediates_features": "forward_intermediates_features",
    "test_model_forward_intermediates": "forward_intermediates",
    "test_prune_intermediate_layers_contract": "prune_intermediate_layers_contract",
    "test_model_forward_torchscript": "forward_torchscript",
    "test_model_forward_fx": "fx_forward",
    "test_model_backward_fx": "fx_backward",
    "test_model_forward_fx_torchscript": "fx_torchscript",
    "test_model_load_pretrained": "load_pretrained",
    "test_model_features_pretrained": "features_pretrained",
}

#: The LLM layer of the plug-and-play variants: SmolLM2's architecture, random init, nothing read.
PLUG_LLM = "random:smollm2"

#: Plug-and-play families: timm base -> extra base kwargs (small configs, so CPU runs take minutes).
PLUG_BASES: dict[str, dict[str, Any]] = {
    "vit_tiny_patch16_224": {},
    "deit_tiny_patch16_224": {},
    "deit3_small_patch16_224": {},
    "eva02_tiny_patch14_224": {},
    "beit_base_patch16_224": {"depth": 4},  # timm's smallest BEiT, 4 of its 12 blocks
    "cait_xxs24_224": {},
    "vit_small_patch14_reg4_dinov2": {"img_size": 224},  # 518 px by default: over timm's test limits
    "resnet18": {},
    "convnext_atto": {},
    "efficientnet_b0": {},
    "mobilenetv3_small_050": {},
    "regnetx_002": {},
}

ZOO_PATTERN = "rllm_*"
PLUG_PREFIX = "r_llm_boost_"
_TAG = re.compile(r"\.[^.]*$")

#: pretrained cfgs of the session's plug variants (read by timm's register_model)
default_cfgs: dict[str, Any] = {}


def plug_name(base: str) -> str:
    """The session name of the boosted ``base``: ``r_llm_boost_<base>``."""
    return PLUG_PREFIX + base


def untagged(name: str) -> str:
    """``name`` without its pretrained tag (``rllm_vit_micro_patch4_28.untrained`` -> ``rllm_vit_micro_patch4_28``)."""
    return name.split(".", 1)[0]


def kind_of(name: str) -> str | None:
    """``"zoo"`` (an ``rllm_*`` model), ``"plug"`` (a session ``r_llm_boost_<base>``) or ``None``."""
    arch = untagged(name)
    if fnmatch.fnmatch(arch, ZOO_PATTERN):
        return "zoo"
    if arch.startswith(PLUG_PREFIX) and arch[len(PLUG_PREFIX) :] in PLUG_BASES:
        return "plug"
    return None


def reference_of(name: str) -> tuple[str, str]:
    """``(reference name, reference module)``: the timm architecture ``name`` is classified as.

    Example:
        >>> reference_of("rllm_vit_micro_patch4_28.untrained")
        ('vit_micro_patch4_28', 'vision_transformer')
        >>> reference_of("r_llm_boost_resnet18")[0]
        'resnet18'
    """
    arch = untagged(name)
    if kind_of(arch) == "zoo":
        return arch[len("rllm_") :], "vision_transformer"
    base = arch[len(PLUG_PREFIX) :]
    from timm.models._registry import _model_to_module

    return base, _model_to_module.get(base, "")


def _as_list(value: str | Iterable[str] | None) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(name, _TAG.sub("", p)) for p in patterns)


def classify(
    names: Iterable[str],
    *,
    filter: str | Iterable[str] = "",
    module: str | Iterable[str] = "",
    exclude_filters: str | Iterable[str] = "",
    reference: Callable[[str], tuple[str, str]] = reference_of,
) -> list[str]:
    """The ``names`` that timm's ``list_models`` name/module filters would keep for their references.

    Pretrained and ``name_matches_cfg`` constraints are the caller's (they hold for a name itself).

    Example:
        >>> ref = {"rllm_vit_a": ("vit_a", "vision_transformer"), "r_llm_boost_resnet18": ("resnet18", "resnet")}
        >>> classify(ref, filter=["vit_*", "deit*"], reference=ref.get)
        ['rllm_vit_a']
        >>> classify(ref, module=["resnet", "deit"], reference=ref.get)
        ['r_llm_boost_resnet18']
        >>> classify(ref, exclude_filters=["vit_*"], reference=ref.get)
        ['r_llm_boost_resnet18']
    """
    include, exclude, modules = _as_list(filter), _as_list(exclude_filters), _as_list(module)
    kept = []
    for name in names:
        ref_name, ref_module = reference(untagged(name))
        if include and not _matches(ref_name, include):
            continue
        if exclude and _matches(ref_name, exclude):
            continue
        if modules and ref_module not in modules:
            continue
        kept.append(name)
    return kept


# ------------------------------------------------------------------ session models


def register_plug_variants(bases: dict[str, dict[str, Any]] = PLUG_BASES, llm: str = PLUG_LLM) -> list[str]:
    """Register ``r_llm_boost_<base>`` in timm for each base (build: ``r_llm_boost``, ``base=<base>``)."""
    import timm
    from timm.models import generate_default_cfgs, register_model

    import rllm_zoo  # noqa: F401  (registers rllm_* and r_llm_boost)
    from rllm_zoo.timm_boost import r_llm_boost

    names = []
    cfgs = {}
    for base, extra in bases.items():
        cfg = timm.get_pretrained_cfg(base).to_dict()
        cfg = {
            k: v for k, v in cfg.items() if k not in ("hf_hub_id", "hf_hub_filename", "url", "file", "source")
        }
        cfg.pop("architecture", None)
        cfg.pop("tag", None)
        if "img_size" in extra:
            size = extra["img_size"]
            cfg["input_size"] = (cfg["input_size"][0], size, size)
        cfgs[plug_name(base)] = cfg
    default_cfgs.update(generate_default_cfgs(cfgs))
    for base, extra in bases.items():
        name = plug_name(base)

        def factory(pretrained: bool = False, *, _base: str = base, _extra: dict = extra, **kwargs: Any):
            kwargs.pop("pretrained_cfg", None)  # the base's data config is r_llm_boost's own
            return r_llm_boost(pretrained, base=_base, **{"llm": llm, **_extra, **kwargs})

        factory.__name__ = factory.__qualname__ = name
        factory.__module__ = __name__
        factory.__doc__ = f"{name}: timm {base} boosted by rllm_zoo.boost (conformance session only)."
        register_model(factory)
        names.append(name)
    return names


def session_models(select: list[str] | None = None) -> list[str]:
    """The untagged names under test: every ``rllm_*`` model and every plug variant (``select``: fnmatch)."""
    import timm

    names = [n for n in timm.list_models(ZOO_PATTERN)] + [plug_name(b) for b in PLUG_BASES]
    if select:
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in select)]
    return names


def serve_zoo(zoo: Path, org: str | None = None) -> tuple[Any, Any, str]:
    """Serve every ``zoo/<name>/`` holding ``config.json`` + ``model.safetensors`` as ``<org>/<name>``.

    Starts the local Hub test server (``tests/hub_server.py``) and points this process's
    ``huggingface_hub`` at it, so ``timm.create_model("<zoo tag>", pretrained=True)`` loads the
    zoo's own released weights, as from the Hub. Returns ``(server, patcher, hf_home)``.
    """
    import sys
    import tempfile

    import pytest

    from rllm_zoo.timm_vit import default_hub_org

    tests = Path(__file__).resolve().parents[2] / "tests"
    if str(tests) not in sys.path:
        sys.path.append(str(tests))
    from hub_server import LocalHubServer, point_hub_client

    server = LocalHubServer().start()
    for folder in sorted(p for p in zoo.iterdir() if (p / "model.safetensors").is_file()):
        if (folder / "config.json").is_file():
            files = {
                n: folder / n
                for n in ("config.json", "model.safetensors", "README.md")
                if (folder / n).is_file()
            }
            server.add_files(f"{org or default_hub_org}/{folder.name}", files)
    home = tempfile.mkdtemp(prefix="rllm-conformance-hf-")
    patcher = pytest.MonkeyPatch()
    point_hub_client(patcher, server, Path(home) / "hf_home")
    return server, patcher, home


def make_list_models(original: Callable[..., list[str]], ours: list[str]) -> Callable[..., list[str]]:
    """A ``timm.list_models`` that lists only ``ours``, each classified as its reference architecture."""
    from timm.models import _registry

    def list_models(
        filter: str | Iterable[str] = "",
        module: str | Iterable[str] = "",
        pretrained: bool = False,
        exclude_filters: str | Iterable[str] = "",
        name_matches_cfg: bool = False,
        include_tags: bool | None = None,
    ) -> list[str]:
        tags = pretrained if include_tags is None else include_tags
        names: list[str] = []
        for arch in ours:
            names.extend((_registry._model_with_tags.get(arch) or [arch]) if tags else [arch])
        if pretrained:
            names = [n for n in names if n in _registry._model_has_pretrained]
        if name_matches_cfg:
            names = [n for n in names if n in _registry._model_pretrained_cfgs]
        return classify(names, filter=filter, module=module, exclude_filters=exclude_filters)

    list_models.__wrapped__ = original  # type: ignore[attr-defined]
    return list_models


def select_items(items: list[Any], ours: Iterable[str]) -> tuple[list[Any], list[Any]]:
    """``(kept, deselected)``: keep the cases of :data:`GROUPS` whose ``model_name`` is one of ``ours``."""
    ours = set(ours)
    kept, dropped = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        model = spec.params.get("model_name") if spec is not None else None
        name = getattr(item, "originalname", None) or item.name.split("[")[0]
        if name in GROUPS and isinstance(model, str) and untagged(model) in ours:
            kept.append(item)
        else:
            dropped.append(item)
    return kept, dropped


# ------------------------------------------------------------------ pytest hooks


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("rllm_conformance")
    group.addoption("--rllm-report", default=None, help="write every case's outcome to this JSON file")
    group.addoption("--rllm-select", default="", help="comma-separated fnmatch patterns of models to keep")
    group.addoption(
        "--rllm-hub",
        default=None,
        help="serve the zoo's pretrained tags in this folder (zoo/) from the local Hub test server (tests/hub_server.py)",
    )


_STATE: dict[str, Any] = {}


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "timeout(seconds): timm's per-test limit (pytest-timeout, if installed)"
    )
    import timm
    import timm.models
    from timm.models import _registry

    register_plug_variants()
    zoo = config.getoption("--rllm-hub")
    if zoo:
        _STATE["hub"] = serve_zoo(Path(zoo))
    select = [p for p in (config.getoption("--rllm-select") or "").split(",") if p]
    ours = session_models(select)
    _STATE.update(ours=ours, results={}, started=time.time(), original=_registry.list_models)
    shim = make_list_models(_registry.list_models, ours)
    for mod in (timm, timm.models, _registry):
        mod.list_models = shim


def pytest_unconfigure(config: Any) -> None:
    hub = _STATE.pop("hub", None)
    if hub is not None:
        server, patcher, home = hub
        patcher.undo()
        server.stop()
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    original = _STATE.get("original")
    if original is not None:
        import timm
        import timm.models
        from timm.models import _registry

        for mod in (timm, timm.models, _registry):
            mod.list_models = original
    path = config.getoption("--rllm-report", default=None)
    if path and "results" in _STATE:
        import torch

        out = {
            "timm": __import__("timm").__version__,
            "torch": torch.__version__,
            "models": {n: kind_of(n) for n in _STATE["ours"]},
            "seconds": round(time.time() - _STATE["started"], 1),
            "cases": sorted(_STATE["results"].values(), key=lambda r: (r["group"], r["model"])),
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    kept, dropped = select_items(items, _STATE.get("ours", []))
    _STATE["items"] = {
        item.nodeid: (GROUPS[item.originalname], item.callspec.params["model_name"]) for item in kept
    }
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept


def pytest_runtest_logreport(report: Any) -> None:
    if "results" not in _STATE:
        return
    case = _STATE.get("items", {}).get(report.nodeid)
    if case is None:
        return
    group, model = case
    rec = _STATE["results"].setdefault(
        report.nodeid,
        {"group": group, "model": model, "kind": kind_of(model), "outcome": "passed", "message": ""},
    )
    if report.failed:
        rec["outcome"] = "failed"
        rec["message"] = _first_line(report)
    elif report.skipped and rec["outcome"] != "failed":
        rec["outcome"] = "skipped"
        rec["message"] = _skip_reason(report)
    rec["seconds"] = round(rec.get("seconds", 0.0) + float(getattr(report, "duration", 0.0)), 2)


def _first_line(report: Any) -> str:
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    text = " ".join(text.split())
    return text[:300]


def _skip_reason(report: Any) -> str:
    rep = report.longrepr
    if isinstance(rep, tuple) and len(rep) == 3:
        return str(rep[2]).removeprefix("Skipped: ")[:300]
    return str(rep)[:300]
