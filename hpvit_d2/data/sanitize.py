"""
Checks detectron2 dataset dicts before training or evaluation: what can be repaired is repaired
(and counted), what cannot is rejected with an error naming the image file and the annotation.

Per annotation (``sanitize_annotations``):
    - category id not a contiguous id of the dataset's ``thing_classes`` -> ``BadAnnotationError``;
    - box missing, not 4 numbers, not finite, or in a relative mode -> ``BadAnnotationError``;
    - box of zero area (width or height <= 1e-5) -> dropped;
    - box partly outside the image -> clipped; wholly outside -> dropped;
    - polygon with fewer than 3 points (or an odd number of coordinates) -> polygon dropped;
    - polygon of zero area, or wholly outside the image -> polygon dropped;
    - polygon partly outside the image -> clipped to it (exactly, Sutherland-Hodgman);
    - no polygon left -> annotation dropped;
    - RLE or bitmask whose size differs from the image -> ``BadAnnotationError``;
    - empty RLE or bitmask -> annotation dropped.
Per image (``sanitize_dataset_dicts``):
    - ``height``/``width`` missing -> read from the file header (EXIF orientation applied);
    - image file missing -> ``ValueError`` listing the missing files;
    - shorter side below ``min_image_size`` (32) -> dropped for training (``filter_empty=True``),
      kept for evaluation;
    - no non-crowd annotation left -> dropped for training, kept for evaluation (detectron2's
      ``filter_empty``).
One summary line of counts is logged per dataset.
"""
import json
import logging
import math
import numbers
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode

from .images import BadImageError, read_image_size

__all__ = [
    "BadAnnotationError",
    "MIN_IMAGE_SIZE",
    "sanitize_dataset_dicts",
    "sanitize_annotations",
    "clip_polygon",
    "annotation_name",
]

logger = logging.getLogger(__name__)

MIN_IMAGE_SIZE = 32
"""Shorter image side, in pixels, below which training images are dropped."""

BOX_EPS = 1e-5
"""A box side at or below this is empty (detectron2's ``filter_empty_instances`` threshold)."""

COUNT_LABELS = {
    "small_images_dropped": "images smaller than {min_size} px dropped",
    "small_images_kept": "images smaller than {min_size} px kept (filter_empty=False)",
    "empty_images_dropped": "images without annotations dropped",
    "empty_images_kept": "images without annotations kept (filter_empty=False)",
    "sizes_read": "image sizes read from file headers",
    "zero_area_boxes": "zero-area boxes dropped",
    "boxes_outside": "boxes outside the image dropped",
    "boxes_clipped": "boxes clipped to the image",
    "short_polygons": "polygons with < 3 points dropped",
    "zero_area_polygons": "zero-area polygons dropped",
    "polygons_outside": "polygons outside the image dropped",
    "polygons_clipped": "polygons clipped to the image",
    "no_polygon_left": "annotations without a valid polygon dropped",
    "empty_masks": "annotations with an empty mask dropped",
}


class BadAnnotationError(ValueError):
    """An annotation that cannot be repaired; the message names the file and the annotation."""


def annotation_name(annotation: dict, index: int, json_id=None) -> str:
    """``"annotation id 17"``, or the position in the image when the id is not known."""
    if "id" in annotation:
        return f"annotation id {annotation['id']}"
    if json_id is not None:
        return f"annotation id {json_id}"
    return f"annotation #{index} of the image (its dict has no 'id' key)"


def _find_json_id(dataset_name: Optional[str], record: dict, annotation: dict):
    """
    The COCO json id of an annotation loaded without its ``id`` (detectron2's built-in COCO
    registration drops it): matched by image id and box in the dataset's ``json_file``. Only
    called on the error path; None when there is no json or no unique match.
    """
    if dataset_name is None or "image_id" not in record:
        return None
    json_file = MetadataCatalog.get(dataset_name).get("json_file", None)
    if not json_file or not os.path.isfile(json_file):
        return None
    try:
        with open(json_file) as f:
            annotations = json.load(f).get("annotations", [])
    except (OSError, ValueError):
        return None
    matches = [a.get("id") for a in annotations if a.get("image_id") == record["image_id"]
               and list(a.get("bbox", [])) == list(annotation.get("bbox", []))]
    return matches[0] if len(matches) == 1 else None


