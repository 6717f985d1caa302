"""Write docs/backbones.md (+ docs/backbones.json): the backbones rllm_zoo.boost supports, and the booster's FLOPs.

    python benchmarks/backbones_table.py [--llm smollm2] [--out docs/backbones.md]

For one example of each supported family (timm token models, timm CNNs, MONAI ViT / UNETR /
SwinUNETR / BasicUNet), the model is built twice with random init, plain and boosted at its
default site (``rllm_zoo.boost`` / ``create_network``) with the real LLM layer (SmolLM2-135M
layer -1 by default), and one forward pass (batch 1, at the stated input size) is counted by
``rllm_zoo.flops.flop_counter`` (``torch.utils.flop_counter`` plus CPU attention; a multiply-add
counts as 2 FLOPs). The booster's FLOPs are those counted inside the ``booster`` module (two
adapters, the LLM block and its norm); the LLM block's alone are ``rllm_zoo.flops.block_flops``.
Every number in docs/backbones.md comes from this script.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

import rllm_zoo
from rllm_zoo.flops import block_flops, flop_counter
from rllm_zoo.monai import create_network
from rllm_zoo.training.config import atomic_write_text

IMG2D = (3, 224, 224)
IMG3D = (1, 96, 96, 96)


def _timm(name: str, **kw: Any) -> Callable[[bool, str], nn.Module]:
    def build(boosted: bool, llm: str) -> nn.Module:
        model = timm.create_model(name, **kw)
        return rllm_zoo.boost(model, llm=llm) if boosted else model

    return build


def _monai(name: str, **kw: Any) -> Callable[[bool, str], nn.Module]:
    def build(boosted: bool, llm: str) -> nn.Module:
        return (
            create_network(name, **kw, llm=llm) if boosted else create_network(name, **kw, use_booster=False)
        )

    return build


#: (family, model label, builder, input shape)
ROWS: list[tuple[str, str, Callable[[bool, str], nn.Module], tuple[int, ...]]] = [
    ("timm token model", "vit_small_patch16_224", _timm("vit_small_patch16_224"), IMG2D),
    ("timm token model", "vit_base_patch16_224", _timm("vit_base_patch16_224"), IMG2D),
    ("timm token model", "deit_tiny_patch16_224", _timm("deit_tiny_patch16_224"), IMG2D),
    ("timm token model", "deit3_small_patch16_224", _timm("deit3_small_patch16_224"), IMG2D),
    ("timm token model", "eva02_small_patch14_224", _timm("eva02_small_patch14_224"), IMG2D),
    ("timm token model", "beit_base_patch16_224", _timm("beit_base_patch16_224"), IMG2D),
    (
        "timm token model",
        "vit_small_patch14_reg4_dinov2 (img_size=224)",
        _timm("vit_small_patch14_reg4_dinov2", img_size=224),
        IMG2D,
    ),
    ("timm CNN", "resnet18", _timm("resnet18"), IMG2D),
    ("timm CNN", "resnet50", _timm("resnet50"), IMG2D),
    ("timm CNN", "convnext_tiny", _timm("convnext_tiny"), IMG2D),
    ("timm CNN", "efficientnet_b0", _timm("efficientnet_b0"), IMG2D),
    ("timm CNN", "mobilenetv3_large_100", _timm("mobilenetv3_large_100"), IMG2D),
    ("timm CNN", "regnety_016", _timm("regnety_016"), IMG2D),
    (
        "MONAI ViT",
        "ViT (patch 16, width 768, 12 layers)",
        _monai("ViT", in_channels=1, img_size=96, patch_size=16, classification=True, num_classes=2),
        IMG3D,
    ),
    (
        "MONAI UNETR",
        "UNETR (width 768, feature_size 16)",
        _monai("UNETR", in_channels=1, out_channels=14, img_size=96),
        IMG3D,
    ),
    (
        "MONAI SwinUNETR",
        "SwinUNETR (feature_size 48)",
        _monai("SwinUNETR", in_channels=1, out_channels=14),
        IMG3D,
    ),
    (
        "MONAI BasicUNet",
        "BasicUNet (features 32..256)",
        _monai("BasicUNet", in_channels=1, out_channels=14),
        IMG3D,
    ),
]


def _count(model: nn.Module, shape: tuple[int, ...]) -> dict[str, dict[Any, int]]:
    x = torch.randn(1, *shape)
    with torch.no_grad(), flop_counter() as counter:
        model.eval()(x)
    return counter.get_flop_counts()


def measure(
    family: str, label: str, build: Callable[[bool, str], nn.Module], shape: tuple[int, ...], llm: str
) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(0)
    plain = build(False, llm)
    base = _count(plain, shape)["Global"]
    torch.manual_seed(0)
    model = build(True, llm)
    counts = _count(model, shape)
    total = sum(counts["Global"].values())
    booster = block_flops(counts, suffix=".booster")
    block = block_flops(counts)
    site = model.boost_site
    tokens = {}
    model.booster.register_forward_pre_hook(lambda m, a: tokens.update(n=int(a[0].shape[1])))
    with torch.no_grad():
        model(torch.randn(1, *shape))
    info = model.booster.block.info
    return {
        "family": family,
        "model": label,
        "input": list(shape),
        "site": site.name,
        "layout": site.layout,
        "tokens": tokens["n"],
        "width": site.dim,
        "llm": f"{info.source} layer {info.layer} (width {info.width})",
        "gflops_baseline": sum(base.values()) / 1e9,
        "gflops_boosted": total / 1e9,
        "gflops_booster": booster / 1e9,
        "gflops_llm_block": block / 1e9,
        "booster_share": booster / total,
        "llm_block_share": block / total,
        "params_backbone_M": sum(p.numel() for p in plain.parameters()) / 1e6,
        "params_adapters_M": sum(p.numel() for p in model.booster.parameters() if p.requires_grad) / 1e6,
        "params_frozen_M": sum(p.numel() for p in model.parameters() if not p.requires_grad) / 1e6,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _shape(shape: list[int]) -> str:
    return f"{shape[0]}×{'×'.join(map(str, shape[1:]))}"


def render(saved: dict[str, Any], json_name: str) -> str:
    """docs/backbones.md from the JSON this script writes (``rows``, ``llm`` and the versions)."""
    rows, llm = saved["rows"], saved["llm"]
    lines = [
        "# Boosting any backbone: supported families and the booster's cost",
        "",
        '`rllm_zoo.boost(model, llm=..., layer=-1, variant="residual", at=None)` puts one frozen LLM layer',
        "between two trainable adapters into an existing timm or MONAI model, **in place** (the same object is",
        "returned, its class and API unchanged). The booster is registered as `model.booster` (state-dict keys",
        "`booster.*`, as in the zoo's own models; the backbone's keys do not change, so its checkpoints still",
        "load) and runs on the output of one module, `model.boost_site`, through a forward hook: every code path",
        "that calls that module (`forward`, timm's `forward_features` / `forward_intermediates`, gradient",
        "checkpointing, MONAI's decoders) sees the boosted output. Token outputs `(B, N, C)` are boosted as they",
        "are; feature maps `(B, C, *spatial)` are flattened to `N = ∏spatial` tokens, boosted and folded back.",
        "The LLM block stays frozen: no gradient is computed for it and `rllm_zoo.trainable_parameters(model)`",
        "(what an optimizer should get) leaves it out.",
        "",
        "| family | classes | default site (`at=None`) | `at=<int>` indexes |",
        "|---|---|---|---|",
        "| timm token models | `VisionTransformer` and relatives: ViT, DeiT (distilled too), DeiT-III, EVA-02, BEiT, DINOv2 with registers, CaiT, FlexiViT, ViT-RelPos | the last block `blocks.{depth-1}`, before the final norm (the paper's place) | `blocks` |",
        "| timm CNNs | `ResNet`, `ConvNeXt`, `EfficientNet` (MixNet, MNASNet...), `MobileNetV3`, `RegNet`, `ResNetV2`, `GhostNet` | the last stage of timm's `feature_info` (`layer4`, `stages.3`, `blocks.6`...) | `feature_info` stages |",
        "| MONAI ViT | `monai.networks.nets.ViT` | `blocks.{num_layers-1}`, before `norm` | `blocks` |",
        "| MONAI UNETR | `monai.networks.nets.UNETR` | its ViT encoder's last block `vit.blocks.11` (the tokens the deepest decoder level reads) | `vit.blocks` |",
        "| MONAI SwinUNETR | `monai.networks.nets.SwinUNETR` | the last Swin stage `swinViT.layers4.0` (the bottleneck), before the encoder's output norm | Swin stages 1-4 |",
        "| MONAI BasicUNet | `monai.networks.nets.BasicUNet` | the bottleneck `down_4` | `down_1`..`down_4` |",
        "",
        'Other models: `at="<module name>"` boosts the output of any module (width and layout are inferred from',
        'its last layer, or given with `dim=` / `layout="tokens" | "channels_first" | "channels_last"`);',
        "without `at=` an unknown model gets a one-line `ValueError` naming the supported kinds and `at=`.",
        "",
        "## Three ways in",
        "",
        "```python",
        "import timm, rllm_zoo",
        "",
        'model = rllm_zoo.boost(timm.create_model("convnext_tiny", pretrained=True, num_classes=5), variant="hybrid")',
        'model = timm.create_model("r_llm_boost", base="deit_small_patch16_224", base_pretrained=True, num_classes=5)',
        "",
        "from rllm_zoo.monai import create_network",
        'net = create_network("UNETR", in_channels=1, out_channels=14, img_size=96, llm="smollm2")',
        "```",
        "",
        "* `rllm_zoo.boost(model, ...)` for a model you already have (`at=`, `variant=`, `freeze=`, `post_norm=`).",
        '* `timm.create_model("r_llm_boost", base=<any supported timm name>, ...)`: one registered timm',
        "  architecture; the base's own arguments pass through, `base_pretrained=True` loads the base's timm",
        "  weights (or a weights file), and the booster takes the zoo's keyword names (`llm`, `llm_layer`,",
        "  `booster`, `freeze_llm`, `llm_post_norm`, `boost_at`). `rllm_zoo.save_pretrained` / `push_to_hub`",
        "  write `architecture: r_llm_boost` with the base and the LLM layer's sha256 in `model_args`, so",
        '  `timm.create_model("hf-hub:<repo>", pretrained=True)` rebuilds it (after `import rllm_zoo`), with',
        "  full or delta weights. A directly boosted timm model is saved the same way. (Not `rllm_*`: that",
        "  pattern lists the zoo's own ViT family.)",
        '* `rllm_zoo.monai.create_network("ViT" | "UNETR" | "SwinUNETR" | "BasicUNet", <MONAI arguments>,',
        "  use_booster=..., llm=..., llm_layer=..., booster=..., boost_at=...)`, usable as a bundle's",
        '  `network_def` (`{"_target_": "rllm_zoo.monai.create_network", "name": "UNETR", ...}`); the output',
        "  shape is MONAI's. `save_pretrained` / `push_to_hub` write a network bundle (`configs/inference.json`",
        "  with a literal `network_def`, `configs/metadata.json`, `models/model.pt`) that `rllm_zoo.load_from_hub`",
        '  and `monai.bundle.load(..., workflow_type="inference")` rebuild.',
        "* `rllm-zoo train --model <timm name>` boosts any timm model (through `r_llm_boost`) unless `--booster off`.",
        "",
        "The zoo's own models use the same mechanism: `rllm_vit_*` attach their booster to `blocks[-1]`, the",
        "MONAI presets to their last (temporal) block, with unchanged state-dict keys.",
        "",
        "`variant=\"residual\"` (R-LLM, the default) replaces the site's output by the adapters' output",
        "`A_out(B(h) + h)`; `out` and `hybrid` add it to the backbone's own features (`+ z`), which keeps a",
        "pretrained backbone's features intact at initialisation.",
        "",
        "## The booster's share of the FLOPs",
        "",
        f"Produced by `python benchmarks/backbones_table.py --llm {llm}` (raw numbers:",
        f"[{json_name}]({json_name})); torch {saved['torch']}, timm {saved['timm']}, {saved['machine']}.",
        "One forward pass, batch 1, random init, counted by `rllm_zoo.flops.flop_counter` (`torch.utils.flop_counter`",
        "with CPU attention; a multiply-add is 2 FLOPs). *Tokens* is what the booster sees (`N × C` at the site);",
        "*booster* = both adapters + the LLM block + its norm; *LLM block* = `rllm_zoo.flops.block_flops`;",
        "shares are of the boosted model's total. In training a trainable layer costs about 3x its forward FLOPs",
        "and the frozen LLM block about 2x (only the gradient of its input is computed; see `tests/test_flops.py`),",
        "so the booster's share of a training step is a little below these forward shares.",
        "",
        "| family | model | input | site | tokens (N × C) | baseline GFLOPs | boosted GFLOPs | booster GFLOPs | booster share | LLM block share | adapters (M params) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name, _, note = r["model"].partition(" (")
        label = f"`{name}`" + (f" ({note}" if note else "")
        lines.append(
            f"| {r['family']} | {label} | {_shape(r['input'])} | `{r['site']}` | {r['tokens']} × {r['width']} | "
            f"{r['gflops_baseline']:.2f} | {r['gflops_boosted']:.2f} | {r['gflops_booster']:.3f} | "
            f"{100 * r['booster_share']:.1f}% | {100 * r['llm_block_share']:.1f}% | {r['params_adapters_M']:.2f} |"
        )
    llms = sorted({r["llm"] for r in rows})
    lines += [
        "",
        f"LLM layer: {', '.join(llms)}; its {rows[0]['params_frozen_M']:.2f} M parameters are frozen in every row.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--llm", default=rllm_zoo.DEFAULT_LLM)
    parser.add_argument("--out", type=Path, default=Path("docs/backbones.md"))
    parser.add_argument("--only", nargs="*", help="model labels to measure (default: all)")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the markdown from the JSON next to it (no measuring)",
    )
    args = parser.parse_args()
    json_path = args.out.with_suffix(".json")
    if args.render_only:
        saved = json.loads(json_path.read_text(encoding="utf-8"))
        atomic_write_text(args.out, render(saved, json_path.name))
        return
    torch.set_grad_enabled(False)
    rows = []
    for family, label, build, shape in ROWS:
        if args.only and label not in args.only:
            continue
        row = measure(family, label, build, shape, args.llm)
        print(
            f"{label}: {row['gflops_boosted']:.2f} GFLOPs, booster {100 * row['booster_share']:.1f}% ({row['seconds']} s)",
            flush=True,
        )
        rows.append(row)
    saved = {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "machine": platform.machine(),
        "llm": args.llm,
        "rows": rows,
    }
    atomic_write_text(json_path, json.dumps(saved, indent=2) + "\n")
    atomic_write_text(args.out, render(saved, json_path.name))


if __name__ == "__main__":
    main()
