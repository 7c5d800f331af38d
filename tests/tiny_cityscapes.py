"""
Writes a tiny Cityscapes tree in the official on-disk format, for dataset and evaluation tests:

    root/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    root/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_polygons.json
    root/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png   (by cityscapesscripts)
    root/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png      (by cityscapesscripts)

The polygons are written first; the two PNGs are rendered from them by cityscapesscripts
(``createInstanceImage``, ``json2labelImg``), as the official dataset preparation does.
"""

import json
import os

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 320, 160

# Per image: (label, polygon). Drawn in order, later ones on top. Instances do not overlap each
# other; "road" (stuff) lies under them and "cargroup" is a crowd region.
_FRAMES = [
    [
        ("road", [[0, 110], [319, 110], [319, 159], [0, 159]]),
        ("car", [[20, 60], [110, 60], [110, 120], [20, 120]]),
        ("person", [[150, 30], [185, 30], [195, 80], [185, 130], [150, 130], [140, 80]]),
        ("cargroup", [[230, 70], [310, 70], [310, 120], [230, 120]]),
    ],
    [
        ("road", [[0, 100], [319, 100], [319, 159], [0, 159]]),
        ("bicycle", [[30, 40], [100, 40], [100, 110], [30, 110]]),
        ("car", [[130, 50], [230, 50], [230, 130], [130, 130]]),
        ("rider", [[250, 20], [300, 20], [300, 100], [250, 100]]),
    ],
    [
        ("sky", [[0, 0], [319, 0], [319, 30], [0, 30]]),
        ("truck", [[10, 35], [120, 35], [120, 140], [10, 140]]),
        ("car", [[140, 60], [210, 60], [225, 90], [210, 130], [140, 130]]),
        ("person", [[250, 40], [290, 40], [290, 140], [250, 140]]),
    ],
]

_COLORS = {
    "car": (0, 0, 142),
    "person": (220, 20, 60),
    "rider": (255, 0, 0),
    "truck": (0, 0, 70),
    "bicycle": (119, 11, 32),
    "road": (128, 64, 128),
    "sky": (70, 130, 180),
    "cargroup": (0, 0, 142),
}


def frame_stem(city: str, index: int) -> str:
    """``{city}_{seq}_{frame}``, the Cityscapes naming that cityscapesscripts parses."""
    return f"{city}_{index:06d}_{19 + index:06d}"


def write_tiny_cityscapes(
    root: str, splits=("train", "val"), city: str = "frankfurt", seed: int = 0
) -> str:
    """Write the tree for ``splits`` (3 images each, 320x160) under ``root``; returns ``root``."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
    from cityscapesscripts.preparation.json2labelImg import json2labelImg

    rng = np.random.default_rng(seed)
    for split in splits:
        image_dir = os.path.join(root, "leftImg8bit", split, city)
        gt_dir = os.path.join(root, "gtFine", split, city)
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(gt_dir, exist_ok=True)
        for index, objects in enumerate(_FRAMES):
            stem = frame_stem(city, index)
            pixels = Image.fromarray(rng.integers(0, 60, (HEIGHT, WIDTH, 3), dtype=np.uint8))
            draw = ImageDraw.Draw(pixels)
            for label, polygon in objects:
                draw.polygon([tuple(p) for p in polygon], fill=_COLORS[label])
            pixels.save(os.path.join(image_dir, f"{stem}_leftImg8bit.png"))

            polygons = os.path.join(gt_dir, f"{stem}_gtFine_polygons.json")
            with open(polygons, "w") as f:
                json.dump(
                    {
                        "imgHeight": HEIGHT,
                        "imgWidth": WIDTH,
                        "objects": [
                            {"label": label, "polygon": polygon} for label, polygon in objects
                        ],
                    },
                    f,
                )
            annotation = Annotation()
            annotation.fromJsonFile(polygons)
            # 16-bit PNG as in the released dataset (Pillow >= 12 cannot write json2instanceImg's
            # 32-bit "I" image as PNG, so the rendering is cityscapesscripts', the saving ours).
            ids = np.asarray(createInstanceImage(annotation, "ids"), dtype=np.uint16)
            Image.fromarray(ids).save(os.path.join(gt_dir, f"{stem}_gtFine_instanceIds.png"))
            json2labelImg(polygons, os.path.join(gt_dir, f"{stem}_gtFine_labelIds.png"), "ids")
    return root
