"""
Checks of a registered dataset's COCO json file itself, which two readers use besides the
dataset dicts: detectron2's ``load_coco_json`` (through pycocotools' ``COCO``) for training and
evaluation images, and ``COCOEvaluator`` (pycocotools again) for the ground truth it scores
against. Called once per dataset by ``hpvit_d2.data.build.load_dataset``; the json is read once
per file (``hpvit_d2.data.coco_file``: cached by path, size and modification time, and shared
with ``register_coco_json``).

- Duplicate image ids -> :class:`~hpvit_d2.data.datasets.DatasetFormatError` naming the json, the
  id and both file names.
- Annotations on image ids that are not in ``images`` (pycocotools leaves them out) -> one
  warning with their count and the first. pycocotools indexes images by id, so the loader would keep only the
  last image of an id and train the annotations of both on it, without a word.
- Polygons pycocotools cannot read (fewer than 3 points, or an odd number of coordinates): the
  training side drops them (``hpvit_d2.data.annotations``, same rule: :func:`is_short_polygon`),
  but ``COCOEvaluator`` reads the raw json and crashes on them after training (a 4-number polygon
  is taken for a box, a 2-number one is refused). So evaluation drops them too: a copy of the
  json without them (and without the annotations left with no polygon, as training drops those)
  is written under ``tempfile.gettempdir()/hpvit_d2_eval_gt/`` and the dataset's metadata
  ``json_file`` points to it (``source_json_file`` keeps the original). One warning names both.
"""
import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from typing import List, Tuple

from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata

from .annotations import is_short_polygon
from .coco_file import read_json_object, scan_coco_json
from .datasets import DatasetFormatError

__all__ = ["EVAL_GT_DIR", "check_coco_json"]

logger = logging.getLogger(__name__)

EVAL_GT_DIR = os.path.join(tempfile.gettempdir(), "hpvit_d2_eval_gt")
"""Where the evaluation copies of jsons with unreadable polygons are written."""

def _evaluation_copy(json_file: str, data: dict, short: List[int]) -> Tuple[str, Counter]:
    """Write ``data`` without its short polygons (and the annotations left with none)."""
    counts: Counter = Counter()
    annotations = data["annotations"]
    for i in short:
        ann = annotations[i]
        kept = [p for p in ann["segmentation"] if not (isinstance(p, list) and is_short_polygon(p))]
        counts["short_polygons"] += len(ann["segmentation"]) - len(kept)
        if kept:
            annotations[i] = dict(ann, segmentation=kept)
        else:
            annotations[i] = None
            counts["no_polygon_left"] += 1
    data = dict(data, annotations=[a for a in annotations if a is not None])
    digest = hashlib.sha1(os.path.abspath(json_file).encode()).hexdigest()[:10]
    stem = os.path.splitext(os.path.basename(json_file))[0]
    os.makedirs(EVAL_GT_DIR, exist_ok=True)
    path = os.path.join(EVAL_GT_DIR, f"{stem}-{digest}-{os.stat(json_file).st_mtime_ns}.json")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)  # atomic: several processes may write the same copy
    return path, counts


def _point_metadata_to(name: str, json_file: str) -> bool:
    """Re-register ``name``'s metadata with ``json_file`` (plain Metadata only); True if done."""
    meta = MetadataCatalog.get(name)
    if type(meta) is not Metadata:  # e.g. the shapes splits' metadata computes its paths
        return False
    fields = {k: v for k, v in meta.as_dict().items() if k != "name"}
    fields.setdefault("source_json_file", fields["json_file"])
    fields["json_file"] = json_file
    MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(**fields)
    return True


def check_coco_json(name: str) -> None:
    """
    Check the COCO json of registered dataset ``name`` (metadata ``json_file``); see the module
    docstring. Datasets without a json file, and unreadable files (reported by the loader), pass.

    Raises:
        DatasetFormatError: two images of the json share an id (names the json, the id, both
            file names and the fix).
    """
    json_file = MetadataCatalog.get(name).get("json_file", None)
    if not json_file:
        return
    scan = scan_coco_json(json_file)
    if scan is None:
        return
    if scan.duplicate is not None:
        image_id, first, second = scan.duplicate
        raise DatasetFormatError(
            f"duplicate image id {image_id!r} in {json_file}: images '{first}' and '{second}' "
            "share it, so detectron2 would silently drop the first and train the annotations "
            "of both on the second. Give each image its own id (and fix its annotations' "
            "image_id).")
    if scan.orphans:
        annotation_id, image_id = scan.first_orphan
        logger.warning(
            f"Dataset '{name}': {json_file} has {scan.orphans} annotation(s) on image ids not in "
            f"'images' (first: annotation id {annotation_id}, image_id {image_id!r}): not "
            "trained on nor evaluated")
    if not scan.short:
        return
    data, problem = read_json_object(json_file)  # the evaluation copy needs all of it (rare)
    if problem:
        return
    path, counts = _evaluation_copy(json_file, data, scan.short)
    if _point_metadata_to(name, path):
        logger.warning(
            f"Dataset '{name}': {json_file} has {counts['short_polygons']} polygon(s) with < 3 "
            f"points ({counts['no_polygon_left']} annotation(s) left without any), which "
            "training drops and pycocotools cannot evaluate: COCOEvaluator reads a copy without "
            f"them, {path}.")
