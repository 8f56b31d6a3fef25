"""Data: datasets (list format, folders, the built-in demo set), readers (OpenCV reference, native C++), loader."""

from .builtin import BUILTIN_IMAGE_SIZE, BUILTIN_NUM_CLASSES, builtin_dataset_dir
from .datasets import (
    IMAGENET_LABELS_PATH,
    DataError,
    DatasetSpec,
    Sample,
    load_dataset,
    load_labels,
    parse_list_file,
    resolve_dataset,
)
from .loader import Loader
from .preprocess import PreprocessSpec, normalize
from .readers import BatchReader, OpenCVReader, make_reader
from .transforms import AugConfig

__all__ = [
    "BUILTIN_IMAGE_SIZE",
    "BUILTIN_NUM_CLASSES",
    "IMAGENET_LABELS_PATH",
    "AugConfig",
    "BatchReader",
    "DataError",
    "DatasetSpec",
    "Loader",
    "OpenCVReader",
    "PreprocessSpec",
    "Sample",
    "builtin_dataset_dir",
    "load_dataset",
    "load_labels",
    "make_reader",
    "normalize",
    "parse_list_file",
    "resolve_dataset",
]
