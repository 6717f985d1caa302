"""P2 / P3: what the booster costs. Base ViT vs boosted, side by side in one run.

    python benchmarks/p2p3_speed.py                      # writes benchmarks/results/p2p3_speed.{json,md}
    python benchmarks/p2p3_speed.py --sizes 28 --repeats 3 --out /tmp/p2p3   # a quick look

For ViT-S at 28 px (patch 4) and 224 px (patch 16), four arms: the plain ViT, the mlp control
(the adapters without a block), +R-LLM with the real SmolLM2 block, and +R-LLM with a random
LLaMA-7B-shaped block (width 4096, FFN 11008; nothing is downloaded: the block is built from a
config). Per size:

- **speed** (one process holding every arm): FLOPs per image counted by
  ``torch.utils.flop_counter`` with CPU attention included (``rllm_zoo.flops``; multiply-add =
  2), in all and inside the LLM block, then inference images/s in fp32 and under
  bf16 autocast, timed in interleaved rounds (arm A, B, C, D, A, B, ...) so that a noisy machine
  slows every arm alike; medians over rounds.
- **training** (one process holding every arm, block frozen and unfrozen): FLOPs of one training
  step (forward + backward) and the step time, interleaved the same way.
- **memory** (a fresh process per arm and mode): peak RSS of the training steps (VmHWM, reset
  after a warm-up step that allocates gradients and optimizer state).

Targets (reported as measured, met or not): boosted/base time within 1.1x of the FLOP ratio;
bf16 >= 3x fp32 images/s; the frozen block costs <= 2x its forward FLOPs in training, counted
exactly inside the block module (FLOPs of its forward and backward in a training step / FLOPs
of its forward). The same ratio estimated from times is reported beside it: (train step of the
boosted arm - of the mlp arm) / (inference time of the boosted arm - of the mlp arm), the mlp
arm having adapters and no block (its adapters are SmolLM2's width, so for the LLaMA-shaped
arm that estimate also holds the wider adapters).
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
BLOCK_ARMS = ("smollm2", "llama7b_random")
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


def _cpu() -> str:
    """The CPU's model name and its bf16 matrix units (AMX tiles, AVX-512 BF16), from /proc/cpuinfo."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    units = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return f"{name} ({', '.join(units) if units else 'no bf16 matrix units'})"


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _build(spec: dict, arm: str, unfrozen: bool = False):
    import timm
    import torch

    import rllm_zoo  # noqa: F401

    torch.manual_seed(0)
    kwargs = dict(ARMS[arm])
    if "llm" in kwargs:
        kwargs["llm"] = kwargs["llm"].format(llama7b=spec["llama7b"])
    return timm.create_model(spec["model"], num_classes=5, freeze_llm=not unfrozen, **kwargs)


def _trainer(model):
    """``(forward_backward, step)`` for ``model``: gradients only, and a full AdamW step."""
    import torch

    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def forward_backward(x) -> None:
        opt.zero_grad(set_to_none=True)
        model(x).logsumexp(-1).mean().backward()

    def step(x) -> None:
        forward_backward(x)
        opt.step()

    return forward_backward, step


def _interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each callable, timed in interleaved rounds after one warm-up round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeats + 1):
        for key, fn in fns.items():
            t = time.perf_counter()
            fn()
            if i:
                times[key].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def worker_speed(spec: dict) -> dict:
    """Forward FLOPs and inference images/s of every arm, timed side by side."""
    import torch

    from rllm_zoo.flops import block_flops, flop_counter

    x = torch.randn(spec["batch"], 3, spec["size"], spec["size"])
    models = {arm: _build(spec, arm).eval() for arm in spec["arms"]}
    out: dict = {}
    for arm, model in models.items():
        with torch.no_grad(), flop_counter() as counter:
            model(x[:1])
        out[arm] = {
            "flops_per_image": counter.get_total_flops(),
            "block_flops_per_image": block_flops(counter.get_flop_counts()),
            "params_total": sum(p.numel() for p in model.parameters()),
        }

    def infer(model, bf16: bool):
        def run() -> None:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(x)

        return run

    fns = {(arm, p): infer(m, p == "bf16") for arm, m in models.items() for p in ("fp32", "bf16")}
    for (arm, precision), seconds in _interleaved(fns, spec["repeats"]).items():
        out[arm][f"images_per_s_{precision}"] = spec["batch"] / seconds
    return out