def _polygon_area(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Area of the polygon with vertices (xs[i], ys[i]) (shoelace formula; plain Python, which is
    faster than numpy for the few dozen points of a typical annotation)."""
    n = len(xs)
    return 0.5 * abs(sum(xs[i] * ys[i + 1 - n] - xs[i + 1 - n] * ys[i] for i in range(n)))


def clip_polygon(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """
    Intersect a polygon with the image rectangle [0, width] x [0, height].

    Args:
        points: (N, 2) float vertices (x, y), any orientation, convex or not.
        width, height: image size in pixels.
    Returns:
        (M, 2) vertices of the clipped polygon; M < 3 when nothing is inside.
    """
    # Sutherland-Hodgman: clip successively against the four half-planes of the rectangle.
    edges = ((0, 0.0, 1.0), (0, float(width), -1.0), (1, 0.0, 1.0), (1, float(height), -1.0))
    out = np.asarray(points, dtype=np.float64)
    for axis, bound, sign in edges:
        if len(out) == 0:
            break
        inside = sign * (out[:, axis] - bound) >= 0
        prev = np.roll(out, 1, axis=0)
        prev_inside = np.roll(inside, 1)
        kept = []
        for cur, cur_in, prv, prv_in in zip(out, inside, prev, prev_inside):
            if cur_in != prv_in:
                t = (bound - prv[axis]) / (cur[axis] - prv[axis])
                kept.append(prv + t * (cur - prv))
            if cur_in:
                kept.append(cur)
        out = np.asarray(kept, dtype=np.float64).reshape(-1, 2)
    return out


class _Context:
    """Where an annotation sits, for error messages."""

    def __init__(self, dataset_name: Optional[str], record: dict):
        self.dataset_name = dataset_name
        self.record = record
        self.file_name = record.get("file_name", "<no file_name>")
        self.image_id = record.get("image_id")

    def error(self, annotation: dict, index: int, problem: str, fix: str) -> BadAnnotationError:
        where = f"image '{self.file_name}'"
        if self.dataset_name is not None:
            where = f"dataset '{self.dataset_name}', " + where
        if self.image_id is not None:
            where += f" (image_id {self.image_id})"
        json_id = None
        if "id" not in annotation:
            json_id = _find_json_id(self.dataset_name, self.record, annotation)
        name = annotation_name(annotation, index, json_id)
        return BadAnnotationError(f"{where}, {name}: {problem}. {fix}")


def _check_category(anno, index, ctx, class_names):
    category = anno.get("category_id")
    if class_names is None:
        return
    valid = isinstance(category, numbers.Integral) and not isinstance(category, bool)
    if valid and 0 <= int(category) < len(class_names):
        return
    shown = ", ".join(f"{i}={name}" for i, name in enumerate(class_names[:20]))
    if len(class_names) > 20:
        shown += ", ..."
    raise ctx.error(
        anno, index,
        f"category_id {category!r} is not one of the {len(class_names)} classes of this dataset "
        f"(contiguous ids 0..{len(class_names) - 1}: {shown})",
        "Fix the annotation's category, or register the dataset with metadata "
        "(thing_classes) that lists this class.",
    )


def _to_xyxy(box: List[float], mode: BoxMode) -> List[float]:
    if mode == BoxMode.XYWH_ABS:
        return [box[0], box[1], box[0] + box[2], box[1] + box[3]]
    return box  # XYXY_ABS


def _from_xyxy(box: List[float], mode: BoxMode) -> List[float]:
    if mode == BoxMode.XYWH_ABS:
        return [box[0], box[1], box[2] - box[0], box[3] - box[1]]
    return box


def _clean_box(anno, index, ctx, width, height, counts):
    """Returns the annotation (maybe a clipped copy) or None to drop it."""
    if "bbox" not in anno or "bbox_mode" not in anno:
        raise ctx.error(anno, index, "it has no 'bbox' or no 'bbox_mode'",
                        "Give every annotation a box (COCO: 'bbox' as [x, y, w, h]).")
    mode = BoxMode(anno["bbox_mode"])
    if mode == BoxMode.XYWHA_ABS:
        return anno  # rotated boxes: left to the rotated-box pipeline
    if mode in (BoxMode.XYXY_REL, BoxMode.XYWH_REL):
        raise ctx.error(anno, index, f"bbox_mode {mode.name} (relative) is not supported",
                        "Convert boxes to absolute pixels (XYWH_ABS or XYXY_ABS).")
    try:
        box = [float(v) for v in anno["bbox"]]
    except (TypeError, ValueError):
        box = []
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ctx.error(anno, index, f"bbox {anno['bbox']!r} is not 4 finite numbers",
                        "Fix or remove this annotation.")
    x0, y0, x1, y1 = _to_xyxy(box, mode)
    if x1 - x0 <= BOX_EPS or y1 - y0 <= BOX_EPS:
        counts["zero_area_boxes"] += 1
        return None
    cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    if cx1 - cx0 <= BOX_EPS or cy1 - cy0 <= BOX_EPS:
        counts["boxes_outside"] += 1
        return None
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        counts["boxes_clipped"] += 1
        anno = dict(anno, bbox=_from_xyxy([cx0, cy0, cx1, cy1], mode))
    return anno


def _clean_polygons(anno, index, ctx, width, height, counts):
    kept, changed = [], False
    for poly in anno["segmentation"]:
        try:
            coords = np.asarray(poly, dtype=np.float64).reshape(-1).tolist() \
                if isinstance(poly, np.ndarray) else [float(v) for v in poly]
        except (TypeError, ValueError):
            coords = [math.nan]
        if not math.isfinite(sum(coords)):  # inf/nan anywhere makes the sum non-finite
            raise ctx.error(anno, index, "a polygon has non-numeric or non-finite coordinates",
                            "Fix or remove this annotation.")
        if len(coords) < 6 or len(coords) % 2:
            counts["short_polygons"] += 1
            changed = True
            continue
        xs, ys = coords[0::2], coords[1::2]
        if _polygon_area(xs, ys) <= 0:
            counts["zero_area_polygons"] += 1
            changed = True
            continue
        if min(xs) < 0 or min(ys) < 0 or max(xs) > width or max(ys) > height:
            points = clip_polygon(np.reshape(coords, (-1, 2)), width, height)
            changed = True
            if len(points) < 3 or _polygon_area(points[:, 0], points[:, 1]) <= 0:
                counts["polygons_outside"] += 1
                continue
            counts["polygons_clipped"] += 1
            poly = points.reshape(-1).tolist()
        kept.append(poly)
    if not kept:
        counts["no_polygon_left"] += 1
        return None
    return dict(anno, segmentation=kept) if changed else anno


def _clean_mask(anno, index, ctx, width, height, counts):
    segm = anno["segmentation"]
    if isinstance(segm, dict):
        size = segm.get("size")
        if size is None or "counts" not in segm:
            raise ctx.error(anno, index, "its RLE segmentation lacks 'size' or 'counts'",
                            "Store masks as COCO RLE {'size': [h, w], 'counts': ...}.")
        if [int(s) for s in size] != [height, width]:
            raise ctx.error(
                anno, index,
                f"its RLE mask is {size[0]}x{size[1]} (h x w) but the image is {height}x{width}",
                "The mask belongs to another image or resolution: re-encode it at the image size.",
            )
        rle = segm
        if isinstance(segm["counts"], list):
            rle = mask_util.frPyObjects(segm, height, width)
        try:
            area = float(mask_util.area(rle))
        except Exception as e:  # pycocotools raises bare Exceptions on malformed counts
            raise ctx.error(anno, index, f"its RLE cannot be decoded ({e})",
                            "Re-encode the mask with pycocotools.mask.encode.") from e
        if rle is not segm:
            anno = dict(anno, segmentation=rle)
    elif isinstance(segm, np.ndarray):
        if segm.ndim != 2 or segm.shape != (height, width):
            raise ctx.error(anno, index,
                            f"its bitmask has shape {segm.shape} but the image is {height}x{width}",
                            "Give the mask the image's (height, width).")
        area = float(np.count_nonzero(segm))
    else:
        raise ctx.error(anno, index, f"segmentation of type {type(segm).__name__} is not supported",
                        "Use polygons (list of [x0, y0, x1, y1, ...]), COCO RLE, or an HxW array.")
    if area == 0:
        counts["empty_masks"] += 1
        return None
    return anno


def sanitize_annotations(
    record: dict,
    dataset_name: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
    counts: Optional[Counter] = None,
) -> List[dict]:
    """
    Clean the annotations of one dataset dict (the image size comes from its height/width).

    Args:
        record: a detectron2 dataset dict with ``height``, ``width`` and ``annotations``; it is
            not modified.
        dataset_name: used in error messages (None: not known).
        class_names: the dataset's ``thing_classes``; None skips the category check.
        counts: a Counter that receives what was dropped or repaired (keys of ``COUNT_LABELS``).
    Returns:
        The annotations to keep: the input dicts, or repaired copies.
    Raises:
        BadAnnotationError: naming the file and annotation, for what cannot be repaired.
    """
    counts = Counter() if counts is None else counts
    ctx = _Context(dataset_name, record)
    height, width = int(record["height"]), int(record["width"])
    kept = []
    for index, anno in enumerate(record.get("annotations", [])):
        _check_category(anno, index, ctx, class_names)
        anno = _clean_box(anno, index, ctx, width, height, counts)
        segm = anno.get("segmentation") if anno is not None else None
        if anno is not None and segm is not None and not (isinstance(segm, list) and not segm):
            if isinstance(segm, list):
                anno = _clean_polygons(anno, index, ctx, width, height, counts)
            else:
                anno = _clean_mask(anno, index, ctx, width, height, counts)
        if anno is not None:
            kept.append(anno)
    return kept


def _read_size(file_name: str, dataset_name: str) -> Tuple[int, int]:
    """(height, width) of an image file as it is decoded (EXIF orientation applied)."""
    try:
        return read_image_size(file_name)
    except BadImageError as e:
        raise ValueError(f"dataset '{dataset_name}': {e}") from e


def _check_files_exist(dataset_dicts: List[dict], dataset_name: str) -> None:
    missing = [r["file_name"] for r in dataset_dicts
               if "://" not in r["file_name"] and not os.path.isfile(r["file_name"])]
    if missing:
        shown = "\n  ".join(missing[:5]) + ("\n  ..." if len(missing) > 5 else "")
        raise ValueError(
            f"dataset '{dataset_name}': {len(missing)} of {len(dataset_dicts)} image files do not "
            f"exist, e.g.\n  {shown}\nCheck the image root the dataset was registered with, or "
            "remove these images from the annotations.")


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
        if "height" not in record or "width" not in record:
            record["height"], record["width"] = _read_size(record["file_name"], dataset_name)
            counts["sizes_read"] += 1
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
    _log_summary(dataset_name, len(dataset_dicts), len(out), counts, min_image_size,
                 class_names is not None)
    return out
