"""P2 / P3: what the booster costs. Base ViT vs boosted, side by side in one run.

    python benchmarks/p2p3_speed.py                      # writes benchmarks/results/p2p3_speed.{json,md}
    python benchmarks/p2p3_speed.py --sizes 28 --repeats 3 --out /tmp/p2p3   # a quick look

For ViT-S at 28 px (patch 4) and 224 px (patch 16), three arms: the plain ViT, +R-LLM with
the real SmolLM2 block, and +R-LLM with a random LLaMA-7B-shaped block (width 4096, FFN
11008; nothing is downloaded: the block is built from a config). Each measurement runs in a
fresh subprocess, so peak memory (VmHWM, reset after warm-up) belongs to it alone:

- FLOPs per image, counted by ``torch.utils.flop_counter`` (multiply-add = 2);
- inference images/s in fp32 and under bf16 autocast;
- training step time and peak memory with the block frozen (the paper) and unfrozen.

Targets (reported as measured, met or not): boosted/base time within 1.1x of the FLOP ratio;
bf16 >= 3x fp32 images/s; the frozen block costs <= 2x its forward FLOPs in training
(estimated from times: (train_boosted - train_mlp) / (infer_boosted - infer_mlp), the mlp
arm having the same adapters and no block).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ARMS = {
    "base": dict(booster=False),
    "mlp": dict(booster="mlp", llm="smollm2"),
    "smollm2": dict(booster="residual", llm="smollm2"),
    "llama7b_random": dict(booster="residual", llm="random:{llama7b}"),
}
MODELS = {28: "rllm_vit_small_patch4_28", 224: "rllm_vit_small_patch16_224"}
BATCH = {28: 64, 224: 16}


def _llama7b_config(cache: Path) -> Path:
    """A config-only folder with LLaMA-7B's shape (the block is randomly initialised from it)."""
    from transformers import LlamaConfig

    folder = cache / "llama7b-config"
    if not (folder / "config.json").is_file():
        LlamaConfig(
            hidden_size=4096,
            intermediate_size=11008,
            num_attention_heads=32,
            num_key_value_heads=32,
            num_hidden_layers=32,
            vocab_size=32000,
            rms_norm_eps=1e-6,
        ).save_pretrained(folder)
    return folder


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _mem(r: dict) -> str:
    """Peak RSS of a training measurement (with what the steps added on top of the warm-up), or '-'."""
    if "train_peak_rss_bytes" not in r:
        return "-"
    return f"{r['train_peak_rss_bytes'] / 2**20:.0f} MiB ({r['train_peak_extra_bytes'] / 2**20:.0f})"


