"""
Writes a tiny COCO instances dataset exercising the format's cases: polygon masks (one with two
parts), compressed and uncompressed RLE masks, a crowd region, an image with no objects, and
non-contiguous category ids. Images are JPEGs in ``root/images``.
"""

import json
import os

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

WIDTH, HEIGHT = 128, 96
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]


def _box_mask(x0, y0, x1, y1):
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def _disc_mask(cx, cy, r):
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.uint8)


def _compressed(mask):
    rle = mask_util.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _uncompressed(mask):
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": [HEIGHT, WIDTH], "counts": counts}


# image index -> [(category id, segmentation, iscrowd)]
def _objects():
    return [
        [
            (1, [[20, 10, 45, 10, 55, 40, 45, 80, 20, 80]], 0),
            (3, _compressed(_box_mask(70, 30, 115, 70)), 0),
        ],
        [
            (18, [[5, 5, 35, 5, 35, 35, 5, 35], [40, 5, 60, 5, 60, 30, 40, 30]], 0),
            (3, _uncompressed(_box_mask(10, 50, 60, 90)), 0),
            (1, _uncompressed(_box_mask(80, 20, 125, 90)), 1),
        ],
        [],
        [(3, [[60, 40, 120, 40, 120, 85, 60, 85]], 0), (1, _compressed(_disc_mask(30, 45, 22)), 0)],
    ]


def _rle(segmentation):
    if isinstance(segmentation, list):
        return mask_util.merge(mask_util.frPyObjects(segmentation, HEIGHT, WIDTH))
    if isinstance(segmentation["counts"], list):
        return mask_util.frPyObjects(segmentation, HEIGHT, WIDTH)
    return {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}


def write_tiny_coco_seg(
    root: str,
    json_name: str = "instances.json",
    image_dir: str = "images",
    all_coco_categories: bool = False,
    seed: int = 0,
) -> str:
    """
    Write 4 images (128x96) and ``root/json_name``; returns the json path. The objects are of
    COCO's person (1), car (3) and dog (18); ``all_coco_categories`` lists COCO's 80 categories,
    as the real instances files do (needed under detectron2's built-in COCO names).
    """
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, image_dir), exist_ok=True)
    images, annotations = [], []
    for index, objects in enumerate(_objects()):
        image_id = 100 + index
        pixels = rng.integers(0, 80, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        for category_id, segmentation, iscrowd in objects:
            rle = _rle(segmentation)
            pixels[mask_util.decode(rle).astype(bool)] = (40 * category_id % 255, 200, 90)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "segmentation": segmentation,
                    "iscrowd": iscrowd,
                    "area": float(mask_util.area(rle)),
                    "bbox": mask_util.toBbox(rle).tolist(),
                }
            )
        file_name = f"{image_id:012d}.jpg"
        Image.fromarray(pixels).save(os.path.join(root, image_dir, file_name), quality=95)
        images.append({"id": image_id, "file_name": file_name, "height": HEIGHT, "width": WIDTH})
    path = os.path.join(root, json_name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        categories = CATEGORIES
        if all_coco_categories:
            from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

            categories = [
                {"id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES if c["isthing"]
            ]
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path
