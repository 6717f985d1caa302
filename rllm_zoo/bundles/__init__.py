"""MONAI bundles for 3D data (MedMNIST or your own volumes): the generator behind examples/bundles
and published 3D models, the records helper their configs call, and the MONAI model-zoo rules
(:mod:`rllm_zoo.bundles.zoo`: required files, 25 MB limit, large_files.yml)."""

from .records import bundle_records
from .writer import BUNDLE_VERSION, FLAGS, bundle_files, metadata, write_bundle
from .zoo import check_model_zoo, export_submission, package_bundle, write_large_files

__all__ = [
    "BUNDLE_VERSION",
    "FLAGS",
    "bundle_files",
    "bundle_records",
    "check_model_zoo",
    "export_submission",
    "metadata",
    "package_bundle",
    "write_bundle",
    "write_large_files",
]
