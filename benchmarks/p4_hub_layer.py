"""P4: one layer of a Hub-hosted LLM by HTTP range requests, against downloading the model.

Serves synthetic LLaMA-7B-shaped checkpoints (hidden 4096, intermediate 11008, 32 heads, vocab 32000,
bf16 safetensors) with 8 and 32 layers from the local Hugging Face Hub-compatible server of the tests
(``tests/hub_server.py``; this script puts ``tests/`` on ``sys.path`` to import it) over loopback, and
measures for layer -1:

* ``rllm_zoo.load_llm_block(repo, layer=-1)`` on a cold cache (empty HF cache, empty rllm_zoo cache):
  config + index through ``hf_hub_download``, the shard headers and the layer's tensors through range
  requests (``rllm_zoo.llm.hub_ranges``); body bytes counted by the server (every request), wall time;
* the same call again (the layer cache: no request expected);
* the fallback when the server ignores ``Range`` (``server.ranges_enabled = False``): whole shards
  holding the layer are downloaded;
* the anchor: ``huggingface_hub.snapshot_download(repo)`` (the whole repo).

Sharding follows transformers' ``save_pretrained`` order and the real ``meta-llama/Llama-2-7b-hf``
layout: tensors in state-dict order, a new shard when the next tensor would pass ``--max-shard-gb``
(default 10 GB): the 32-layer model is one 9.98 GB shard + one 3.50 GB shard (layer -1 in the second),
the 8-layer model a single 3.77 GB shard. Shards are written straight to disk (a cheap repeated
pattern, never the whole model in RAM), hashed while written, and served from disk
(``add_files(..., file_backed=True)``). Everything is deleted at the end (also on failure).

Usage:
    python benchmarks/p4_hub_layer.py                        # 8 and 32 layers, ~5-10 min, ~28 GB of disk
    python benchmarks/p4_hub_layer.py --layers 8 --no-anchor
    python benchmarks/p4_hub_layer.py --tmp-dir /data/tmp --out benchmarks/results

Writes ``<out>/p4_hub_layer.json`` (every number) and ``<out>/p4_hub_layer.md`` (the table).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the local Hub server lives with the tests

import torch  # noqa: E402
from hub_server import LocalHubServer, point_hub_client, reset_hub_client  # noqa: E402

GB = 1e9
MIB = 1024**2
HIDDEN, INTER, HEADS, VOCAB = 4096, 11008, 32, 32000
PATTERN_ELEMS = 1 << 22  # bf16 elements in the repeated fill pattern (8 MiB)


# ---------------------------------------------------------------------------------------------------------------
# synthetic checkpoint


def llama7b_config(num_layers: int) -> dict[str, Any]:
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        num_hidden_layers=num_layers,
        vocab_size=VOCAB,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    d = cfg.to_dict()
    d["torch_dtype"] = d["dtype"] = "bfloat16"
    d["architectures"] = ["LlamaForCausalLM"]
    return d


def parameter_shapes(num_layers: int) -> list[tuple[str, tuple[int, ...]]]:
    """The LLaMA state dict in module order (as transformers saves it)."""
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(num_layers):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
            (p + "self_attn.k_proj.weight", (HIDDEN, HIDDEN)),
            (p + "self_attn.v_proj.weight", (HIDDEN, HIDDEN)),
            (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
            (p + "mlp.gate_proj.weight", (INTER, HIDDEN)),
            (p + "mlp.up_proj.weight", (INTER, HIDDEN)),
            (p + "mlp.down_proj.weight", (HIDDEN, INTER)),
            (p + "input_layernorm.weight", (HIDDEN,)),
            (p + "post_attention_layernorm.weight", (HIDDEN,)),
        ]
    return [*out, ("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _pattern(seed: int) -> bytes:
    """8 MiB of small bf16 values, different per tensor (so layers differ), cheap to make."""
    g = torch.Generator().manual_seed(seed)
    return (
        (torch.randn(PATTERN_ELEMS, generator=g) * 0.02)
        .to(torch.bfloat16)
        .view(torch.uint8)
        .numpy()
        .tobytes()
    )


def write_checkpoint(folder: Path, num_layers: int, max_shard_bytes: int) -> dict[str, Any]:
    """Write config.json, the shard index and bf16 shards; returns {"files": {name: size}, "sha256": {...}}."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = parameter_shapes(num_layers)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in shapes:
        nbytes = 2 * _numel(shape)
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    n_sh = len(shards)
    weight_map: dict[str, str] = {}
    sha: dict[str, str] = {}
    total = 0
    for k, members in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{n_sh:05d}.safetensors"
        members = sorted(members)  # safetensors orders tensors by name
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        off = 0
        for name, shape in members:
            n = 2 * _numel(shape)
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
            off += n
            weight_map[name] = fname
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        h = hashlib.sha256()
        with open(folder / fname, "wb") as f:
            for part in (struct.pack("<Q", len(raw)), raw):
                f.write(part)
                h.update(part)
            for seed, (_name, shape) in enumerate(members):
                block = _pattern(seed * 7919 + k)
                left = 2 * _numel(shape)
                while left:
                    piece = block[: min(left, len(block))]
                    f.write(piece)
                    h.update(piece)
                    left -= len(piece)
        sha[fname] = h.hexdigest()
        total += off
    (folder / "config.json").write_text(json.dumps(llama7b_config(num_layers), indent=2))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
    return {"files": files, "sha256": sha, "shards": n_sh}


