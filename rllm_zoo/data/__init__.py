"""Data: MedMNIST flags and your own files, one preprocessing record, cached datasets.

Example:
    >>> from rllm_zoo.data import Preprocessing, dataset_info
    >>> dataset_info("retinamnist").n_classes
    5
    >>> Preprocessing(spatial_dims=2, size=(64, 64), channels=1).pil_mode
    'L'
"""

from .cache import ImageFiles, VolumePairs, cached_volumes, image_pipeline
from .errors import DataError
from .medmnist_sets import (
    FLAGS_2D,
    FLAGS_3D,
    SIZES,
    DatasetInfo,
    build_dataset,
    check_available,
    dataset_info,
    default_root,
    medmnist_class,
    medmnist_preprocessing,
    npz_path,
)
from .own import IMAGE_SUFFIXES, OwnData, Sample, file_kind, parse_split, scan, write_file_list
from .preprocessing import PREPROCESSING_FILE, Preprocessing
from .run_data import DATASET_FILE, FileData, MedMNISTData, RunData, open_data

__all__ = [
    "DATASET_FILE",
    "FLAGS_2D",
    "FLAGS_3D",
    "IMAGE_SUFFIXES",
    "PREPROCESSING_FILE",
    "SIZES",
    "DataError",
    "DatasetInfo",
    "FileData",
    "ImageFiles",
    "MedMNISTData",
    "OwnData",
    "Preprocessing",
    "RunData",
    "Sample",
    "VolumePairs",
    "build_dataset",
    "cached_volumes",
    "check_available",
    "dataset_info",
    "default_root",
    "file_kind",
    "image_pipeline",
    "medmnist_class",
    "medmnist_preprocessing",
    "npz_path",
    "open_data",
    "parse_split",
    "scan",
    "write_file_list",
]
