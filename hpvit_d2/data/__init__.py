"""
Data for HPViT-D2: checked dataset loading, a dataset mapper that converts or rejects bad images,
and the embedded shapes dataset.

Modules (one job each):
    build       ``get_dataset_dicts`` / ``load_dataset``: registered datasets, loaded and checked
    datasets    COCO / Cityscapes on disk: registration helper, missing-file and format checks
    sanitize    dataset-level repairs at load (sizes, minimum size, empty images)
    annotations per-annotation repairs and errors (boxes, polygons, masks, categories)
    images      the image reader (EXIF orientation, pixel formats, header sizes)
    mapper      ``SafeDatasetMapper``: detectron2's DatasetMapper with the checked reader
    shapes      the shapes dataset generator
    builtin     ``register_all_shapes``: registration of the shapes splits

Importing this package registers the shapes splits (``hpvit_shapes_train``, ``hpvit_shapes_val``,
``..._mini``), as importing ``detectron2.data`` registers detectron2's built-in datasets.
"""
from .annotations import BadAnnotationError
from .build import get_dataset_dicts, load_dataset
from .builtin import register_all_shapes
from .datasets import DatasetFormatError, DatasetNotFoundError, register_cityscapes_instances
from .images import BadImageError, read_image_checked
from .mapper import SafeDatasetMapper
from .sanitize import sanitize_dataset_dicts

__all__ = [
    "BadAnnotationError",
    "BadImageError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "SafeDatasetMapper",
    "get_dataset_dicts",
    "load_dataset",
    "read_image_checked",
    "register_all_shapes",
    "register_cityscapes_instances",
    "sanitize_dataset_dicts",
]

register_all_shapes()
