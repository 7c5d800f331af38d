"""
CPU-sized Mask R-CNN on the embedded shapes dataset (hpvit_d2.data.shapes), shared by the tiny
HPViT and ViTDet configs: 256x256 images, light heads (64-channel pyramid, 2fc box head,
2-conv mask head), a short schedule. The stock tool trains and evaluates it with no override.
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
import detectron2.data.transforms as T
from detectron2.evaluation import COCOEvaluator
from fvcore.common.param_scheduler import MultiStepParamScheduler
from detectron2.solver import WarmupParamScheduler
from omegaconf import OmegaConf

import hpvit_d2.data.shapes  # noqa: F401  (registers hpvit_shapes_train / hpvit_shapes_val)

from .mask_rcnn_base import model, optimizer, train

PYRAMID_CHANNELS = 64

model.roi_heads.num_classes = 4
model.proposal_generator.head.in_channels = PYRAMID_CHANNELS
model.roi_heads.box_head.input_shape = ShapeSpec(channels=PYRAMID_CHANNELS, height=7, width=7)
model.roi_heads.mask_head.input_shape = ShapeSpec(channels=PYRAMID_CHANNELS, height=14, width=14)
model.proposal_generator.head.conv_dims = [-1]
model.proposal_generator.pre_nms_topk = (1000, 500)
model.proposal_generator.post_nms_topk = (500, 250)
model.roi_heads.batch_size_per_image = 128
model.roi_heads.box_head.conv_dims = []
model.roi_heads.box_head.fc_dims = [256, 256]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=256)
model.roi_heads.mask_head.conv_dims = [64, 64]

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="hpvit_shapes_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[L(T.RandomFlip)(horizontal=True)],
        image_format="RGB",
        use_instance_mask=True,
    ),
    total_batch_size=8,
    num_workers=1,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="hpvit_shapes_val", filter_empty=False),
    mapper=L(DatasetMapper)(is_train=False, augmentations=[], image_format="RGB"),
    num_workers=1,
)
dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    tasks=("bbox", "segm"),
    output_dir="${...train.output_dir}/inference",
)

train.device = "cpu"
train.amp.enabled = False
train.ddp.fp16_compression = False
train.init_checkpoint = ""
train.output_dir = "./output/tiny"
train.max_iter = 300
train.eval_period = 300
train.log_period = 20
train.checkpointer.period = 100
train.checkpointer.max_to_keep = 3

optimizer.lr = 4e-4
optimizer.weight_decay = 0.05

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1],
        milestones=[250],
        num_updates=train.max_iter,
    ),
    warmup_length=20 / train.max_iter,
    warmup_factor=0.01,
)
