"""MONAI model-zoo submission rules for a bundle folder: required files, version, 25 MB, large_files.yml.

The MONAI model zoo (github.com/Project-MONAI/model-zoo) accepts a bundle when:

* it holds ``configs/metadata.json``, ``configs/inference.json``, ``models/model.pt``,
  ``docs/README.md`` and ``LICENSE`` (a file over the size limit counts when ``large_files.yml``
  lists it);
* ``metadata.json`` has a ``version`` and a ``changelog`` that names it (and passes
  ``monai.bundle verify_metadata``);
* no file of the submission is over 25 MB: larger files (the weights of big networks) are
  hosted elsewhere and listed in ``large_files.yml`` with their ``path``, ``url``, ``hash_val``
  and ``hash_type``, which ``python -m monai.bundle download_large_files`` (and the zoo's CI)
  reads back.

:func:`package_bundle` writes a trained 3D network as a bundle (``rllm_zoo.hub.save_pretrained``)
and applies these rules; :func:`write_large_files`, :func:`check_model_zoo` and
:func:`export_submission` work on any bundle folder.

Example:
    >>> from rllm_zoo.monai import create_network
    >>> net = create_network("rllm_vit3d_small", num_classes=2, llm="random:smollm2")
    >>> info = package_bundle(net, "out/r-llm-adrenal", dataset_flag="adrenalmnist3d",
    ...                       url="https://huggingface.co/me/r-llm-adrenal/resolve/main")  # doctest: +SKIP
    >>> info["large_files"]                           # [] below 25 MB, else what large_files.yml lists  # doctest: +SKIP
    []
    >>> check_model_zoo("out/r-llm-adrenal")          # raises a one-line ValueError otherwise  # doctest: +SKIP
    >>> export_submission("out/r-llm-adrenal", "model-zoo/models/r_llm_adrenal")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = [
    "LARGE_FILES",
    "MAX_FILE_MB",
    "REQUIRED_FILES",
    "check_model_zoo",
    "export_submission",
    "large_file_entries",
    "package_bundle",
    "read_large_files",
    "write_large_files",
]

#: the model zoo's limit on a file committed with a bundle, in MB (1 MB = 2**20 bytes)
MAX_FILE_MB: float = 25
#: files every model-zoo bundle holds (or lists in large_files.yml)
REQUIRED_FILES: tuple[str, ...] = (
    "configs/metadata.json",
    "configs/inference.json",
    "models/model.pt",
    "docs/README.md",
    "LICENSE",
)
#: where a bundle lists its large files (the name the zoo's CI and ``download_large_files`` look for)
LARGE_FILES = "large_files.yml"
_LARGE_NAMES = ("large_files.yml", "large_files.yaml", "large_files.json")
_HASH_TYPE = "sha256"
#: files of a Hub folder that are not part of a model-zoo submission (the card is the Hub's README)
_NOT_SUBMITTED = ("README.md",)


def _limit_bytes(max_file_mb: float) -> int:
    if not isinstance(max_file_mb, int | float) or isinstance(max_file_mb, bool) or max_file_mb <= 0:
        raise ValueError(f"max_file_mb must be a positive number of MB, got {max_file_mb!r}")
    return int(max_file_mb * 2**20)


def _files(bundle: Path) -> list[str]:
    """Relative POSIX paths of the bundle's files, sorted (hidden files and __pycache__ left out)."""
    out = []
    for p in sorted(bundle.rglob("*")):
        rel = p.relative_to(bundle)
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            out.append(rel.as_posix())
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _url_for(url: str, rel: str) -> str:
    """``url`` with ``{path}`` replaced by ``rel``, or ``rel`` appended to ``url`` as a folder."""
    return url.format(path=rel) if "{path}" in url else f"{url.rstrip('/')}/{rel}"


def _bundle_dir(bundle: str | os.PathLike) -> Path:
    path = Path(bundle)
    if not (path / "configs" / "metadata.json").is_file():
        raise ValueError(
            f"{path} is not a MONAI bundle (no configs/metadata.json); pass the bundle's root folder"
        )
    return path


def large_file_entries(
    bundle: str | os.PathLike, url: str, *, max_file_mb: float = MAX_FILE_MB
) -> list[dict[str, str]]:
    """``large_files.yml`` entries (``path``, ``url``, ``hash_val``, ``hash_type``) of the files over the limit.

    ``url`` is where the files will be downloadable: a base URL the relative path is appended to
    (``https://huggingface.co/<repo>/resolve/main`` -> ``.../resolve/main/models/model.pt``) or a
    template with ``{path}``.

    Example:
        >>> large_file_entries("out/bundle", "https://example.org/b", max_file_mb=0.001)  # doctest: +SKIP
        [{'path': 'models/model.pt', 'url': 'https://example.org/b/models/model.pt', 'hash_val': '...', 'hash_type': 'sha256'}]
    """
    root = _bundle_dir(bundle)
    limit = _limit_bytes(max_file_mb)
    entries = []
    for rel in _files(root):
        if rel in _LARGE_NAMES or rel in _NOT_SUBMITTED:
            continue
        path = root / rel
        if path.stat().st_size > limit:
            entries.append(
                {"path": rel, "url": _url_for(url, rel), "hash_val": _sha256(path), "hash_type": _HASH_TYPE}
            )
    return entries


