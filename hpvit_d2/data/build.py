"""
``get_dataset_dicts``: detectron2's ``get_detection_dataset_dicts`` with the checks this project
adds. Configs use it as ``dataloader.{train,test}.dataset``.
"""

import itertools
import logging
from typing import List, Optional, Sequence, Union

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.build import (
    filter_images_with_few_keypoints,
    load_proposals_into_dataset,
    print_instances_class_histogram,
)
from detectron2.data.detection_utils import check_metadata_consistency

from .datasets import (
    DatasetFormatError,
    DatasetNotFoundError,
    check_dataset,
    diagnose_annotations,
    is_builtin,
)
from .sanitize import sanitize_dataset_dicts

__all__ = ["get_dataset_dicts", "load_dataset"]

logger = logging.getLogger(__name__)


def load_dataset(name: str, filter_empty: bool = False) -> List[dict]:
    """
    Load registered dataset ``name`` through DatasetCatalog, checked.

    detectron2's built-in COCO and Cityscapes names are checked on disk first (their loaders are
    slow and fail with bare asserts); any dataset whose loading fails is checked again to tell a
    missing file from a malformed one. Loaded dicts go through ``sanitize_dataset_dicts``
    (``filter_empty`` is passed on: True for training, False keeps every image for evaluation).

    Raises:
        DatasetNotFoundError: files missing (names dataset, directory, expected layout, variable).
        DatasetFormatError: an annotation file is malformed (names the file and what is wrong).
    """
    if name not in DatasetCatalog.list():
        raise KeyError(
            f"Dataset '{name}' is not registered. Register it (detectron2.data.datasets."
            "register_coco_instances, hpvit_d2.data.datasets.register_cityscapes_instances) or use a "
            "built-in name such as coco_2017_train or cityscapes_fine_instance_seg_train."
        )
    builtin = is_builtin(name)
    if builtin:  # fail fast, before detectron2's slow loader
        check_dataset(name)
    try:
        dicts = DatasetCatalog.get(name)
    except Exception as e:
        try:
            check_dataset(name)
        except DatasetNotFoundError as missing:
            raise missing from e
        found = diagnose_annotations(name)
        if found is None:
            raise
        path, problem = found
        raise DatasetFormatError(
            f"Dataset '{name}': annotation file {path} is malformed: {problem}. "
            "Fix or replace the file (re-download it if it came with the dataset)."
        ) from e
    if not builtin:  # e.g. the shapes dataset, whose files are written by its loader
        check_dataset(name)
    if not isinstance(dicts, list):
        return dicts
    if not dicts:
        meta = MetadataCatalog.get(name)
        source = getattr(meta, "json_file", None) or getattr(meta, "image_dir", None) or name
        raise DatasetFormatError(f"Dataset '{name}' has no images ({source} lists none).")
    return sanitize_dataset_dicts(dicts, name, filter_empty=filter_empty)


def get_dataset_dicts(
    names: Union[str, Sequence[str]],
    filter_empty: bool = True,
    min_keypoints: int = 0,
    proposal_files: Optional[Sequence[str]] = None,
    check_consistency: bool = True,
):
    """
    Same arguments and result as ``detectron2.data.get_detection_dataset_dicts``; each dataset is
    loaded by :func:`load_dataset`, so a missing or malformed dataset is one clear error.

    Returns:
        list[dict] in detectron2's standard dataset format (or the dataset object itself for a
        registered torch Dataset).
    """
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError("get_dataset_dicts: `names` is empty; give at least one dataset name.")
    per_dataset = [load_dataset(name, filter_empty=filter_empty) for name in names]
    if not all(isinstance(d, list) for d in per_dataset):
        if len(per_dataset) > 1:
            raise ValueError(
                f"get_dataset_dicts: datasets {names} are not all lists; cannot concatenate."
            )
        return per_dataset[0]
    if proposal_files is not None:
        if len(proposal_files) != len(names):
            raise ValueError(
                f"get_dataset_dicts: {len(proposal_files)} proposal_files for {len(names)} datasets."
            )
        per_dataset = [
            load_proposals_into_dataset(d, f) for d, f in zip(per_dataset, proposal_files)
        ]
    dicts = list(itertools.chain.from_iterable(per_dataset))

    has_instances = "annotations" in dicts[0]
    if min_keypoints > 0 and has_instances:
        dicts = filter_images_with_few_keypoints(dicts, min_keypoints)
    if (
        check_consistency
        and has_instances
        and hasattr(MetadataCatalog.get(names[0]), "thing_classes")
    ):
        check_metadata_consistency("thing_classes", names)
        print_instances_class_histogram(dicts, MetadataCatalog.get(names[0]).thing_classes)
    if not dicts:
        raise ValueError(
            f"No images left in {', '.join(names)} after filtering (filter_empty={filter_empty}, "
            f"min_keypoints={min_keypoints}): every image has no usable annotation."
        )
    return dicts
