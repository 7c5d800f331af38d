"""COCO instance segmentation with ViTDet's large-scale jitter (LSJ) at 1024, RGB input."""
import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L

dataloader = model_zoo.get_config("common/data/coco.py").dataloader

dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),
    L(T.ResizeScale)(min_scale=0.1, max_scale=2.0, target_height=1024, target_width=1024),
    L(T.FixedSizeCrop)(crop_size=(1024, 1024), pad=False),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.recompute_boxes = True
dataloader.train.total_batch_size = 64
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=1024, max_size=1024),
]
dataloader.evaluator.tasks = ("bbox", "segm")
