"""
Checks detectron2 dataset dicts once, at load, before training or evaluation: what can be
repaired is repaired (and counted), what cannot is rejected with an error naming the image file
(and the annotation).

Per image (``sanitize_dataset_dicts``):
    - ``height``/``width`` missing -> read from the file header (EXIF orientation applied); when
      given they must be numbers (``DatasetFormatError`` for "256"), and are trusted here (the
      mapper, which decodes the image, checks them);
    - above the image reader's pixel cap (``hpvit_d2.data.images.check_pixel_cap``, from the
      annotated size) -> ``BadImageError`` before training, rather than in a loader worker;
    - image file (or semantic label file) missing -> ``DatasetNotFoundError`` (how many, the first)
      (label contents are checked when read, by ``hpvit_d2.data.labels``);
    - shorter side below ``min_image_size`` (``MIN_IMAGE_SIZE``, 32) -> dropped for training
      (``filter_empty=True``), kept for evaluation; the only place this policy is applied;
    - annotations -> :func:`hpvit_d2.data.annotations.sanitize_annotations` (repaired, dropped or
      rejected with ``BadAnnotationError``);
    - no non-crowd annotation left -> dropped for training, kept for evaluation (detectron2's
      ``filter_empty``).
One summary line of counts is logged per dataset.

Per dataset, when the model needs masks (``check_instance_masks``): a non-crowd annotation without
``segmentation`` -> ``DatasetFormatError`` naming the dataset, its json, how many and the first.
"""
import logging
import os
from collections import Counter
from typing import Dict, List, Optional, Tuple

from detectron2.data import MetadataCatalog

from .annotations import (
    ANNOTATION_COUNT_LABELS,
    annotation_name,
    json_annotation_id,
    sanitize_annotations,
)
from .datasets import DatasetFormatError, DatasetNotFoundError
from .images import BadImageError, check_pixel_cap, read_image_size

__all__ = ["COUNT_LABELS", "MIN_IMAGE_SIZE", "check_instance_masks", "sanitize_dataset_dicts"]

logger = logging.getLogger(__name__)

MIN_IMAGE_SIZE = 32
"""Shorter image side, in pixels, below which training images are dropped."""

COUNT_LABELS = {
    "small_images_dropped": "images smaller than {min_size} px dropped",
    "small_images_kept": "images smaller than {min_size} px kept (filter_empty=False)",
    "empty_images_dropped": "images without annotations dropped",
    "empty_images_kept": "images without annotations kept (filter_empty=False)",
    "sizes_read": "image sizes read from file headers",
    **ANNOTATION_COUNT_LABELS,
}
"""What ``sanitize_dataset_dicts`` counts, as logged in its summary line."""


def _read_size(file_name: str, dataset_name: str) -> Tuple[int, int]:
    """(height, width) of an image file as it is decoded (EXIF orientation applied)."""
    try:
        return read_image_size(file_name)
    except BadImageError as e:
        raise BadImageError(f"{e} (dataset '{dataset_name}')") from e


def _check_size_numbers(record: Dict, dataset_name: str) -> None:
    """``height`` and ``width``, when given, must be whole numbers (a json may write "256")."""
    for key in ("height", "width"):
        value = record.get(key)
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and float(value).is_integer()):
            continue
        json_file = MetadataCatalog.get(dataset_name).get("json_file", None)
        image_id = f" (image_id {record['image_id']})" if "image_id" in record else ""
        written = str(value).strip()
        raise DatasetFormatError(
            f"Dataset '{dataset_name}'" + (f" ({json_file})" if json_file else "")
            + f": image '{os.path.basename(str(record.get('file_name')))}'{image_id} has {key} "
            f"{value!r}, a {type(value).__name__.replace('str', 'string')}: image sizes are "
            f"numbers; write {written if written.isdigit() else 'its size'} without quotes")


def _check_files_exist(dataset_dicts: List[dict], dataset_name: str) -> None:
    """One line naming how many files are missing and the first, before anything is trained."""
    for key, what in (("file_name", "image"), ("sem_seg_file_name", "label")):
        files = [r[key] for r in dataset_dicts if key in r]
        missing = [f for f in files if "://" not in f and not os.path.isfile(f)]
        if missing:
            raise DatasetNotFoundError(
                f"{len(missing)} of {len(files)} {what} files do not exist in dataset "
                f"'{dataset_name}', first '{missing[0]}': check the {what} root the dataset was "
                "registered with, or remove them from its annotations.")


def _log_summary(dataset_name: str, n_in: int, n_out: int, counts: Counter, min_size: int,
                 checked_categories: bool) -> None:
    parts = [COUNT_LABELS[k].format(min_size=min_size) + f": {counts[k]}"
             for k in COUNT_LABELS if counts.get(k)]
    if not checked_categories:
        parts.append("category ids not checked (no thing_classes in the metadata)")
    repaired = any(counts.get(k) for k in COUNT_LABELS if k != "sizes_read")
    level = logging.WARNING if repaired else logging.INFO
    logger.log(level, f"Sanitized dataset '{dataset_name}': {n_in} images in, {n_out} kept"
               + ("; " + "; ".join(parts) if parts else "; nothing to repair") + ".")


