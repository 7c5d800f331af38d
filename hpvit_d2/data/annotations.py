"""
Per-annotation checks of detectron2 dataset dicts: what can be repaired is repaired (and counted),
what cannot is rejected with :class:`BadAnnotationError` naming the image file and the annotation.

``sanitize_annotations`` on one dataset dict (counts under the keys of ``ANNOTATION_COUNT_LABELS``):
    - category id not a contiguous id of the dataset's ``thing_classes`` -> error;
    - box missing, not 4 numbers, not finite, or in a relative mode -> error;
    - box of negative width or height -> dropped (counted as such);
    - box of zero area (width or height <= ``BOX_EPS``) -> dropped;
    - box partly outside the image -> clipped; wholly outside -> dropped;
    - segmentation polygon that is not a list of numbers, or not finite -> error;
    - polygon with fewer than 3 points (or an odd number of coordinates) -> polygon dropped;
    - polygon of zero area, or wholly outside the image -> polygon dropped;
    - polygon partly outside the image -> clipped to it with shapely (:func:`clip_polygon_to_image`:
      exact, self-intersecting input repaired, possibly several parts);
    - no polygon left -> annotation dropped;
    - RLE or bitmask whose size differs from the image -> error;
    - RLE whose run lengths do not add up to the image's pixel count (corrupt counts: their area
      can exceed the image) -> error, checked before pycocotools decodes anything;
    - empty RLE or bitmask -> annotation dropped.
Box modes are converted with ``BoxMode.convert``, polygon areas are detectron2's ``polygon_area``.
"""
import json
import numbers
import os
from collections import Counter
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import shapely
from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.structures.masks import polygon_area

from .errors import UserDataError

__all__ = [
    "ANNOTATION_COUNT_LABELS",
    "BOX_EPS",
    "BadAnnotationError",
    "annotation_name",
    "clip_polygon_to_image",
    "is_short_polygon",
    "rle_counts",
    "json_annotation_id",
    "sanitize_annotations",
]

BOX_EPS = 1e-5
"""A box side at or below this is empty (detectron2's ``filter_empty_instances`` threshold)."""