def layer_bytes(num_layers: int, layer: int) -> int:
    prefix = f"model.layers.{layer % num_layers}."
    return sum(2 * _numel(s) for n, s in parameter_shapes(num_layers) if n.startswith(prefix))


# ---------------------------------------------------------------------------------------------------------------
# measurement


class _Patch:
    """The three monkeypatch methods ``point_hub_client`` needs, with undo."""

    def __init__(self) -> None:
        self._undo: list[Any] = []

    def setattr(self, target: Any, name: str, value: Any, raising: bool = True) -> None:
        old = getattr(target, name)
        self._undo.append(lambda: setattr(target, name, old))
        setattr(target, name, value)

    def setenv(self, name: str, value: str, prepend: str | None = None) -> None:
        old = os.environ.get(name)
        self._undo.append(
            lambda: os.environ.__setitem__(name, old) if old is not None else os.environ.pop(name, None)
        )
        os.environ[name] = value

    def delenv(self, name: str, raising: bool = True) -> None:
        old = os.environ.pop(name, None)
        if old is not None:
            self._undo.append(lambda: os.environ.__setitem__(name, old))

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


@contextlib.contextmanager
def fresh_client(server: LocalHubServer, work: Path, name: str) -> Iterator[Path]:
    """Point huggingface_hub at ``server`` with an empty HF cache and an empty rllm_zoo cache; delete both after."""
    home = work / f"client-{name}"
    patch = _Patch()
    try:
        point_hub_client(patch, server, home / "hf")
        patch.setenv("RLLM_ZOO_CACHE", str(home / "rllm_zoo"))
        yield home
    finally:
        reset_hub_client()
        patch.undo()
        shutil.rmtree(home, ignore_errors=True)


def _served(server: LocalHubServer) -> dict[str, int]:
    reqs = server.requests
    return {
        "body_bytes": sum(r.body_bytes for r in reqs),
        "requests": len(reqs),
        "ranged_gets": sum(1 for r in reqs if r.method == "GET" and r.range),
        "whole_file_gets": sum(
            1 for r in reqs if r.method == "GET" and "/resolve/" in r.path and not r.range
        ),
    }


