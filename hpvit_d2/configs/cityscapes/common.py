"""
What the Cityscapes Mask R-CNN configs share (fine instance segmentation, 8 thing classes,
2975 train / 500 val images of 2048x1024); only `model.backbone` differs between HPViT and ViTDet.

- model: the COCO base (ViTDet's heads, RGB input) with 8 classes.
- dataloader: detectron2's built-in `cityscapes_fine_instance_seg_{train,val}` under
  $DETECTRON2_DATASETS/cityscapes, loaded by hpvit_d2.data.build.get_dataset_dicts. Training is
  multi-scale on the full images (short side 800..1024, long side up to 2048, flip), batch 8;
  testing is at full size (short side 1024).
- evaluator: the official Cityscapes AP and AP50 (cityscapesscripts, key "cityscapes") and
  COCO-style box and mask AP (keys "bbox", "segm") on the same predictions.
- schedule: 24000 iterations at batch 8 (about 65 epochs of 2975 images, detectron2's Cityscapes
  schedule), AdamW lr 1e-4 with layer-wise decay 0.7, steps at the same fractions as the COCO recipe
  (88.9%, 96.3%), 250-iteration warm-up. Not tuned here (no GPU): a starting point.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators

from hpvit_d2.evaluation import CityscapesInstanceEvaluator

from ..common.mask_rcnn_base import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.num_classes = 8

dataloader.train.dataset.names = "cityscapes_fine_instance_seg_train"
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(
        short_edge_length=(800, 832, 864, 896, 928, 960, 992, 1024),
        max_size=2048,
        sample_style="choice",
    ),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.total_batch_size = 8
dataloader.test.dataset.names = "cityscapes_fine_instance_seg_val"
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=1024, max_size=2048),
]
dataloader.evaluator = L(DatasetEvaluators)(
    evaluators=[
        L(COCOEvaluator)(
            dataset_name="${dataloader.test.dataset.names}",
            tasks=("bbox", "segm"),
            output_dir="${train.output_dir}/inference",
        ),
        L(CityscapesInstanceEvaluator)(
            dataset_name="${dataloader.test.dataset.names}",
            output_dir="${train.output_dir}/inference",
        ),
    ]
)

train.max_iter = 24000
train.checkpointer.period = 4000
train.eval_period = 4000

# The COCO recipe's warm-up and step schedule (x0.1 at 88.9%, x0.01 at 96.3%), on 24000 iterations.
lr_multiplier.scheduler.milestones = [21333, 23111]
lr_multiplier.scheduler.num_updates = train.max_iter
lr_multiplier.warmup_length = 250 / train.max_iter
