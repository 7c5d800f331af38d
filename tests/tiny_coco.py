"""Writes a tiny COCO-format instance-segmentation dataset (rectangles on noise) for engine tests."""
import json
import os

import numpy as np
from PIL import Image


def write_tiny_coco(root: str, num_images: int = 8, size: int = 64, seed: int = 0) -> str:
    """Images in ``root/images``, annotations in ``root/instances.json``; returns the json path."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        pixels = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
        for j in range(1 + i % 2):
            w, h = (int(v) for v in rng.integers(size // 4, size // 2, size=2))
            x, y = (int(v) for v in rng.integers(0, size - max(w, h), size=2))
            category = 1 + (i + j) % 2
            pixels[y:y + h, x:x + w] = (200, 60, 60) if category == 1 else (60, 200, 60)
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": category,
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            })
        name = f"{i:04d}.png"
        Image.fromarray(pixels).save(os.path.join(root, "images", name))
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
    path = os.path.join(root, "instances.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}, f)
    return path