def _yaml_text(entries: list[dict[str, str]]) -> str:
    lines = ["large_files:"]
    for e in entries:
        lines.append(f"  - path: {json.dumps(e['path'])}")
        for key in ("url", "hash_val", "hash_type"):
            lines.append(f"    {key}: {json.dumps(e[key])}")
    return "\n".join(lines) + "\n"


def write_large_files(
    bundle: str | os.PathLike, url: str | None, *, max_file_mb: float = MAX_FILE_MB
) -> list[dict[str, str]]:
    """Write ``large_files.yml`` listing every file over ``max_file_mb``; return its entries.

    Nothing over the limit: no ``large_files.yml`` (a stale one is removed) and ``[]``. ``url``
    (see :func:`large_file_entries`) is needed only when something is over the limit.

    Example:
        >>> write_large_files("out/bundle", "https://huggingface.co/me/b/resolve/main")  # doctest: +SKIP
        []
    """
    root = _bundle_dir(bundle)
    entries = large_file_entries(root, url or "", max_file_mb=max_file_mb)
    for name in _LARGE_NAMES:
        (root / name).unlink(missing_ok=True)
    if not entries:
        return []
    if not url:
        big = ", ".join(e["path"] for e in entries)
        raise ValueError(
            f"{big} exceed the model zoo's {max_file_mb:g} MB limit: pass url= (where they will be "
            f"downloadable, e.g. https://huggingface.co/<repo>/resolve/main) to list them in {LARGE_FILES}"
        )
    (root / LARGE_FILES).write_text(_yaml_text(entries), encoding="utf-8")
    return entries


def read_large_files(bundle: str | os.PathLike) -> list[dict[str, Any]]:
    """The entries of the bundle's ``large_files.yml`` / ``.yaml`` / ``.json`` (``[]`` without one).

    Example:
        >>> [e["path"] for e in read_large_files("out/bundle")]  # doctest: +SKIP
        ['models/model.pt']
    """
    from monai.bundle import ConfigParser

    root = Path(bundle)
    for name in _LARGE_NAMES:
        path = root / name
        if path.is_file():
            content = ConfigParser.load_config_file(str(path))
            entries = content.get("large_files") if isinstance(content, dict) else None
            if not isinstance(entries, list):
                raise ValueError(
                    f"{path}: expected a 'large_files' list of path/url/hash_val/hash_type entries"
                )
            return entries
    return []


def check_model_zoo(
    bundle: str | os.PathLike,
    *,
    max_file_mb: float = MAX_FILE_MB,
    schema: str | os.PathLike | None = None,
    verify_hashes: bool = True,
) -> None:
    """Raise a one-line ``ValueError`` naming every model-zoo rule the bundle breaks (see the module docstring).

    Files over ``max_file_mb`` must be listed in ``large_files.yml`` (a listed file that is present
    must match its hash, unless ``verify_hashes=False``: for a listing just written from the same
    files); ``schema``: a local copy of MONAI's metadata schema to also run
    ``monai.bundle.verify_metadata`` offline.

    Example:
        >>> check_model_zoo("out/bundle", schema="meta_schema_20240725.json")  # doctest: +SKIP
    """
    root = _bundle_dir(bundle)
    limit = _limit_bytes(max_file_mb)
    problems: list[str] = []
    files = set(_files(root))
    try:
        listed = {str(e.get("path")): e for e in read_large_files(root)}
    except ValueError as e:
        problems.append(str(e))
        listed = {}
    for entry in listed.values():
        missing = [k for k in ("path", "url", "hash_val", "hash_type") if not entry.get(k)]
        if missing:
            problems.append(f"{LARGE_FILES} entry {entry.get('path')!r} lacks {', '.join(missing)}")
    for rel in REQUIRED_FILES:
        if rel not in files and rel not in listed:
            problems.append(f"{rel} is missing")
    meta = json.loads((root / "configs" / "metadata.json").read_text(encoding="utf-8"))
    version = meta.get("version")
    if not version:
        problems.append("metadata.json has no 'version'")
    changelog = meta.get("changelog")
    if not isinstance(changelog, dict) or not changelog:
        problems.append("metadata.json has no 'changelog'")
    elif version and version not in changelog:
        problems.append(f"metadata.json changelog has no entry for version {version}")
    for rel in sorted(files - set(_NOT_SUBMITTED)):
        size = (root / rel).stat().st_size
        if rel in listed:
            entry = listed[rel]
            sha = str(entry.get("hash_type", "")).lower() == _HASH_TYPE
            if verify_hashes and entry.get("hash_val") and sha:
                if _sha256(root / rel) != entry["hash_val"]:
                    problems.append(f"{rel} does not match its sha256 in {LARGE_FILES}")
        elif size > limit:
            problems.append(
                f"{rel} is {size / 2**20:.1f} MB, over the {max_file_mb:g} MB limit, and not listed in {LARGE_FILES}"
            )
    if schema is not None and not problems:
        from monai.bundle import verify_metadata

        try:
            verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(schema))
        except Exception as e:  # jsonschema's ValidationError: keep its first line
            problems.append(f"metadata.json fails the schema: {str(e).splitlines()[0]}")
    if problems:
        raise ValueError(f"{root} breaks the MONAI model-zoo rules: " + "; ".join(problems))