ANNOTATION_COUNT_LABELS = {
    "negative_size_boxes": "boxes with a negative width or height dropped",
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


def is_short_polygon(coords: Sequence) -> bool:
    """
    True for a polygon that is dropped: fewer than 3 points or an odd number of coordinates
    (pycocotools cannot read one: it takes 4 numbers for a box). The one rule for training
    (``sanitize_annotations``) and evaluation (``hpvit_d2.data.coco_json``).
    """
    return len(coords) < 6 or len(coords) % 2 == 1


class BadAnnotationError(UserDataError):
    """An annotation that cannot be repaired; the message names the file and the annotation."""


def annotation_name(annotation: dict, index: int, json_id=None) -> str:
    """``"annotation id 17"``, or the position in the image when the id is not known."""
    if "id" in annotation:
        return f"annotation id {annotation['id']}"
    if json_id is not None:
        return f"annotation id {json_id}"
    return f"annotation #{index} of the image (its dict has no 'id' key)"


def json_annotation_id(dataset_name: Optional[str], record: dict, annotation: dict):
    """
    The COCO json id of an annotation loaded without its ``id`` (detectron2's built-in COCO
    registration drops it): matched by image id and box in the dataset's ``json_file``. Reads the
    json, so it is for error paths; None when there is no json or no unique match.
    """
    if dataset_name is None or "image_id" not in record:
        return None
    json_file = MetadataCatalog.get(dataset_name).get("json_file", None)
    if not json_file or not os.path.isfile(json_file):
        return None
    try:
        with open(json_file) as f:
            annotations = json.load(f).get("annotations", [])
    except (OSError, ValueError, AttributeError):
        return None
    matches = [a.get("id") for a in annotations if a.get("image_id") == record["image_id"]
               and list(a.get("bbox", [])) == list(annotation.get("bbox", []))]
    return matches[0] if len(matches) == 1 else None


def _polygon_parts(geometry) -> Iterator[shapely.Polygon]:
    """The polygons of a shapely geometry (Polygon, MultiPolygon, GeometryCollection)."""
    for part in shapely.get_parts(geometry):
        if isinstance(part, shapely.Polygon):
            yield part
        elif isinstance(part, (shapely.MultiPolygon, shapely.GeometryCollection)):
            yield from _polygon_parts(part)


def clip_polygon_to_image(
    coords: Sequence[float], width: float, height: float
) -> List[List[float]]:
    """
    The parts of a polygon inside the image rectangle [0, width] x [0, height], by shapely.

    Args:
        coords: flat ``[x0, y0, x1, y1, ...]``, at least 3 points, any orientation; a
            self-intersecting polygon is first repaired with ``shapely.make_valid``.
        width, height: image size in pixels.
    Returns:
        Flat polygons (COCO's list-of-polygons form), one per part of the intersection that has
        >= 3 points and a non-zero area; empty when nothing is inside. Holes, which COCO polygons
        cannot express, are filled.
    """
    polygon = shapely.Polygon(np.reshape(np.asarray(coords, dtype=np.float64), (-1, 2)))
    if not polygon.is_valid:
        polygon = shapely.make_valid(polygon)
    inside = polygon.intersection(shapely.box(0, 0, width, height))
    parts = []
    for part in _polygon_parts(inside):
        ring = np.asarray(part.exterior.coords)[:-1]  # shapely repeats the first point last
        if len(ring) >= 3 and polygon_area(ring[:, 0], ring[:, 1]) > 0:
            parts.append(ring.reshape(-1).tolist())
    return parts


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
            json_id = json_annotation_id(self.dataset_name, self.record, annotation)
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


def _checked_box(anno, index, ctx) -> Optional[Tuple[BoxMode, np.ndarray]]:
    """(mode, (4,) float64 box) of an annotation, or None for a rotated box (``XYWHA_ABS``)."""
    if "bbox" not in anno or "bbox_mode" not in anno:
        raise ctx.error(anno, index, "it has no 'bbox' or no 'bbox_mode'",
                        "Give every annotation a box (COCO: 'bbox' as [x, y, w, h]).")
    mode = BoxMode(anno["bbox_mode"])
    if mode == BoxMode.XYWHA_ABS:
        return None  # left to the rotated-box pipeline
    if mode in (BoxMode.XYXY_REL, BoxMode.XYWH_REL):
        raise ctx.error(anno, index, f"bbox_mode {mode.name} (relative) is not supported",
                        "Convert boxes to absolute pixels (XYWH_ABS or XYXY_ABS).")
    try:
        box = np.asarray(anno["bbox"], dtype=np.float64)
    except (TypeError, ValueError):
        box = np.empty(0)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise ctx.error(anno, index, f"bbox {anno['bbox']!r} is not 4 finite numbers",
                        "Fix or remove this annotation.")
    return mode, box


def _as_xyxy(boxes: List[Optional[Tuple[BoxMode, np.ndarray]]]) -> np.ndarray:
    """(N, 4) float64 XYXY_ABS boxes (one ``BoxMode.convert`` per mode); NaN rows for None."""
    out = np.full((len(boxes), 4), np.nan)
    for mode in {b[0] for b in boxes if b is not None}:
        rows = [i for i, b in enumerate(boxes) if b is not None and b[0] == mode]
        out[rows] = BoxMode.convert(np.stack([boxes[i][1] for i in rows]), mode, BoxMode.XYXY_ABS)
    return out


def _clean_box(anno, mode, xyxy, width, height, counts):
    """Returns the annotation (maybe a clipped copy) or None to drop it."""
    if xyxy[2] - xyxy[0] < -BOX_EPS or xyxy[3] - xyxy[1] < -BOX_EPS:
        counts["negative_size_boxes"] += 1
        return None
    if xyxy[2] - xyxy[0] <= BOX_EPS or xyxy[3] - xyxy[1] <= BOX_EPS:
        counts["zero_area_boxes"] += 1
        return None
    clipped = np.clip(xyxy, 0.0, [width, height, width, height])
    if clipped[2] - clipped[0] <= BOX_EPS or clipped[3] - clipped[1] <= BOX_EPS:
        counts["boxes_outside"] += 1
        return None
    if not np.array_equal(clipped, xyxy):
        counts["boxes_clipped"] += 1
        box = BoxMode.convert(clipped[None], BoxMode.XYXY_ABS, mode)[0]
        anno = dict(anno, bbox=box.tolist())
    return anno


def _clean_polygons(anno, index, ctx, width, height, counts):
    kept, changed = [], False
    for poly in anno["segmentation"]:
        coords = np.empty(0)
        if isinstance(poly, (list, tuple, np.ndarray)):
            try:
                coords = np.asarray(poly, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                coords = np.array([np.nan])
        if not isinstance(poly, (list, tuple, np.ndarray)) or not np.isfinite(coords).all():
            raise ctx.error(anno, index,
                            "a polygon is not a list of finite numbers [x0, y0, x1, y1, ...]",
                            "Fix or remove this annotation (polygons: [[x0, y0, ...], ...]).")
        if is_short_polygon(coords):
            counts["short_polygons"] += 1
            changed = True
            continue
        xs, ys = coords[0::2], coords[1::2]
        if polygon_area(xs, ys) <= 0:
            counts["zero_area_polygons"] += 1
            changed = True
            continue
        if xs.min() < 0 or ys.min() < 0 or xs.max() > width or ys.max() > height:
            changed = True
            parts = clip_polygon_to_image(coords, width, height)
            if not parts:
                counts["polygons_outside"] += 1
                continue
            counts["polygons_clipped"] += 1
            kept.extend(parts)
        else:
            kept.append(poly)
    if not kept:
        counts["no_polygon_left"] += 1
        return None
    return dict(anno, segmentation=kept) if changed else anno


def rle_counts(counts) -> Optional[List[int]]:
    """
    The run lengths of a COCO RLE ``counts``: a list as given, or decoded from pycocotools'
    compressed string (its ``rleFrString``, vectorised); None when it is neither. Decoding is
    done here, not by pycocotools, because older pycocotools write ``sum(counts)`` pixels into
    the image-sized buffer without a bound check, and ``area`` trusts the counts.
    """
    if isinstance(counts, list):
        return counts if all(isinstance(c, numbers.Integral) for c in counts) else None
    if isinstance(counts, str):
        counts = counts.encode("ascii", errors="replace")
    if not isinstance(counts, bytes):
        return None
    chars = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return []
    if chars.min() < 0 or chars.max() > 63 or chars[-1] & 0x20:
        return None  # not an RLE character, or the string ends inside a number
    ends = np.flatnonzero((chars & 0x20) == 0)  # the last character of each number
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 12:  # 60 bits: no image has such a run
        return None
    shifts = 5 * (np.arange(chars.size) - np.repeat(starts, lengths))
    values = np.add.reduceat((chars & 0x1F) << shifts, starts)
    negative = (chars[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * lengths[negative])
    runs = values.copy()  # run i > 2 is stored as the difference to run i - 2
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    return runs.tolist()


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
        runs = rle_counts(segm["counts"])
        if runs is None or any(c < 0 for c in runs) or sum(runs) != height * width:
            covered = "cannot be read" if runs is None else (
                f"cover {sum(runs)} pixels" if min(runs, default=0) >= 0
                else "include negative runs")
            raise ctx.error(
                anno, index,
                f"its RLE counts {covered}, but a {height}x{width} image has {height * width}",
                "Re-encode the mask (pycocotools.mask.encode) at the image size.")
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
        record: a detectron2 dataset dict with ``height``, ``width`` and ``annotations`` (each with
            ``bbox``, ``bbox_mode``, ``category_id``, optional ``segmentation`` and ``id``); it is
            not modified.
        dataset_name: used in error messages (None: not known).
        class_names: the dataset's ``thing_classes``; None skips the category check.
        counts: a Counter that receives what was dropped or repaired (keys of
            ``ANNOTATION_COUNT_LABELS``).
    Returns:
        The annotations to keep: the input dicts, or repaired copies.
    Raises:
        BadAnnotationError: naming the file and annotation, for what cannot be repaired.
    """
    counts = Counter() if counts is None else counts
    ctx = _Context(dataset_name, record)
    height, width = int(record["height"]), int(record["width"])
    annotations = record.get("annotations", [])
    boxes = []
    for index, anno in enumerate(annotations):
        _check_category(anno, index, ctx, class_names)
        boxes.append(_checked_box(anno, index, ctx))
    kept = []
    for index, (anno, box, xyxy) in enumerate(zip(annotations, boxes, _as_xyxy(boxes))):
        if box is not None:
            anno = _clean_box(anno, box[0], xyxy, width, height, counts)
        segm = anno.get("segmentation") if anno is not None else None
        if anno is not None and segm is not None and not (isinstance(segm, list) and not segm):
            if isinstance(segm, list):
                anno = _clean_polygons(anno, index, ctx, width, height, counts)
            else:
                anno = _clean_mask(anno, index, ctx, width, height, counts)
        if anno is not None:
            kept.append(anno)
    return kept
