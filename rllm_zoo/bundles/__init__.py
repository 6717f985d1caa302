"""MONAI bundles for 3D data (MedMNIST or your own volumes): the generator behind examples/bundles
and published 3D models, and the records helper their configs call."""

from .records import bundle_records
from .writer import BUNDLE_VERSION, FLAGS, bundle_files, metadata, write_bundle

__all__ = ["BUNDLE_VERSION", "FLAGS", "bundle_files", "bundle_records", "metadata", "write_bundle"]
