"""MONAI bundles for 3D MedMNIST: the generator behind examples/bundles and published 3D models."""

from .writer import BUNDLE_VERSION, FLAGS, bundle_files, metadata, write_bundle

__all__ = ["BUNDLE_VERSION", "FLAGS", "bundle_files", "metadata", "write_bundle"]
