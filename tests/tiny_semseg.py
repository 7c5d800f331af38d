"""
Tiny semantic segmentation trees in the layouts detectron2's built-in names expect:

- ADE20K (``write_tiny_ade20k``)::

    root/ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_0000000{k}.jpg
    root/ADEChallengeData2016/annotations_detectron2/{training,validation}/<same stem>.png

  label maps of 150 classes (0..149) and 255 = ignore, as detectron2's
  datasets/prepare_ade20k_sem_seg.py writes them; each image paints its classes in flat colours.
- Cityscapes semantic (``add_label_train_ids``): the tiny Cityscapes tree of tiny_cityscapes.py
  plus ``*_gtFine_labelTrainIds.png``, rendered by cityscapesscripts as its
  createTrainIdLabelImgs does.
"""
import glob
import os

import numpy as np
from PIL import Image

ADE_SPLITS = {"train": "training", "val": "validation"}


def ade20k_label_map(index: int, height: int, width: int) -> np.ndarray:
    """Four vertical bands of classes (index * 7 + k) % 150, a 255 (ignore) square in a corner."""
    label = np.zeros((height, width), dtype=np.uint8)
    for k in range(4):
        label[:, k * width // 4:(k + 1) * width // 4] = (index * 7 + k * 37) % 150
    label[: height // 4, : width // 4] = 255
    return label


def write_tiny_ade20k(root: str, num_train: int = 4, num_val: int = 2, height: int = 64,
                      width: int = 80) -> str:
    """Write the ADE20K tree under ``root`` (= what $DETECTRON2_DATASETS points at); returns it."""
    rng = np.random.default_rng(0)
    for split, count in (("train", num_train), ("val", num_val)):
        folder = ADE_SPLITS[split]
        image_dir = os.path.join(root, "ADEChallengeData2016", "images", folder)
        label_dir = os.path.join(root, "ADEChallengeData2016", "annotations_detectron2", folder)
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(label_dir, exist_ok=True)
        for i in range(count):
            stem = f"ADE_{split}_{i + 1:08d}"
            label = ade20k_label_map(i, height, width)
            palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
            pixels = palette[label] // 2 + rng.integers(0, 64, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(image_dir, stem + ".jpg"), quality=95)
            Image.fromarray(label).save(os.path.join(label_dir, stem + ".png"))
    return root


def add_label_train_ids(cityscapes_root: str) -> None:
    """Render ``*_gtFine_labelTrainIds.png`` next to every polygons file (cityscapesscripts)."""
    from cityscapesscripts.preparation.json2labelImg import json2labelImg

    for polygons in glob.glob(os.path.join(cityscapes_root, "gtFine", "*", "*",
                                           "*_gtFine_polygons.json")):
        json2labelImg(polygons, polygons.replace("_polygons.json", "_labelTrainIds.png"),
                      "trainIds")
