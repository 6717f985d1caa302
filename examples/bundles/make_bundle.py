#!/usr/bin/env python
"""Write a MONAI bundle that trains an R-LLM boosted ViT3D on a 3D MedMNIST set.

Usage::

    python examples/bundles/make_bundle.py --flag adrenalmnist3d --out examples/bundles/adrenalmnist3d
    python examples/bundles/make_bundle.py --flag organmnist3d --out /tmp/organmnist3d

The generator lives in :mod:`rllm_zoo.bundles`; the committed ``examples/bundles/adrenalmnist3d``
is exactly what it writes for that flag.
"""

from __future__ import annotations

import argparse

from rllm_zoo.bundles import FLAGS, bundle_files, metadata, write_bundle

__all__ = ["FLAGS", "bundle_files", "main", "metadata", "write_bundle"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flag", required=True, choices=FLAGS, help="3D MedMNIST data set")
    parser.add_argument("--out", required=True, help="bundle folder to write (e.g. examples/bundles/FLAG)")
    args = parser.parse_args(argv)
    for path in write_bundle(args.flag, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
