"""Write docs/zoo.md: every registered rllm_* model with its parameters and GFLOPs.

    python benchmarks/zoo_table.py [--llm smollm2] [--out docs/zoo.md]

Parameters are split into trainable (ViT + adapters) and frozen (the LLM block);
GFLOPs are counted by ``torch.utils.flop_counter`` (with CPU attention: ``rllm_zoo.flops``) for one image at the model's
default input size (a multiply-add counts as 2 FLOPs), with and without the booster.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import timm
import torch

import rllm_zoo
from rllm_zoo.flops import flop_counter
from rllm_zoo.training.config import atomic_write_text


def gflops(model: torch.nn.Module, size: tuple[int, ...]) -> float:
    x = torch.randn(1, *size)
    with torch.no_grad(), flop_counter() as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def measure(name: str, llm: str) -> dict:
    model = timm.create_model(name, llm=llm).eval()
    base = timm.create_model(name, booster=False).eval()
    size = tuple(model.pretrained_cfg["input_size"])
    info = model.booster.block.info
    return {
        "model": name,
        "input_size": list(size),
        "tokens": int(model.patch_embed.num_patches + model.num_prefix_tokens),
        "llm": f"{info.source} layer {info.layer}",
        "params_trainable_M": sum(p.numel() for p in model.trainable_parameters()) / 1e6,
        "params_frozen_M": sum(p.numel() for p in model.parameters() if not p.requires_grad) / 1e6,
        "params_baseline_M": sum(p.numel() for p in base.parameters()) / 1e6,
        "gflops": gflops(model, size),
        "gflops_baseline": gflops(base, size),
        "pretrained_tags": [t.split(".", 1)[1] for t in timm.list_pretrained(f"{name}.*")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--llm", default=rllm_zoo.DEFAULT_LLM)
    parser.add_argument("--out", type=Path, default=Path("docs/zoo.md"))
    args = parser.parse_args()
    rows = [measure(name, args.llm) for name in timm.list_models("rllm_*")]
    atomic_write_text(
        args.out.with_suffix(".json"), json.dumps({"torch": torch.__version__, "rows": rows}, indent=2)
    )
    lines = [
        "# The 2D model zoo",
        "",
        f"Produced by `python benchmarks/zoo_table.py --llm {args.llm}` (raw numbers: "
        f"[{args.out.with_suffix('.json').name}]({args.out.with_suffix('.json').name})); "
        f"torch {torch.__version__}, {platform.machine()}.",
        "GFLOPs for one image at the default input size, counted by `torch.utils.flop_counter` with CPU attention included (`rllm_zoo.flops`) "
        "(multiply-add = 2 FLOPs); baseline = the same ViT with `booster=False`.",
        "",
        "| model | input | tokens | LLM block | trainable (M) | frozen (M) | baseline (M) | GFLOPs | baseline GFLOPs | pretrained tags |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['model']}` | {'x'.join(map(str, r['input_size']))} | {r['tokens']} | {r['llm']} | "
            f"{r['params_trainable_M']:.2f} | {r['params_frozen_M']:.2f} | {r['params_baseline_M']:.2f} | "
            f"{r['gflops']:.3f} | {r['gflops_baseline']:.3f} | {', '.join(r['pretrained_tags']) or '-'} |"
        )
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
