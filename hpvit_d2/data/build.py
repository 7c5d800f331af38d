"""
``get_dataset_dicts``: detectron2's ``get_detection_dataset_dicts`` with the checks this project
adds, each dataset loaded by ``load_dataset``. Configs use it as
``dataloader.{train,test}.dataset``.

What stops loading, before training starts, with one error naming the file:
    - files missing (``DatasetNotFoundError``);
    - a COCO json whose images share an id (``DatasetFormatError``, ``hpvit_d2.data.coco_json``,
      which also gives the evaluator a copy of the json without the polygons training drops);
    - an annotation file that is malformed, or a COCO json without its ``images`` or
      ``categories`` key, or without ``annotations`` for training (``DatasetFormatError``);
    - ``require_masks=True`` and an annotation without ``segmentation`` (``DatasetFormatError``);
    - what ``sanitize_dataset_dicts`` rejects (``BadAnnotationError``, ``ValueError``).
"""

import difflib
import itertools
from typing import List, Optional, Sequence, Union

import numpy as np

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
from .coco_json import check_coco_json
from .sanitize import check_instance_masks, sanitize_dataset_dicts

__all__ = ["get_dataset_dicts", "load_dataset"]


def _format_error(name: str, path: str, problem: str) -> DatasetFormatError:
    return DatasetFormatError(
        f"Dataset '{name}': annotation file {path} is malformed: {problem}. "
        "Fix or replace the file (re-download it if it came with the dataset)."
    )


def _checked_bool(value, argument: str) -> bool:
    """``value`` if it is a bool (as an omegaconf interpolation resolves to), else TypeError."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(
        f"{argument} must be a bool, got {value!r} ({type(value).__name__}); "
        f'in a config, e.g. {argument}=True or {argument}="${{..mapper.use_instance_mask}}".'
    )


def _load_registered(name: str):
    """``DatasetCatalog.get(name)``; a failure is explained as a missing or malformed file."""
    try:
        return DatasetCatalog.get(name)
    except Exception as e:
        try:
            check_dataset(name)
        except DatasetNotFoundError as missing:
            raise missing from e
        found = diagnose_annotations(name)
        if found is None:
            raise
        raise _format_error(name, *found) from e


def _check_not_empty(name: str, dicts: List[dict], annotations_required: bool) -> None:
    """
    A dataset loaded without any image or any annotation is checked against its files: loaders
    read a missing key (COCO's ``images``, ``annotations``) as an empty list. A semantic dataset
    (dicts with ``sem_seg_file_name``) has its labels in files: any image will do.
    """
    if dicts and any(record.get("annotations") or "sem_seg_file_name" in record
                     for record in dicts):
        return
    found = diagnose_annotations(name, require_annotations=annotations_required)
    if found is not None:
        raise _format_error(name, *found)
    meta = MetadataCatalog.get(name)
    source = meta.get("source_json_file", None) or meta.get("json_file", None) or meta.get(
        "image_dir", None) or name
    if not dicts:
        raise DatasetFormatError(f"Dataset '{name}' has no images ({source} lists none).")
    if annotations_required and any("annotations" in record for record in dicts):
        raise DatasetFormatError(
            f"no annotations: dataset '{name}' ({source}) has {len(dicts)} images but an empty "
            "annotation list, and training needs annotated images. Add annotations, or use it "
            "for evaluation only (dataloader.test.dataset.names).")


def load_dataset(name: str, filter_empty: bool = False, require_masks: bool = False) -> List[dict]:
    """
    Load registered dataset ``name`` through DatasetCatalog, checked.

    detectron2's built-in COCO and Cityscapes names are checked on disk first (their loaders are
    slow and fail with bare asserts); any dataset whose loading fails, or that loads without any
    image or annotation, is checked again to tell a missing file from a malformed one. Loaded
    dicts go through ``sanitize_dataset_dicts``.

    Args:
        name: a name registered in DatasetCatalog.
        filter_empty: True for training: images without annotations or below the minimum size
            are dropped, and a COCO json must have an ``annotations`` key. False keeps every
            image for evaluation (a json without ``annotations``, such as COCO's test-dev, loads).
        require_masks: True when the model trains a mask head: every non-crowd annotation must
            have a ``segmentation`` (and the json an ``annotations`` key).
    Returns:
        list[dict] in detectron2's dataset format (or the registered object if not a list).
    Raises:
        DatasetNotFoundError: ``name`` is not registered, or its files are missing (names dataset, directory, expected layout, variable).
        DatasetFormatError: an annotation file is malformed or lacks a key or the masks the model
            needs (names the file and what is wrong).
    """
    require_masks = _checked_bool(require_masks, "require_masks")
    if name not in DatasetCatalog.list():
        close = difflib.get_close_matches(name, DatasetCatalog.list(), n=3, cutoff=0.6)
        raise DatasetNotFoundError(
            f"Dataset '{name}' is not registered"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
            + ". Register it (--register-coco NAME JSON IMAGE_DIR on the commands; in Python "
            "detectron2.data.datasets.register_coco_instances or hpvit_d2.data.datasets."
            "register_cityscapes_instances) or use a built-in name such as coco_2017_train or "
            "cityscapes_fine_instance_seg_train."
        )
    builtin = is_builtin(name)
    if builtin:  # fail fast, before detectron2's slow loader
        check_dataset(name)
    dicts = _load_registered(name)
    if not builtin:  # e.g. the shapes dataset, whose files are written by its loader
        check_dataset(name)
    check_coco_json(name)  # duplicate image ids; polygons the evaluator cannot read
    if not isinstance(dicts, list):
        return dicts
    _check_not_empty(name, dicts, annotations_required=bool(filter_empty) or require_masks)
    if require_masks:
        check_instance_masks(dicts, name)
    return sanitize_dataset_dicts(dicts, name, filter_empty=filter_empty)


def get_dataset_dicts(
    names: Union[str, Sequence[str]],
    filter_empty: bool = True,
    min_keypoints: int = 0,
    proposal_files: Optional[Sequence[str]] = None,
    check_consistency: bool = True,
    *,
    require_masks: bool = False,
):
    """
    Same arguments and result as ``detectron2.data.get_detection_dataset_dicts``; each dataset is
    loaded by :func:`load_dataset`, so a missing or malformed dataset is one clear error.

    Args:
        require_masks: True when the model trains a mask head (configs:
            ``"${..mapper.use_instance_mask}"``); an annotation without ``segmentation`` is then
            a ``DatasetFormatError`` before training starts.

    Returns:
        list[dict] in detectron2's standard dataset format (or the dataset object itself for a
        registered torch Dataset).
    """
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError("get_dataset_dicts: `names` is empty; give at least one dataset name.")
    per_dataset = [
        load_dataset(name, filter_empty=filter_empty, require_masks=require_masks)
        for name in names
    ]
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

    has_instances = bool(dicts) and "annotations" in dicts[0]
    if min_keypoints > 0 and has_instances:
        dicts = filter_images_with_few_keypoints(dicts, min_keypoints)
    if not dicts:
        raise DatasetFormatError(
            f"No images left in {', '.join(names)} after filtering (filter_empty={filter_empty}, "
            f"min_keypoints={min_keypoints}): every image has no usable annotation or is smaller "
            "than the minimum size."
        )
    if (
        check_consistency
        and has_instances
        and hasattr(MetadataCatalog.get(names[0]), "thing_classes")
    ):
        check_metadata_consistency("thing_classes", names)
        print_instances_class_histogram(dicts, MetadataCatalog.get(names[0]).thing_classes)
    return dicts
