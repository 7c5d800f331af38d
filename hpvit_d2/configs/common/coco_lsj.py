"""
COCO 2017 instance segmentation with ViTDet's large-scale jitter (LSJ) at 1024, RGB input.
Datasets are loaded by hpvit_d2.data.build.get_dataset_dicts (clear errors for a missing or broken
dataset under $DETECTRON2_DATASETS); evaluated with COCOEvaluator, box and mask AP.
"""
import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L

from hpvit_d2.data.build import get_dataset_dicts
from hpvit_d2.data.mapper import SafeDatasetMapper

dataloader = model_zoo.get_config("common/data/coco.py").dataloader

dataloader.train.dataset = L(get_dataset_dicts)(
    names="coco_2017_train", require_masks="${..mapper.use_instance_mask}"
)
dataloader.test.dataset = L(get_dataset_dicts)(names="coco_2017_val", filter_empty=False)
dataloader.train.mapper._target_ = SafeDatasetMapper
dataloader.test.mapper._target_ = SafeDatasetMapper

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
