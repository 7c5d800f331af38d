"""
The embedded shapes dataset: a small, deterministic COCO-format instance-segmentation dataset.

256x256 RGB images with textured backgrounds and non-overlapping circles, rectangles, triangles
and stars (4 classes, the class is the shape, the colour is random), small, medium and large in
COCO's sense (area < 32^2, < 96^2, larger), each annotated with its polygon mask, box and area.

``SHAPES_SPLITS`` names the splits that ``hpvit_d2.data.builtin.register_all_shapes`` registers
in detectron2's DatasetCatalog and MetadataCatalog (done when ``hpvit_d2.data`` is imported; this
module itself registers nothing):

    name                      images  seed
    hpvit_shapes_train           600     0
    hpvit_shapes_val             100     1
    hpvit_shapes_test            500     2   (held out: only the lab's verdicts read it)
    hpvit_shapes_train_mini       16     0   (for tests and smoke runs)
    hpvit_shapes_val_mini          4     1

The images are generated on first use (a few seconds) into ``$HPVIT_DATA`` (default
``~/.cache/hpvit_d2``), read at the time of use, so a test may point it at a tmp dir after import.
Generation is safe when processes race (each writes a private temporary directory, then renames it
into place) and a split whose files are incomplete, changed or of an older generator version is
regenerated.
"""
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from detectron2.structures.masks import polygon_area
from PIL import Image, ImageDraw

__all__ = [
    "IMAGE_DIR",
    "SHAPE_CLASSES",
    "SHAPES_SPLITS",
    "SHAPES_VERSION",
    "ShapesSplit",
    "data_root",
    "ensure_shapes_split",
    "generate_shapes_dataset",
]

logger = logging.getLogger(__name__)

SHAPES_VERSION = 4
SHAPE_CLASSES = ("circle", "rectangle", "triangle", "star")
MANIFEST = "manifest.json"
ANNOTATIONS = "instances.json"
IMAGE_DIR = "images"
"""Directory of a split's images, next to its ``instances.json``."""

# Object areas (pixels at 256x256) by COCO area range (small < 32^2 <= medium < 96^2 <= large),
# how often each is drawn, and the largest extent of an object (fraction of the image side).
_AREA_RANGES = {"small": (120, 900), "medium": (1300, 8000), "large": (10000, 18000)}
_KIND_ODDS = {"small": 0.4, "medium": 0.42, "large": 0.18}
_MAX_EXTENT = 0.9
_OBJECTS_PER_IMAGE = (3, 8)


@dataclass(frozen=True)
class ShapesSplit:
    """One registered split: how many images, from which seed."""

    split: str
    num_images: int
    seed: int
    image_size: int = 256


SHAPES_SPLITS: Dict[str, ShapesSplit] = {
    "hpvit_shapes_train": ShapesSplit("train", 600, seed=0),
    "hpvit_shapes_val": ShapesSplit("val", 100, seed=1),
    # The held-out test split: its own generator seed; no recipe, pooling or checkpoint is
    # chosen on it (the lab's verdicts only).
    "hpvit_shapes_test": ShapesSplit("test", 500, seed=2),
    "hpvit_shapes_train_mini": ShapesSplit("train", 16, seed=0),
    "hpvit_shapes_val_mini": ShapesSplit("val", 4, seed=1),
}


def data_root() -> str:
    """``$HPVIT_DATA`` if set, else ``~/.cache/hpvit_d2``."""
    return os.path.expanduser(os.environ.get("HPVIT_DATA") or "~/.cache/hpvit_d2")


def _split_dir(root: str, split: str, num_images: int, image_size: int, seed: int) -> str:
    name = f"{split}-n{num_images}-s{image_size}-seed{seed}"
    return os.path.join(root, f"shapes-v{SHAPES_VERSION}", name)


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------


def _texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray,
             contrast: float) -> np.ndarray:
    """(h, w, 3) float texture around colour ``base``: a smooth blotch field plus stripes."""
    grid = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    blotches = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), np.float32)
    angle, period, weight = rng.uniform(0, math.pi), rng.uniform(6, 40), rng.uniform(0, 0.6)
    phase = (np.arange(w, dtype=np.float32)[None, :] * math.cos(angle)
             + np.arange(h, dtype=np.float32)[:, None] * math.sin(angle)) * (2 * math.pi / period)
    field = 0.7 * (blotches / 127.5 - 1) + weight * np.sin(phase)[..., None]
    return base.astype(np.float32) + contrast * field