def sanitize_dataset_dicts(
    dataset_dicts: List[Dict],
    dataset_name: str,
    *,
    filter_empty: bool = False,
    min_image_size: int = MIN_IMAGE_SIZE,
    check_files: bool = True,
) -> List[Dict]:
    """
    Repair or reject bad images and annotations of one dataset; see the module docstring.

    Args:
        dataset_dicts: detectron2 dataset dicts (``file_name``, ``height``, ``width``,
            ``annotations`` with ``bbox``, ``bbox_mode``, ``category_id`` contiguous,
            ``segmentation`` polygons / RLE, optional ``id``); not modified.
        dataset_name: registered name; its ``thing_classes`` bound the category ids.
        filter_empty: True for training: drop images smaller than ``min_image_size`` and images
            left without a non-crowd annotation. False (default, safe for evaluation): keep every
            image, so metrics cover the whole split. This is the only place that applies the
            minimum size: the mapper maps whatever it is given.
        min_image_size: shorter side in pixels below which a training image is dropped.
        check_files: check that every local image file exists.
    Returns:
        New list of dicts (shallow copies where annotations changed).
    Raises:
        BadAnnotationError / ValueError: naming the file (and annotation id) that must be fixed.
    """
    class_names = MetadataCatalog.get(dataset_name).get("thing_classes", None)
    if check_files:
        _check_files_exist(dataset_dicts, dataset_name)
    counts: Counter = Counter()
    out = []
    for record in dataset_dicts:
        record = dict(record)
        _check_size_numbers(record, dataset_name)
        if "height" not in record or "width" not in record:
            record["height"], record["width"] = _read_size(record["file_name"], dataset_name)
            counts["sizes_read"] += 1
        check_pixel_cap(record["file_name"], record["width"], record["height"])
        if min(int(record["height"]), int(record["width"])) < min_image_size:
            if filter_empty:
                counts["small_images_dropped"] += 1
                continue
            counts["small_images_kept"] += 1
        if "annotations" in record:
            record["annotations"] = sanitize_annotations(record, dataset_name, class_names, counts)
            if not any(a.get("iscrowd", 0) == 0 for a in record["annotations"]):
                if filter_empty:
                    counts["empty_images_dropped"] += 1
                    continue
                counts["empty_images_kept"] += 1
        out.append(record)
    has_annotations = any("annotations" in record for record in dataset_dicts)
    _log_summary(dataset_name, len(dataset_dicts), len(out), counts, min_image_size,
                 class_names is not None or not has_annotations)
    return out


def _first_without_mask(dataset_dicts: List[Dict]) -> Tuple[int, int, Optional[Tuple[dict, int]]]:
    """(non-crowd annotations without a mask, all non-crowd ones, (record, index) of the first)."""
    lacking, total, first = 0, 0, None
    for record in dataset_dicts:
        for index, anno in enumerate(record.get("annotations", ())):
            if anno.get("iscrowd", 0):
                continue
            total += 1
            segm = anno.get("segmentation")
            if segm is None or (isinstance(segm, list) and not segm):
                lacking += 1
                first = first or (record, index)
    return lacking, total, first


def check_instance_masks(dataset_dicts: List[Dict], dataset_name: str) -> None:
    """
    Check that every non-crowd annotation has a ``segmentation`` (polygons, RLE or bitmask), as a
    mask head needs; crowd annotations are not trained on and may lack it.

    Args:
        dataset_dicts: detectron2 dataset dicts of ``dataset_name`` (not modified).
        dataset_name: registered name; its metadata ``json_file`` is named when there is one.
    Raises:
        DatasetFormatError: one line naming the dataset, its json file, how many annotations lack
            a mask, the first of them (annotation id, image) and the two ways to fix it.
    """
    lacking, total, first = _first_without_mask(dataset_dicts)
    if not lacking:
        return
    record, index = first
    anno = record["annotations"][index]
    json_id = None if "id" in anno else json_annotation_id(dataset_name, record, anno)
    json_file = MetadataCatalog.get(dataset_name).get("json_file", None)
    source = f" ({json_file})" if json_file else ""
    raise DatasetFormatError(
        f"Dataset '{dataset_name}'{source}: {lacking} of {total} non-crowd annotations have no "
        f"'segmentation' (first: {annotation_name(anno, index, json_id)}, image "
        f"'{record.get('file_name')}'), but the model trains a mask head (require_masks=True). "
        "Add polygon/RLE masks, or train boxes only: on the command line "
        "model.roi_heads.mask_in_features=null dataloader.train.mapper.use_instance_mask=False "
        "'dataloader.evaluator.tasks=[bbox]' (yacs: MODEL.MASK_ON False).")