def worker_train(spec: dict) -> dict:
    """FLOPs of one training step and its time, for every arm frozen (and block arms unfrozen)."""
    import torch

    from rllm_zoo.flops import block_flops, flop_counter

    x = torch.randn(spec["batch"], 3, spec["size"], spec["size"])
    cases = [(arm, False) for arm in spec["arms"]] + [(a, True) for a in spec["arms"] if a in BLOCK_ARMS]
    out: dict = {}
    steps = {}
    for arm, unfrozen in cases:
        model = _build(spec, arm, unfrozen)
        forward_backward, step = _trainer(model)
        key = f"{arm}/{'unfrozen' if unfrozen else 'frozen'}"
        with flop_counter() as counter:
            forward_backward(x[:1])
        out[key] = {
            "train_flops_per_image": counter.get_total_flops(),
            "block_train_flops_per_image": block_flops(counter.get_flop_counts()),
            "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        }
        step(x)  # allocates gradients and optimizer state before the timed rounds
        steps[key] = lambda step=step: step(x)
    for key, seconds in _interleaved(steps, spec["repeats"]).items():
        out[key]["train_step_s"] = seconds
    return out


def worker_memory(spec: dict) -> dict:
    """Peak RSS of training steps of one arm (this process holds nothing else)."""
    import torch

    x = torch.randn(spec["batch"], 3, spec["size"], spec["size"])
    model = _build(spec, spec["arm"], spec["unfrozen"])
    _, step = _trainer(model)
    step(x)  # warm-up: allocates gradients and optimizer state
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status()["VmRSS"]
    for _ in range(spec["repeats"]):
        step(x)
    return {
        "train_peak_extra_bytes": _status()["VmHWM"] - base,  # what the steps add on top of the steady state
        "train_peak_rss_bytes": _status()["VmHWM"],  # model, gradients and optimizer state included
        "train_rss_bytes": _status()["VmRSS"],
    }


WORKERS = {"speed": worker_speed, "train": worker_train, "memory": worker_memory}


def run_case(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, timeout=7200
    )
    if proc.returncode:
        err = proc.stderr.strip().splitlines()
        raise RuntimeError(f"p2p3 worker {spec['task']} failed: {err[-1] if err else proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt_mem(r: dict) -> str:
    if "train_peak_rss_bytes" not in r:
        return "-"
    return f"{r['train_peak_rss_bytes'] / 2**20:.0f} MiB ({r['train_peak_extra_bytes'] / 2**20:.0f})"


def _verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def _size_verdicts(size: str, r: dict) -> list[str]:
    """The three targets for one input size, from the speed, training and memory measurements."""
    speed, train, mem = r["speed"], r["train"], r["memory"]
    out = []
    for arm, s in speed.items():
        ratio = s["images_per_s_bf16"] / s["images_per_s_fp32"]
        out.append(
            f"- {size} px, {arm}: bf16 / fp32 images/s = {ratio:.2f} (target >= 3): {_verdict(ratio >= 3)}."
        )
    base, mlp = speed.get("base"), speed.get("mlp")
    for arm in BLOCK_ARMS:
        if arm not in speed or not base:
            continue
        s = speed[arm]
        flop_ratio = s["flops_per_image"] / base["flops_per_image"]
        time_ratio = base["images_per_s_fp32"] / s["images_per_s_fp32"]
        out.append(
            f"- {size} px, {arm}: time ratio boosted/base {time_ratio:.2f} vs FLOP ratio {flop_ratio:.2f} "
            f"-> {time_ratio / flop_ratio:.2f}x (target <= 1.1): {_verdict(time_ratio <= 1.1 * flop_ratio)}."
        )
        if not mlp:
            continue
        fwd_flops = s["flops_per_image"] - mlp["flops_per_image"]
        train_flops = (
            train[f"{arm}/frozen"]["train_flops_per_image"] - train["mlp/frozen"]["train_flops_per_image"]
        )
        unfrozen_flops = (
            train[f"{arm}/unfrozen"]["train_flops_per_image"] - train["mlp/frozen"]["train_flops_per_image"]
        )
        fwd_s = 1 / s["images_per_s_fp32"] - 1 / mlp["images_per_s_fp32"]
        train_s = (train[f"{arm}/frozen"]["train_step_s"] - train["mlp/frozen"]["train_step_s"]) / BATCH[
            int(size)
        ]
        by_time = f"{train_s / fwd_s:.2f}x" if fwd_s > 0 and train_s > 0 else "below the timing noise"
        out.append(
            f"- {size} px, {arm}: the frozen block costs {train_flops / fwd_flops:.2f}x its forward FLOPs in "
            f"training (unfrozen: {unfrozen_flops / fwd_flops:.2f}x; by time: {by_time}) (target <= 2): "
            f"{_verdict(train_flops <= 2 * fwd_flops)}."
        )
        fr, un = mem.get(f"{arm}/frozen", {}), mem.get(f"{arm}/unfrozen", {})
        if fr and un:
            block = train[f"{arm}/unfrozen"]["params_trainable"] - train[f"{arm}/frozen"]["params_trainable"]
            out.append(
                f"- {size} px, {arm}: unfreezing the block ({block / 1e6:.1f}M params) raises the training "
                f"peak RSS from {fr['train_peak_rss_bytes'] / 2**20:.0f} to {un['train_peak_rss_bytes'] / 2**20:.0f} "
                f"MiB (its gradients + AdamW state: {3 * 4 * block / 2**20:.0f} MiB expected in fp32)."
            )
    return out


def table(results: dict, command: str) -> str:
    lines = [
        "# P2 / P3: speed and memory of the booster",
        "",
        f"Produced by `{command}` (raw numbers: [p2p3_speed.json](p2p3_speed.json)); {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {results['meta']['cpu']}, torch {results['meta']['torch']}, "
        f"{results['meta']['repeats']} timed rounds. Speeds of all arms of a size are timed in one process, "
        "interleaved; memory is measured in a fresh process per arm. Times are medians.",
        "",
        "| size | arm | GFLOPs/img | img/s fp32 | img/s bf16 | bf16/fp32 | train GFLOPs/img frozen | "
        "train step frozen (s) | peak RSS frozen (step extra) | train GFLOPs/img unfrozen | "
        "train step unfrozen (s) | peak RSS unfrozen (step extra) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for size, r in results["sizes"].items():
        for arm, s in r["speed"].items():
            fr, un = r["train"].get(f"{arm}/frozen", {}), r["train"].get(f"{arm}/unfrozen", {})
            mfr, mun = r["memory"].get(f"{arm}/frozen", {}), r["memory"].get(f"{arm}/unfrozen", {})
            lines.append(
                f"| {size} | {arm} | {s['flops_per_image'] / 1e9:.3f} | {s['images_per_s_fp32']:.1f} | "
                f"{s['images_per_s_bf16']:.1f} | {s['images_per_s_bf16'] / s['images_per_s_fp32']:.2f} | "
                f"{fr['train_flops_per_image'] / 1e9:.3f} | {fr['train_step_s']:.3f} | {_fmt_mem(mfr)} | "
                + (
                    f"{un['train_flops_per_image'] / 1e9:.3f} | {un['train_step_s']:.3f} | {_fmt_mem(mun)} |"
                    if un
                    else "- | - | - |"
                )
            )
        verdicts += _size_verdicts(size, r)
    notes = [
        "## Reading the numbers",
        "",
        "- Training FLOPs of a frozen block: its weights need no gradient, so each linear layer costs its "
        "forward once more for the input gradient (2x in all); the attention kernel's backward recomputes "
        "QK^T and needs gradients for both operands of each product (torch counts 2.5x its forward), which "
        "puts a whole block slightly above 2x. Unfrozen, the weight gradients add about one more forward.",
        "- bf16 vs fp32: the >= 3x target assumes AMX tiles (`amx_bf16`). With AVX-512 BF16 only "
        "(`avx512_bf16`), a bf16 dot-product instruction does twice the multiply-adds of an fp32 FMA, so "
        "about 2x is the ceiling on such a CPU.",
        "- Times on a shared 2-core machine are noisy; ratios come from arms timed in alternation in one "
        "process, FLOPs are exact.",
        "",
    ]
    return "\n".join([*lines, "", "## Verdicts", "", *verdicts, "", *notes])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 224], choices=[28, 224])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "rllm_zoo" / "bench")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from the existing JSON")
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(WORKERS[spec["task"]](spec)))
        return
    import torch
    from tqdm.auto import tqdm

    from rllm_zoo.training.config import atomic_write_text

    if args.table_only:
        results = json.loads((args.out / "p2p3_speed.json").read_text())
        atomic_write_text(args.out / "p2p3_speed.md", table(results, results["meta"]["command"]))
        print((args.out / "p2p3_speed.md").read_text())
        return
    llama7b = str(_llama7b_config(args.cache_dir))
    results: dict = {
        "meta": {
            "cpu": _cpu(),
            "repeats": args.repeats,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "sizes": {},
    }
    arms = list(ARMS)
    plan = [("speed", None, False), ("train", None, False)]
    plan += [("memory", arm, False) for arm in arms] + [("memory", arm, True) for arm in BLOCK_ARMS]
    jobs = [(size, *p) for size in args.sizes for p in plan]
    for size, task, arm, unfrozen in tqdm(jobs, desc="p2p3", unit="job"):
        spec = dict(
            task=task,
            model=MODELS[size],
            size=size,
            batch=BATCH[size],
            repeats=args.repeats,
            llama7b=llama7b,
            arms=arms,
            arm=arm,
            unfrozen=unfrozen,
        )
        r = results["sizes"].setdefault(str(size), {"speed": {}, "train": {}, "memory": {}})
        if task == "memory":
            r["memory"][f"{arm}/{'unfrozen' if unfrozen else 'frozen'}"] = run_case(spec)
        else:
            r[task] = run_case(spec)
    command = "python benchmarks/p2p3_speed.py"
    if args.sizes != [28, 224]:
        command += f" --sizes {' '.join(map(str, args.sizes))}"
    if args.repeats != 5:
        command += f" --repeats {args.repeats}"
    results["meta"]["command"] = command
    atomic_write_text(args.out / "p2p3_speed.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(args.out / "p2p3_speed.md", table(results, command))
    print((args.out / "p2p3_speed.md").read_text())


if __name__ == "__main__":
    main()
