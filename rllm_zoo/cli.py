"""``rllm-zoo`` (and ``python -m rllm_zoo``): train, evaluate, package and list.

rllm-zoo train --flag retinamnist --data-root ../shared/medmnist --epochs 10 --out runs/retina
rllm-zoo train --config configs/retina.yaml --booster mlp --seeds 0,1,2
torchrun --nproc_per_node 2 -m rllm_zoo train --flag retinamnist ...
rllm-zoo eval runs/retina --split test
rllm-zoo package runs/retina
rllm-zoo list
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

__all__ = ["main"]


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
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        result = fit_seeds(cfg, seeds, resume=args.resume)
        show = {k: v for k, v in result.items() if k != "runs"}
    else:
        result = fit(cfg, resume=args.resume)
        show = result
        if args.package and result:
            result["package"] = str(package_run(cfg.out))
    if show:
        print(json.dumps(show, indent=2))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .training import evaluate_run

    print(json.dumps(evaluate_run(args.run, split=args.split, checkpoint=args.checkpoint), indent=2))
    return 0


def _package(args: argparse.Namespace) -> int:
    from .training import package_run

    print(package_run(args.run, args.out))
    return 0


def _cam(args: argparse.Namespace) -> int:
    from .training.explain import cam_for_run

    indices = [int(i) for i in args.indices.split(",")] if args.indices else None
    print(cam_for_run(args.run, split=args.split, indices=indices, n=args.n, out=args.out))
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
        prog="rllm-zoo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train and evaluate on MedMNIST (val selects, test once)")
    _add_train_args(train)
    train.set_defaults(func=_train)
    ev = sub.add_parser("eval", help="evaluate a run's checkpoint on a split")
    ev.add_argument("run", help="the --out folder of a train run")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--checkpoint", default="best", choices=["best", "last"])
    ev.set_defaults(func=_eval)
    pk = sub.add_parser("package", help="write a timm / Hugging Face folder for a 2D run")
    pk.add_argument("run")
    pk.add_argument("--out", default=None)
    pk.set_defaults(func=_package)
    cam = sub.add_parser("cam", help="Grad-CAM overlays (PNG) of a run's selected checkpoint")
    cam.add_argument("run")
    cam.add_argument("--split", default="test", choices=["train", "val", "test"])
    cam.add_argument("--n", type=int, default=8, help="the first N images of the split")
    cam.add_argument("--indices", default=None, help="comma-separated image indices instead of --n")
    cam.add_argument("--out", default=None, help="PNG path (default: <run>/cam_<split>.png)")
    cam.set_defaults(func=_cam)
    ls = sub.add_parser("list", help="list models, presets and MedMNIST flags")
    ls.set_defaults(func=_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"rllm-zoo {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