def _unit_polygon(shape: str, rng: np.random.Generator) -> np.ndarray:
    """(K, 2) vertices of a randomly rotated ``shape`` inscribed in the unit circle."""
    theta = rng.uniform(0, 2 * math.pi)
    if shape == "circle":
        angles = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        radii = np.ones(32)
    elif shape == "rectangle":
        aspect = rng.uniform(0.45, 1.0)
        alpha = math.atan(aspect)  # corners at +-alpha, pi +- alpha on the unit circle
        angles = theta + np.array([alpha, math.pi - alpha, math.pi + alpha, -alpha])
        radii = np.ones(4)
    elif shape == "triangle":
        angles = theta + np.arange(3) * (2 * math.pi / 3) + rng.uniform(-0.25, 0.25, size=3)
        radii = np.ones(3)
    elif shape == "star":
        angles = theta + np.arange(10) * (math.pi / 5)
        radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.42, 0.55))
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPE_CLASSES}")
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _sample_object(rng: np.random.Generator, size: int, kind: str) -> Tuple[int, np.ndarray]:
    """A class index and its polygon (K, 2) centred at the origin, with an area of size ``kind``."""
    category = int(rng.integers(len(SHAPE_CLASSES)))
    unit = _unit_polygon(SHAPE_CLASSES[category], rng)
    area = rng.uniform(*_AREA_RANGES[kind]) * (size / 256) ** 2
    poly = unit * math.sqrt(area / polygon_area(unit[:, 0], unit[:, 1]))
    extent = (poly.max(0) - poly.min(0)).max()
    if extent > _MAX_EXTENT * size:
        poly = poly * (_MAX_EXTENT * size / extent)
    return category, poly


def _object_mask(verts: np.ndarray, size: int) -> Tuple[int, int, int, int, np.ndarray]:
    """
    The pixels of polygon ``verts`` (K, 2) as the images show it: its box ``x0, y0, x1, y1``
    (clipped to the ``size`` x ``size`` image) and a (y1 - y0, x1 - x0) bool mask. The one
    rasteriser of both the images and the semantic label maps (``shapes_semseg``).
    """
    x0, y0 = (int(v) for v in np.floor(verts.min(0)))
    x1, y1 = (min(int(v) + 1, size) for v in np.ceil(verts.max(0)))
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in verts], fill=255)
    return x0, y0, x1, y1, np.asarray(mask) > 0


def _draw_image(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, List[dict]]:
    """One image: (size, size, 3) uint8 and its objects (class index, flat polygon, box, area)."""
    pixels = _texture(rng, size, size, rng.uniform(40, 215, size=3), rng.uniform(20, 45))
    num = int(rng.integers(_OBJECTS_PER_IMAGE[0], _OBJECTS_PER_IMAGE[1] + 1))
    kinds = list(rng.choice(list(_KIND_ODDS), size=num, p=list(_KIND_ODDS.values())))
    if kinds.count("large") > 1:  # at most one large object, placed first
        kinds = ["large"] + ["medium" if k == "large" else k for k in kinds[1:]]
    kinds.sort(key=list(_AREA_RANGES).index, reverse=True)
    placed: List[Tuple[float, ...]] = []
    objects = []
    for kind in kinds:
        category, poly = _sample_object(rng, size, kind)
        lo, hi = poly.min(0), poly.max(0)
        for _ in range(20):  # rejection-sample a free spot, keeping a 2-pixel gap
            verts = np.round(poly + rng.uniform(-lo + 0.5, size - 0.5 - hi), 2)
            box = (*(verts.min(0) - 2), *(verts.max(0) + 2))
            if all(box[2] < p[0] or box[0] > p[2] or box[3] < p[1] or box[1] > p[3]
                   for p in placed):
                break
        else:
            continue
        placed.append(box)
        x0, y0, x1, y1, inside = _object_mask(verts, size)
        inside = inside[..., None]
        crop = pixels[y0:y1, x0:x1]
        # A colour far from the local background, textured with its own field.
        dark = crop.reshape(-1, 3).mean(0) > 127
        colour = np.where(dark, rng.uniform(0, 90, 3), rng.uniform(165, 255, 3))
        fill = _texture(rng, y1 - y0, x1 - x0, colour, rng.uniform(10, 25))
        pixels[y0:y1, x0:x1] = np.where(inside, fill, crop)
        (bx0, by0), (bx1, by1) = verts.min(0), verts.max(0)
        objects.append({
            "category": category,
            "segmentation": [[float(v) for v in verts.reshape(-1)]],
            "bbox": [float(bx0), float(by0), float(bx1 - bx0), float(by1 - by0)],
            "area": round(float(polygon_area(verts[:, 0], verts[:, 1])), 2),
        })
    pixels += 4 * rng.standard_normal(size=pixels.shape, dtype=np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8), objects


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def _write_split(out_dir: str, split: str, num_images: int, image_size: int, seed: int) -> None:
    """Write images, ``instances.json`` and, last, ``manifest.json`` into ``out_dir``."""
    os.makedirs(os.path.join(out_dir, IMAGE_DIR))
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        pixels, objects = _draw_image(rng, image_size)
        name = f"{split}_{i:05d}.jpg"
        Image.fromarray(pixels).save(os.path.join(out_dir, IMAGE_DIR, name), quality=92)
        images.append({"id": i + 1, "file_name": name, "width": image_size, "height": image_size})
        for obj in objects:
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": i + 1,
                "category_id": obj["category"] + 1,
                "segmentation": obj["segmentation"],
                "bbox": obj["bbox"],
                "area": obj["area"],
                "iscrowd": 0,
            })
    coco = {
        "info": {"description": f"hpvit_d2 shapes v{SHAPES_VERSION}, {split}, seed {seed}"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"}
                       for k, n in enumerate(SHAPE_CLASSES)],
    }
    with open(os.path.join(out_dir, ANNOTATIONS), "w") as f:
        json.dump(coco, f)
    files = {ANNOTATIONS: os.path.getsize(os.path.join(out_dir, ANNOTATIONS))}
    for img in images:
        rel = os.path.join(IMAGE_DIR, img["file_name"])
        files[rel] = os.path.getsize(os.path.join(out_dir, rel))
    manifest = _manifest_header(split, num_images, image_size, seed)
    manifest["files"] = files
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        json.dump(manifest, f)


