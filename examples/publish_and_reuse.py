#!/usr/bin/env python
"""Train a boosted ViT briefly, push it to the Hub at $HF_ENDPOINT, pull it back and check it.

    HF_TOKEN=hf_... python examples/publish_and_reuse.py --repo-id me/retina-r-llm-demo \
        --data-root ../shared/medmnist
    HF_ENDPOINT=http://127.0.0.1:8080 python examples/publish_and_reuse.py --repo-id me/demo ...

Steps: ``rllm-zoo train`` (validation picks the checkpoint, test evaluated once), ``push_run``
(timm repo + model card built from the run's metrics and plots), then ``timm.create_model
("hf-hub:<repo>@<commit>", pretrained=True)`` and ``rllm_zoo.load_from_hub``, whose outputs
must equal the local model's. Everything goes through huggingface_hub, so it works against
huggingface.co or any Hub-compatible endpoint.
"""

from __future__ import annotations

import argparse
import json

import timm
import torch

import rllm_zoo
from rllm_zoo.training import TrainConfig, fit
from rllm_zoo.training.package import load_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo-id", required=True, help="org/name to push to")
    p.add_argument("--data-root", default=None, help="folder with the MedMNIST .npz files")
    p.add_argument("--flag", default="retinamnist")
    p.add_argument("--model", default="rllm_vit_micro_patch4_28")
    p.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON, e.g. '{\"depth\": 2}'")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-train-batches", type=int, default=None, help="cut epochs short (smoke runs)")
    p.add_argument("--weights", default="auto", choices=["auto", "full", "delta"])
    p.add_argument("--out", default="runs/publish-demo")
    args = p.parse_args(argv)

    cfg = TrainConfig(
        flag=args.flag,
        data_root=args.data_root,
        model=args.model,
        model_kwargs=args.model_kwargs,
        epochs=args.epochs,
        max_train_batches=args.max_train_batches,
        out=args.out,
        progress=False,
    )
    metrics = fit(cfg)
    print(f"trained: test ACC {metrics['test']['acc']:.3f}, AUC {metrics['test']['auc']:.3f}")

    pushed = rllm_zoo.push_run(args.out, args.repo_id, weights=args.weights)
    print(f"pushed {pushed.weights} weights ({pushed.weights_bytes / 2**20:.1f} MiB) -> {pushed.url}")

    local, _, _ = load_run(args.out)
    via_timm = timm.create_model(f"hf-hub:{args.repo_id}@{pushed.commit}", pretrained=True).eval()
    via_zoo = rllm_zoo.load_from_hub(args.repo_id, revision=pushed.commit)
    x = torch.rand(4, *via_timm.pretrained_cfg["input_size"])
    with torch.no_grad():
        same = torch.equal(local(x), via_timm(x)) and torch.equal(local(x), via_zoo(x))
    print(f"pulled back at {pushed.commit[:12]}: outputs identical = {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