def export_submission(
    bundle: str | os.PathLike, out: str | os.PathLike, *, max_file_mb: float = MAX_FILE_MB
) -> list[Path]:
    """Copy the bundle into ``out`` as a model-zoo submission: every file but those ``large_files.yml`` lists.

    ``out`` must not exist (it is created). The Hub card (root ``README.md``) stays behind; the
    bundle's own ``docs/README.md`` goes. Raises if the bundle breaks a rule (:func:`check_model_zoo`);
    returns the copied paths.

    Example:
        >>> export_submission("out/r-llm-adrenal", "model-zoo/models/r_llm_adrenal")  # doctest: +SKIP
    """
    root = _bundle_dir(bundle)
    check_model_zoo(root, max_file_mb=max_file_mb)
    dest = Path(out)
    if dest.exists():
        raise ValueError(f"{dest} exists; export into a new folder")
    listed = {str(e.get("path")) for e in read_large_files(root)}
    copied = []
    for rel in _files(root):
        if rel in listed or rel in _NOT_SUBMITTED:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
        copied.append(target)
    return copied


def package_bundle(
    model: Any,
    folder: str | os.PathLike,
    *,
    url: str | None = None,
    max_file_mb: float = MAX_FILE_MB,
    weights: str = "full",
    **save_kwargs: Any,
) -> dict[str, Any]:
    """Write a 3D network as a MONAI bundle that meets the model-zoo rules; return what was written.

    ``rllm_zoo.hub.save_pretrained(model, folder, weights=weights, **save_kwargs)`` writes the bundle
    (``dataset_flag=`` / ``dataset=`` for a preset, as there); then a ``LICENSE`` is added where
    missing, the export commands are added to ``docs/README.md``, ``large_files.yml`` lists every
    file over ``max_file_mb`` (``url``: where they will be downloadable, see
    :func:`large_file_entries`; default with ``repo_id=``: its Hugging Face ``resolve`` URL), and
    :func:`check_model_zoo` runs. ``weights="full"`` (the default here) keeps the frozen LLM layer in
    ``models/model.pt``, which ``monai.bundle ckpt_export`` / ``onnx_export`` load strictly.

    Returns ``save_pretrained``'s dict plus ``"large_files"`` (the ``large_files.yml`` entries).

    Example:
        >>> package_bundle(net, "out/b", dataset_flag="adrenalmnist3d", max_file_mb=25)  # doctest: +SKIP
    """
    from ..hub import save_pretrained
    from ..hub.folders import is_3d_model
    from .text import LICENSE_NETWORK, export_section

    if not is_3d_model(model):
        raise ValueError(
            f"{type(model).__name__} is not a 3D network: MONAI bundles hold rllm_zoo.monai networks "
            "(create_network); publish 2D timm models with rllm_zoo.hub.save_pretrained"
        )
    _limit_bytes(max_file_mb)
    info = save_pretrained(model, folder, weights=weights, **save_kwargs)
    root = Path(info["folder"])
    if not (root / "LICENSE").is_file():
        (root / "LICENSE").write_text(LICENSE_NETWORK, encoding="utf-8")
    doc = root / "docs" / "README.md"
    text = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    if "ckpt_export" not in text:
        doc.parent.mkdir(parents=True, exist_ok=True)
        shape = _input_shape(root)
        doc.write_text(
            text.rstrip() + "\n\n" + export_section(shape, script=not _hooked(model)), encoding="utf-8"
        )
    if url is None and save_kwargs.get("repo_id"):
        url = (
            f"https://huggingface.co/{save_kwargs['repo_id']}/resolve/{save_kwargs.get('revision') or 'main'}"
        )
    info["large_files"] = write_large_files(root, url, max_file_mb=max_file_mb)
    check_model_zoo(root, max_file_mb=max_file_mb, verify_hashes=False)  # the hashes were just computed
    info["files"] = {rel: (root / rel).stat().st_size for rel in _files(root)}
    return info


def _hooked(model: Any) -> bool:
    """True when a forward hook runs the booster (boosted MONAI networks): TorchScript cannot script it."""
    from ..plug import booster_hooks

    return bool(booster_hooks(model))


def _input_shape(root: Path) -> list[int]:
    """``[channels, *spatial]`` of the bundle's input, from its metadata."""
    meta = json.loads((root / "configs" / "metadata.json").read_text(encoding="utf-8"))
    image = meta["network_data_format"]["inputs"]["image"]
    return [int(image["num_channels"]), *(int(s) for s in image["spatial_shape"])]
