"""
The embedded shapes classification dataset: an ImageFolder tree for the classification command
(``hpvit_d2.cli.classify --shapes``), made by the shapes generator.

One shape per image (circle, rectangle, triangle, star: the class is the folder), drawn by the
detection dataset's code (``hpvit_d2.data.shapes``: its textures, polygons and rasteriser) on a
textured background, 20..45% of the image in area, randomly rotated, placed and coloured::

    {root}/shapes-v{SHAPES_VERSION}/classification-v{CLASSIFICATION_VERSION}-{n_train}-{n_val}[-{n_test}]-s{size}-seed{seed}/
        train/{circle,rectangle,triangle,star}/*.png
        val/{circle,rectangle,triangle,star}/*.png
        test/{circle,rectangle,triangle,star}/*.png    (with test_per_class > 0: held out)

Deterministic (image ``i`` of split ``s`` is drawn from ``default_rng([seed, s, i])``), written
once into ``$HPVIT_DATA`` (default ``~/.cache/hpvit_d2``) with a manifest, by a private temporary
directory renamed into place, like the detection splits.
"""
import json
import math
import os
import shutil
import tempfile
from typing import Dict

import numpy as np
from PIL import Image

from .shapes import (
    MANIFEST,
    SHAPE_CLASSES,
    SHAPES_VERSION,
    _is_complete,
    _move_into_place,
    _object_mask,
    _texture,
    _unit_polygon,
    data_root,
)

__all__ = ["CLASSIFICATION_VERSION", "ensure_shapes_classification",
           "generate_shapes_classification"]

CLASSIFICATION_VERSION = 1
_SPLITS = ("train", "val", "test")
_AREA_FRACTION = (0.2, 0.45)


def _draw(rng: np.random.Generator, size: int, category: int) -> np.ndarray:
    """(size, size, 3) uint8: one shape of ``category`` on a textured background."""
    pixels = _texture(rng, size, size, rng.uniform(40, 215, size=3), rng.uniform(20, 45))
    unit = _unit_polygon(SHAPE_CLASSES[category], rng)
    area = rng.uniform(*_AREA_FRACTION) * size * size
    x, y = unit[:, 0], unit[:, 1]
    unit_area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    poly = unit * math.sqrt(area / unit_area)
    extent = (poly.max(0) - poly.min(0)).max()
    if extent > 0.95 * size:
        poly = poly * (0.95 * size / extent)
    lo, hi = poly.min(0), poly.max(0)
    verts = np.round(poly + rng.uniform(-lo + 0.5, size - 0.5 - hi), 2)
    x0, y0, x1, y1, inside = _object_mask(verts, size)
    crop = pixels[y0:y1, x0:x1]
    dark = crop.reshape(-1, 3).mean(0) > 127
    colour = np.where(dark, rng.uniform(0, 90, 3), rng.uniform(165, 255, 3))
    fill = _texture(rng, y1 - y0, x1 - x0, colour, rng.uniform(10, 25))
    pixels[y0:y1, x0:x1] = np.where(inside[..., None], fill, crop)
    pixels += 4 * rng.standard_normal(size=pixels.shape, dtype=np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _write(out_dir: str, counts: Dict[str, int], size: int, seed: int) -> Dict[str, int]:
    files = {}
    for s, split in enumerate(_SPLITS):
        for i in range(counts[split] * len(SHAPE_CLASSES)):
            category = i % len(SHAPE_CLASSES)
            name = SHAPE_CLASSES[category]
            rel = os.path.join(split, name, f"{name}_{i // len(SHAPE_CLASSES):05d}.png")
            os.makedirs(os.path.dirname(os.path.join(out_dir, rel)), exist_ok=True)
            pixels = _draw(np.random.default_rng([seed, s, i]), size, category)
            Image.fromarray(pixels).save(os.path.join(out_dir, rel))
            files[rel] = os.path.getsize(os.path.join(out_dir, rel))
    return files


def generate_shapes_classification(root: str, train_per_class: int = 100,
                                   val_per_class: int = 25, image_size: int = 64,
                                   seed: int = 0, test_per_class: int = 0) -> str:
    """
    Write (unless already complete) the ImageFolder tree under ``root`` and return its directory
    (holding ``train/``, ``val/`` and, with ``test_per_class``, ``test/``). The same arguments give
    byte-equal files; adding a test split leaves the train and val images as they were.
    """
    if min(train_per_class, val_per_class) < 1 or image_size < 16:
        raise ValueError("generate_shapes_classification: at least one image per class and split, "
                         f"and image_size >= 16 (got {train_per_class}, {val_per_class}, "
                         f"{image_size})")
    test = f"-{test_per_class}" if test_per_class else ""
    name = (f"classification-v{CLASSIFICATION_VERSION}-{train_per_class}-{val_per_class}{test}"
            f"-s{image_size}-seed{seed}")
    final = os.path.join(root, f"shapes-v{SHAPES_VERSION}", name)
    header = {"classification_version": CLASSIFICATION_VERSION, "train_per_class": train_per_class,
              "val_per_class": val_per_class, "test_per_class": test_per_class,
              "image_size": image_size, "seed": seed,
              "classes": list(SHAPE_CLASSES)}
    num_files = (train_per_class + val_per_class + test_per_class) * len(SHAPE_CLASSES)
    if _is_complete(final, header, num_files=num_files):
        return final
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        out = os.path.join(tmp, "tree")
        os.makedirs(out)
        counts = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
        files = _write(out, counts, image_size, seed)
        with open(os.path.join(out, MANIFEST), "w") as f:
            json.dump(dict(header, files=files), f)
        _move_into_place(out, final, header, parent, num_files=num_files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_shapes_classification(**kwargs) -> str:
    """:func:`generate_shapes_classification` under ``$HPVIT_DATA`` (default ``~/.cache/hpvit_d2``)."""
    return generate_shapes_classification(data_root(), **kwargs)