def worker(spec: dict) -> dict:
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import rllm_zoo  # noqa: F401

    torch.manual_seed(0)
    kwargs = dict(spec["arm_kwargs"])
    if "llm" in kwargs:
        kwargs["llm"] = kwargs["llm"].format(llama7b=spec["llama7b"])
    model = timm.create_model(spec["model"], num_classes=5, freeze_llm=not spec.get("unfrozen"), **kwargs)
    size, batch, reps = spec["size"], spec["batch"], spec["repeats"]
    x = torch.randn(batch, 3, size, size)
    result: dict = {"params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    result["params_total"] = sum(p.numel() for p in model.parameters())
    if spec["task"] == "infer":
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x[:1])
        result["flops_per_image"] = counter.get_total_flops()
        for precision in ("fp32", "bf16"):
            times = []
            for i in range(reps + 1):
                t = time.perf_counter()
                with (
                    torch.no_grad(),
                    torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"),
                ):
                    model(x)
                if i:  # the first call warms up
                    times.append(time.perf_counter() - t)
            result[f"images_per_s_{precision}"] = batch / statistics.median(times)
    else:
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)

        def step() -> None:
            loss = model(x).logsumexp(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()  # warm-up: allocates gradients and optimizer state
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status()["VmRSS"]
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        result["train_step_s"] = statistics.median(times)
        result["train_peak_extra_bytes"] = _status()["VmHWM"] - base
        # whole-process peak during the steps: model, gradients and optimizer state included
        result["train_peak_rss_bytes"] = _status()["VmHWM"]
        result["train_rss_bytes"] = _status()["VmRSS"]
    return result


def run_case(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, timeout=3600
    )
    if proc.returncode:
        return {
            "error": proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit {proc.returncode}"
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: dict, command: str) -> str:
    lines = [
        "# P2 / P3: speed and memory of the booster",
        "",
        f"Produced by `{command}` (raw numbers: [p2p3_speed.json](p2p3_speed.json)); {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {results['meta']['cpu']}. Each cell is a fresh process; times are medians.",
        "",
        "| size | arm | GFLOPs/img | img/s fp32 | img/s bf16 | bf16/fp32 | train step frozen (s) | "
        "peak RSS frozen (step extra) | train step unfrozen (s) | peak RSS unfrozen (step extra) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for size, arms in results["sizes"].items():
        for arm, r in arms.items():
            inf, fr, un = r.get("infer", {}), r.get("train_frozen", {}), r.get("train_unfrozen", {})
            ratio = (
                inf.get("images_per_s_bf16", 0) / inf["images_per_s_fp32"]
                if inf.get("images_per_s_fp32")
                else 0
            )
            lines.append(
                f"| {size} | {arm} | {inf.get('flops_per_image', 0) / 1e9:.3f} | {inf.get('images_per_s_fp32', 0):.1f} | "
                f"{inf.get('images_per_s_bf16', 0):.1f} | {ratio:.2f} | {fr.get('train_step_s', float('nan')):.3f} | "
                f"{_mem(fr)} | {un.get('train_step_s', float('nan')):.3f} | {_mem(un)} |"
            )
            verdicts.append(
                f"- {size} px, {arm}: bf16 / fp32 images/s = {ratio:.2f} (target >= 3): "
                f"{'met' if ratio >= 3 else 'not met'}."
            )
        base = arms.get("base", {}).get("infer", {})
        mlp = arms.get("mlp", {})
        for arm in ("smollm2", "llama7b_random"):
            r = arms.get(arm, {})
            inf = r.get("infer", {})
            if not (base and inf and "flops_per_image" in inf):
                continue
            flop_ratio = inf["flops_per_image"] / base["flops_per_image"]
            time_ratio = base["images_per_s_fp32"] / inf["images_per_s_fp32"]
            verdicts.append(
                f"- {size} px, {arm}: time ratio boosted/base {time_ratio:.2f} vs FLOP ratio {flop_ratio:.2f} "
                f"-> {time_ratio / flop_ratio:.2f}x (target <= 1.1): {'met' if time_ratio <= 1.1 * flop_ratio else 'not met'}."
            )
            fr, un = r.get("train_frozen", {}), r.get("train_unfrozen", {})
            if "train_peak_rss_bytes" in fr and "train_peak_rss_bytes" in un:
                block_params = un["params_trainable"] - fr["params_trainable"]
                verdicts.append(
                    f"- {size} px, {arm}: unfreezing the block ({block_params / 1e6:.1f}M params) raises the "
                    f"training peak RSS from {fr['train_peak_rss_bytes'] / 2**20:.0f} to "
                    f"{un['train_peak_rss_bytes'] / 2**20:.0f} MiB (its gradients + AdamW state: "
                    f"{3 * 4 * block_params / 2**20:.0f} MiB expected in fp32)."
                )
            if mlp.get("infer") and mlp.get("train_frozen") and r.get("train_frozen"):
                fwd = 1 / inf["images_per_s_fp32"] - 1 / mlp["infer"]["images_per_s_fp32"]
                train = (r["train_frozen"]["train_step_s"] - mlp["train_frozen"]["train_step_s"]) / BATCH[
                    int(size)
                ]
                if fwd > 0 and train > 0:
                    verdicts.append(
                        f"- {size} px, {arm}: frozen block in training costs {train / fwd:.2f}x its forward time "
                        f"(target <= 2): {'met' if train / fwd <= 2 else 'not met'}."
                    )
                else:
                    verdicts.append(
                        f"- {size} px, {arm}: the block's cost is below the timing noise (forward {fwd * 1e3:.1f} ms, "
                        f"training {train * 1e3:.1f} ms per image): not measurable in this run."
                    )
    return "\n".join([*lines, "", "## Verdicts", "", *verdicts, ""])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 224], choices=[28, 224])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "rllm_zoo" / "bench")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    from rllm_zoo.training.config import atomic_write_text

    llama7b = str(_llama7b_config(args.cache_dir))
    results: dict = {
        "meta": {"cpu": platform.processor() or platform.machine(), "repeats": args.repeats},
        "sizes": {},
    }
    for size in args.sizes:
        for arm in args.arms:
            for task in ("infer", "train_frozen", "train_unfrozen"):
                if task == "train_unfrozen" and arm in ("base", "mlp"):
                    continue
                spec = dict(
                    model=MODELS[size],
                    size=size,
                    batch=BATCH[size],
                    repeats=args.repeats,
                    llama7b=llama7b,
                    arm_kwargs=ARMS[arm],
                    task="infer" if task == "infer" else "train",
                    unfrozen=task == "train_unfrozen",
                )
                print(f"p2p3: {size}px {arm} {task}", file=sys.stderr, flush=True)
                results["sizes"].setdefault(str(size), {}).setdefault(arm, {})[task] = run_case(spec)
    command = "python benchmarks/p2p3_speed.py"
    if args.sizes != [28, 224]:
        command += f" --sizes {' '.join(map(str, args.sizes))}"
    if args.repeats != 5:
        command += f" --repeats {args.repeats}"
    atomic_write_text(args.out / "p2p3_speed.json", json.dumps(results, indent=2))
    atomic_write_text(args.out / "p2p3_speed.md", table(results, command))
    print((args.out / "p2p3_speed.md").read_text())


if __name__ == "__main__":
    main()