def warm_up(server: LocalHubServer, work: Path) -> None:
    """Run every code path once on a tiny LLaMA (imports, transformers' model classes, the HTTP client)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from rllm_zoo import load_llm_block

    tiny = work / "tiny"
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2
    )
    AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16).save_pretrained(tiny)
    repo = server.new_repo_id("warm-up")
    server.add_files(repo, {p.name: p.read_bytes() for p in tiny.iterdir()})
    with fresh_client(server, work, "warm-up"):
        load_llm_block(repo, layer=-1, dtype=None)
        load_llm_block(repo, layer=-1, dtype=None)
    load_llm_block(str(tiny), layer=-1, dtype=None)
    server.delete_repo(repo)
    shutil.rmtree(tiny)


def measure_depth(
    server: LocalHubServer, work: Path, num_layers: int, args: argparse.Namespace
) -> dict[str, Any]:
    from huggingface_hub import snapshot_download

    from rllm_zoo import load_llm_block

    folder = work / f"llama7b-{num_layers}L"
    print(f"[{num_layers} layers] writing the checkpoint to {folder} ...", flush=True)
    t = time.perf_counter()
    made = write_checkpoint(folder, num_layers, int(args.max_shard_gb * GB))
    gen_s = time.perf_counter() - t
    model_bytes = sum(made["files"].values())
    print(
        f"[{num_layers} layers] {model_bytes / GB:.2f} GB in {made['shards']} shard(s), {gen_s:.0f} s",
        flush=True,
    )
    repo = server.new_repo_id(f"llama7b-{num_layers}L")
    files = {name: folder / name for name in made["files"]}
    server.add_files(repo, files, file_backed=True, known_sha256=made["sha256"])
    commit_bytes = sum(b.size for b in server.commit(repo).files.values())  # + .gitattributes
    row: dict[str, Any] = {
        "layers": num_layers,
        "repo": repo,
        "files": made["files"],
        "model_bytes": model_bytes,
        "repo_bytes": commit_bytes,
        "shards": made["shards"],
        "layer_index": num_layers - 1,
        "layer_tensor_bytes": layer_bytes(num_layers, -1),
        "generate_s": round(gen_s, 2),
    }
    try:
        with fresh_client(server, work, f"ranges-{num_layers}"):
            server.reset_stats()
            t = time.perf_counter()
            block = load_llm_block(repo, layer=-1, dtype=None)
            row["range_s"] = round(time.perf_counter() - t, 3)
            row["range"] = _served(server)
            row["sha256"] = block.info.sha256
            del block
            gc.collect()
            server.reset_stats()
            t = time.perf_counter()
            block = load_llm_block(repo, layer=-1, dtype=None)
            row["cached_s"] = round(time.perf_counter() - t, 3)
            row["cached"] = _served(server)
            assert block.info.sha256 == row["sha256"]
            del block
            gc.collect()
        local = load_llm_block(str(folder), layer=-1, dtype=None)
        row["same_as_local_folder"] = local.info.sha256 == row["sha256"]
        del local
        gc.collect()
        print(
            f"[{num_layers} layers] ranges: {row['range']['body_bytes'] / MIB:.1f} MiB in {row['range_s']:.2f} s; "
            f"cached: {row['cached_s']:.3f} s, {row['cached']['requests']} requests; "
            f"same as local folder: {row['same_as_local_folder']}",
            flush=True,
        )
        if args.fallback:
            with fresh_client(server, work, f"fallback-{num_layers}"):
                server.ranges_enabled = False
                server.reset_stats()
                try:
                    t = time.perf_counter()
                    block = load_llm_block(repo, layer=-1, dtype=None)
                    row["fallback_s"] = round(time.perf_counter() - t, 3)
                finally:
                    server.ranges_enabled = True
                row["fallback"] = _served(server)
                assert block.info.sha256 == row["sha256"]
                del block
                gc.collect()
            print(
                f"[{num_layers} layers] shard fallback: {row['fallback']['body_bytes'] / GB:.2f} GB "
                f"in {row['fallback_s']:.1f} s",
                flush=True,
            )
        if args.anchor:
            need = commit_bytes + (2 << 30)
            free = shutil.disk_usage(work).free
            if free < need:
                row["anchor_skipped"] = f"needs {need / GB:.1f} GB of disk, {free / GB:.1f} GB free"
            else:
                with fresh_client(server, work, f"anchor-{num_layers}") as home:
                    server.reset_stats()
                    t = time.perf_counter()
                    snapshot_download(repo, cache_dir=str(home / "hf" / "hub"), max_workers=8)
                    row["anchor_s"] = round(time.perf_counter() - t, 3)
                    row["anchor"] = _served(server)
                print(
                    f"[{num_layers} layers] snapshot_download: {row['anchor']['body_bytes'] / GB:.2f} GB "
                    f"in {row['anchor_s']:.1f} s",
                    flush=True,
                )
    finally:
        server.delete_repo(repo)
        shutil.rmtree(folder, ignore_errors=True)
    return row


# ---------------------------------------------------------------------------------------------------------------
# report


def machine_info() -> dict[str, Any]:
    import huggingface_hub
    import safetensors
    import transformers

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "ram_bytes": mem,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "huggingface_hub": huggingface_hub.__version__,
        "safetensors": safetensors.__version__,
        "git_head": head.stdout.strip() or None,
        "loadavg": os.getloadavg(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _b(n: float | None) -> str:
    if n is None:
        return "-"
    if n >= GB:
        return f"{n / GB:.2f} GB"
    return f"{n / MIB:.1f} MiB"


def _s(x: float | None) -> str:
    return "-" if x is None else (f"{x:.2f} s" if x >= 0.1 else f"{x * 1000:.0f} ms")


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    rows = report["rows"]
    lines = [
        "# P4: one layer of a Hub LLM by range requests",
        "",
        f"Produced by: `{report['command']}`",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['ram_bytes'] / 2**30:.1f} GiB RAM; torch {m['torch']}, "
        f"transformers {m['transformers']}, huggingface_hub {m['huggingface_hub']}, safetensors "
        f"{m['safetensors']}; git HEAD {m['git_head']}; {m['date']}. Load average at the end "
        f"{', '.join(f'{x:.1f}' for x in m['loadavg'])} (the machine is shared with a training job: times are noisy, "
        "bytes are exact).",
        "",
        "Method. Synthetic LLaMA-7B-shaped checkpoints (hidden 4096, intermediate 11008, 32 heads, vocab 32000, "
        f"bf16 safetensors, untied lm_head), sharded like transformers' `save_pretrained` with "
        f"{report['max_shard_gb']:g} GB shards (the layout of meta-llama/Llama-2-7b-hf: 32 layers = 9.98 GB + "
        "3.50 GB; 8 layers = one 3.77 GB shard), served from disk by the tests' local Hub server "
        "(`tests/hub_server.py`, imported by putting `tests/` on `sys.path`) over loopback (127.0.0.1). "
        "Bytes = response-body bytes the server sent for every request of the call (config, index, headers, "
        "tensors; HEAD and API calls included). Each measured call starts with an empty HF cache and an empty "
        "rllm_zoo cache, except 'cached' (the same call again). Layer -1 is loaded with the checkpoint dtype "
        "(`dtype=None`) after a warm-up on a tiny LLaMA (imports); the loaded block's sha256 is checked equal to "
        "loading the same layer from the local folder. The range fetch's requests: config.json and the index "
        "(HEAD + GET each, through `hf_hub_download`, which resolves the commit), the shard header (2 ranged "
        "GETs), then the layer's tensors, contiguous in the shard, as one coalesced range split into "
        "<= 64 MiB ranged GETs, 4 in flight. Times include building the block and hashing it (`info.sha256`); "
        "the cached call re-verifies the cached layer's sha256 before using it. The files are in the page cache (just written), so loopback times are an upper bound on "
        "speed; on the real Hub the bytes column is what matters.",
        "",
        "| layers | whole repo | layer tensors | rllm_zoo ranges: bytes (requests) | time | cached 2nd call "
        "| shard fallback (no Range): bytes | time | snapshot_download: bytes | time | whole repo / ranges |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rng = r["range"]
        fb = r.get("fallback") or {}
        an = r.get("anchor") or {}
        cached = f"{_s(r['cached_s'])}, {r['cached']['requests']} requests"
        lines.append(
            f"| {r['layers']} | {_b(r['repo_bytes'])} | {_b(r['layer_tensor_bytes'])} "
            f"| {_b(rng['body_bytes'])} ({rng['requests']}) | {_s(r['range_s'])} | {cached} "
            f"| {_b(fb.get('body_bytes'))} | {_s(r.get('fallback_s'))} "
            f"| {_b(an.get('body_bytes')) if an else r.get('anchor_skipped', 'not run')} | {_s(r.get('anchor_s'))} "
            f"| {r['repo_bytes'] / rng['body_bytes']:.1f}x |"
        )
    lines += ["", "## Targets", ""]
    lines += [f"- {v}" for v in report["verdicts"]]
    lines.append("")
    return "\n".join(lines)


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    by = {r["layers"]: r for r in rows}
    for r in rows:
        over = r["range"]["body_bytes"] / r["layer_tensor_bytes"]
        out.append(
            f"{r['layers']} layers: range fetch moved {over:.4f}x the layer's tensor bytes (target <= 1.1x); "
            f"{r['repo_bytes'] / r['range']['body_bytes']:.1f}x fewer bytes than the whole repo; block identical to "
            f"the local-folder load: {r['same_as_local_folder']}; cached second call: "
            f"{r['cached']['requests']} requests, {_s(r['cached_s'])}."
        )
    if 8 in by and 32 in by:
        a, b = by[8]["range"]["body_bytes"], by[32]["range"]["body_bytes"]
        out.append(
            f"Flat in depth: {_b(a)} (8 layers) vs {_b(b)} (32 layers), ratio {b / a:.4f} "
            "(only the index and the shard header grow)."
        )
        ratio = by[32]["repo_bytes"] / b
        out.append(
            f"32 layers: {ratio:.1f}x fewer bytes than the whole model (target >= 10x): {'met' if ratio >= 10 else 'NOT met'}."
        )
    for r in rows:
        if r.get("anchor"):
            out.append(
                f"{r['layers']} layers: snapshot_download moved {_b(r['anchor']['body_bytes'])} in {_s(r['anchor_s'])}; "
                f"rllm_zoo's range fetch {_b(r['range']['body_bytes'])} in {_s(r['range_s'])} "
                f"({r['anchor_s'] / r['range_s']:.1f}x faster on loopback)."
            )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--max-shard-gb", type=float, default=10.0)
    ap.add_argument(
        "--tmp-dir", default=None, help="where the checkpoints and downloads go (default: $TMPDIR)"
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--no-anchor", dest="anchor", action="store_false", help="skip snapshot_download")
    ap.add_argument("--no-fallback", dest="fallback", action="store_false", help="skip the no-Range fallback")
    args = ap.parse_args(argv)

    base = Path(args.tmp_dir or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    biggest = max(sum(2 * _numel(s) for _, s in parameter_shapes(n)) for n in args.layers)
    need = biggest * (2 if args.anchor else 1) + (3 << 30)
    free = shutil.disk_usage(base).free
    if free < need:
        print(
            f"error: {base} has {free / GB:.1f} GB free; this run needs about {need / GB:.1f} GB "
            "(the served checkpoint, plus its snapshot_download copy). Pass --tmp-dir on a bigger disk, "
            "fewer --layers, or --no-anchor.",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    command = "python benchmarks/p4_hub_layer.py" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:])
    )
    work = Path(tempfile.mkdtemp(prefix="p4_hub_layer-", dir=base))
    server = LocalHubServer().start()
    rows = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (the finally below) when killed
    try:
        warm_up(server, work)
        for n in args.layers:
            rows.append(measure_depth(server, work, n, args))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "command": command.strip(),
        "machine": machine_info(),
        "max_shard_gb": args.max_shard_gb,
        "rows": rows,
        "verdicts": verdicts(rows),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "p4_hub_layer.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "p4_hub_layer.md").write_text(render_markdown(report))
    print(render_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
