"""
Data for HPViT-D2: checked dataset loading, a dataset mapper that converts or rejects bad images,
and the embedded shapes dataset.

Modules (one job each):
    build       ``get_dataset_dicts`` / ``load_dataset``: registered datasets, loaded and checked
    datasets    COCO / Cityscapes / ADE20K on disk: registration helper, missing-file and format
                checks
    coco_json   checks of a COCO json itself (duplicate image ids; the evaluator's copy without
                the polygons training drops)
    sanitize    dataset-level repairs at load (sizes, minimum size, empty images)
    annotations per-annotation repairs and errors (boxes, polygons, masks, categories)
    images      the image reader of every path (EXIF orientation, pixel formats, header sizes,
                pixel cap)
    transforms  augmentations whose resizes never make an empty image
    errors      ``UserDataError``, the base of the data errors (one line, also from a worker)
    labels      the semantic label-map reader (size and value checks, naming the file)
    mapper      ``SafeDatasetMapper``: detectron2's DatasetMapper with the checked reader
    shapes      the shapes dataset generator
    shapes_semseg  label maps of the shapes images (background + 4 shapes)
    builtin     ``register_all_shapes``: registration of the shapes splits

Importing this package registers the shapes splits (``hpvit_shapes_train``, ``hpvit_shapes_val``,
``..._mini``, and ``hpvit_shapes_sem_seg_*``), as importing ``detectron2.data`` registers
detectron2's built-in datasets.
"""
from .annotations import BadAnnotationError
from .build import get_dataset_dicts, load_dataset
from .builtin import register_all_shapes
from .datasets import DatasetFormatError, DatasetNotFoundError, register_cityscapes_instances
from .images import BadImageError, read_image_checked
from .labels import BadLabelError, read_label_checked
from .mapper import SafeDatasetMapper
from .sanitize import sanitize_dataset_dicts

__all__ = [
    "BadAnnotationError",
    "BadImageError",
    "BadLabelError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "SafeDatasetMapper",
    "get_dataset_dicts",
    "load_dataset",
    "read_image_checked",
    "read_label_checked",
    "register_all_shapes",
    "register_cityscapes_instances",
    "sanitize_dataset_dicts",
]

register_all_shapes()