def _manifest_header(split: str, num_images: int, image_size: int, seed: int) -> dict:
    return {"version": SHAPES_VERSION, "split": split, "num_images": num_images,
            "image_size": image_size, "seed": seed}


def _is_complete(out_dir: str, header: dict, num_files: Optional[int] = None) -> bool:
    """True if ``out_dir`` holds a manifest equal to ``header`` and every file it lists, intact
    (``num_files`` of them; default: the images and the json)."""
    try:
        with open(os.path.join(out_dir, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or {k: manifest.get(k) for k in header} != header:
        return False
    files = manifest.get("files")
    if num_files is None:
        num_files = header["num_images"] + 1
    if not isinstance(files, dict) or len(files) != num_files:
        return False
    for rel, size in files.items():
        try:
            if os.path.getsize(os.path.join(out_dir, rel)) != size:
                return False
        except OSError:
            return False
    return True


def generate_shapes_dataset(root: str, split: str, num_images: int, image_size: int = 256,
                            seed: int = 0) -> str:
    """
    Generate (unless already complete) one split under ``root`` and return its COCO json path.

    The split lives in ``root/shapes-v{version}/{split}-n{num_images}-s{image_size}-seed{seed}/``
    as ``images/*.jpg`` and ``instances.json``. The same arguments give byte-equal files.
    Safe against concurrent callers: each one writes a private temporary directory that is
    renamed into place; an incomplete or outdated directory is replaced.
    """
    if num_images < 1 or image_size < 64:
        raise ValueError(f"generate_shapes_dataset: num_images must be >= 1 (got {num_images}) "
                         f"and image_size >= 64 (got {image_size})")
    final = _split_dir(root, split, num_images, image_size, seed)
    header = _manifest_header(split, num_images, image_size, seed)
    if _is_complete(final, header):
        return os.path.join(final, ANNOTATIONS)
    parent = os.path.dirname(final)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.tmp-", dir=parent)
    except OSError as e:
        raise OSError(f"cannot write the shapes dataset under {parent!r} ({e}); set HPVIT_DATA "
                      "to a writable directory") from e
    logger.info("Generating shapes dataset %s (%d images) in %s", split, num_images, final)
    try:
        _write_split(os.path.join(tmp, "split"), split, num_images, image_size, seed)
        _move_into_place(os.path.join(tmp, "split"), final, header, parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(final, ANNOTATIONS)


def _move_into_place(src: str, final: str, header: dict, parent: str,
                     num_files: Optional[int] = None) -> None:
    """Rename ``src`` to ``final``; if another process got there first with a complete copy, keep it."""
    for _ in range(3):
        try:
            os.rename(src, final)
            return
        except OSError:
            if _is_complete(final, header, num_files):
                return
        # An incomplete or outdated copy is in the way: move it aside (atomic), then remove it.
        stale = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.stale-", dir=parent)
        try:
            os.rename(final, os.path.join(stale, "old"))
        except OSError:
            pass  # someone else moved it already
        shutil.rmtree(stale, ignore_errors=True)
    if not _is_complete(final, header, num_files):
        raise OSError(f"could not put the shapes dataset in place at {final!r}; remove that "
                      "directory and retry")


# ---------------------------------------------------------------------------------------------
# Registered splits
# ---------------------------------------------------------------------------------------------


def ensure_shapes_split(name: str, root: Optional[str] = None) -> str:
    """Generate the registered split ``name`` if needed; return its json path."""
    if name not in SHAPES_SPLITS:
        raise KeyError(f"{name!r} is not a shapes dataset; registered: {sorted(SHAPES_SPLITS)}")
    s = SHAPES_SPLITS[name]
    return generate_shapes_dataset(root or data_root(), s.split, s.num_images, s.image_size, s.seed)
