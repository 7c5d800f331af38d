"""
Semantic label maps of the embedded shapes dataset (``hpvit_d2.data.shapes``), for the CPU-sized
semantic segmentation configs.

Classes: ``SEM_SEG_CLASSES`` = background (0) and the four shapes, each at its COCO category id
(circle 1, rectangle 2, triangle 3, star 4): every pixel is labelled, background included, so the
mIoU averages 5 classes and a model cannot score by predicting shapes everywhere. The ignore value
(255) is not used by the generator.

The label maps are a pure function of a split's ``instances.json``: each polygon is rasterised by
the same code that drew it into the image (``shapes._object_mask``), so labels and pixels agree
exactly. They are written next to the instance split, in their own directory
(``shapes-v{SHAPES_VERSION}/{split dir}.sem_seg-v{LABELS_VERSION}/labels/*.png``, 8-bit PNG, one
per image, same stem) with their own manifest, which records the sha256 of the json they come
from. The instance split's files are not touched: adding the labels changed no byte of the
detection data and did not bump ``SHAPES_VERSION``.

Splits (``SHAPES_SEM_SEG_SPLITS``, registered by ``hpvit_d2.data.builtin``): the images of
``hpvit_shapes_{train,val,test,train_mini,val_mini}`` as ``hpvit_shapes_sem_seg_{...}``.
"""
import hashlib
import json
import logging
import os
import shutil
import tempfile
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

from .shapes import (
    IMAGE_DIR,
    MANIFEST,
    SHAPE_CLASSES,
    SHAPES_VERSION,
    _is_complete,
    _move_into_place,
    _object_mask,
    ensure_shapes_split,
)

__all__ = [
    "LABEL_DIR",
    "LABELS_VERSION",
    "SEM_SEG_CLASSES",
    "SEM_SEG_IGNORE_VALUE",
    "SHAPES_SEM_SEG_SPLITS",
    "ensure_shapes_sem_seg_split",
    "generate_shapes_labels",
    "load_shapes_sem_seg",
    "render_label_map",
]

logger = logging.getLogger(__name__)

LABELS_VERSION = 1
LABEL_DIR = "labels"
SEM_SEG_CLASSES = ("background",) + tuple(SHAPE_CLASSES)
SEM_SEG_IGNORE_VALUE = 255

SHAPES_SEM_SEG_SPLITS: Dict[str, str] = {
    f"hpvit_shapes_sem_seg_{part}": f"hpvit_shapes_{part}"
    for part in ("train", "val", "test", "train_mini", "val_mini")
}
"""Semantic split name -> the instance split whose images (and polygons) it uses."""


def render_label_map(annotations: List[dict], height: int, width: int) -> np.ndarray:
    """
    (height, width) uint8 label map: 0 background, each annotation's polygon filled with its
    ``category_id`` (COCO ids 1..4 = ``SEM_SEG_CLASSES`` indices), in order.
    """
    if height != width:
        raise ValueError(f"shapes images are square, got {width}x{height}")
    label = np.zeros((height, width), dtype=np.uint8)
    for ann in annotations:
        for polygon in ann["segmentation"]:
            verts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
            x0, y0, x1, y1, inside = _object_mask(verts, width)
            label[y0:y1, x0:x1][inside] = ann["category_id"]
    return label


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _write_labels(out_dir: str, coco: dict) -> Dict[str, int]:
    """Write one PNG per image of ``coco`` into ``out_dir/labels``; returns {relative path: size}."""
    os.makedirs(os.path.join(out_dir, LABEL_DIR))
    by_image: Dict[int, List[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    files = {}
    for image in coco["images"]:
        label = render_label_map(by_image.get(image["id"], []), image["height"], image["width"])
        rel = os.path.join(LABEL_DIR, os.path.splitext(image["file_name"])[0] + ".png")
        Image.fromarray(label, mode="L").save(os.path.join(out_dir, rel))
        files[rel] = os.path.getsize(os.path.join(out_dir, rel))
    return files


def generate_shapes_labels(json_file: str) -> str:
    """
    Write (unless already complete) the label maps of the shapes split whose ``instances.json``
    is ``json_file``; return their directory. Safe against concurrent callers, as the images.
    """
    split_dir = os.path.dirname(os.path.abspath(json_file))
    final = f"{split_dir}.sem_seg-v{LABELS_VERSION}"
    with open(json_file) as f:
        coco = json.load(f)
    header = {"labels_version": LABELS_VERSION, "shapes_version": SHAPES_VERSION,
              "num_images": len(coco["images"]), "source_sha256": _sha256(json_file)}
    num = len(coco["images"])
    if _is_complete(final, header, num_files=num):
        return os.path.join(final, LABEL_DIR)
    parent = os.path.dirname(final)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.tmp-", dir=parent)
    logger.info("Writing %d shapes label maps to %s", num, final)
    try:
        out = os.path.join(tmp, "labels")
        files = _write_labels(out, coco)
        with open(os.path.join(out, MANIFEST), "w") as f:
            json.dump(dict(header, files=files), f)
        _move_into_place(out, final, header, parent, num_files=num)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(final, LABEL_DIR)


def ensure_shapes_sem_seg_split(name: str) -> Tuple[str, str]:
    """(image directory, label directory) of semantic split ``name``, generated if needed."""
    if name not in SHAPES_SEM_SEG_SPLITS:
        raise KeyError(f"{name!r} is not a shapes semantic split; registered: "
                       f"{sorted(SHAPES_SEM_SEG_SPLITS)}")
    json_file = ensure_shapes_split(SHAPES_SEM_SEG_SPLITS[name])
    return os.path.join(os.path.dirname(json_file), IMAGE_DIR), generate_shapes_labels(json_file)


def load_shapes_sem_seg(name: str) -> List[dict]:
    """detectron2 dataset dicts of semantic split ``name``: ``file_name``, ``sem_seg_file_name``,
    ``height``, ``width``, ``image_id``."""
    json_file = ensure_shapes_split(SHAPES_SEM_SEG_SPLITS[name])
    image_dir, label_dir = ensure_shapes_sem_seg_split(name)
    with open(json_file) as f:
        images = json.load(f)["images"]
    return [{"file_name": os.path.join(image_dir, im["file_name"]),
             "sem_seg_file_name": os.path.join(label_dir,
                                               os.path.splitext(im["file_name"])[0] + ".png"),
             "height": im["height"], "width": im["width"], "image_id": im["id"]}
            for im in images]

