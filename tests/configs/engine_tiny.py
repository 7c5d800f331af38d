"""A very small HPViT Mask R-CNN on the dataset under $HPVIT_TEST_COCO, for engine tests."""
import os

from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_train_loader
from detectron2.data import get_detection_dataset_dicts
from detectron2.data.datasets import register_coco_instances
from detectron2.modeling import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import OmegaConf

from hpvit_d2.modeling import HPViT

ROOT = os.environ["HPVIT_TEST_COCO"]
if "engine_tiny_train" not in DatasetCatalog.list():
    register_coco_instances("engine_tiny_train", {}, f"{ROOT}/instances.json", f"{ROOT}/images")

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
model.backbone = L(FPN)(
    bottom_up=L(HPViT)(img_size=64, embed_dim=32, depth=4, num_heads=2, window_size=4,
                       window_block_indexes=(0,), stage_depths=(1, 1, 1, 1)),
    in_features=("scale2", "scale3", "scale4", "scale5"),
    out_channels=32,
    top_block=L(LastLevelMaxPool)(),
)
model.proposal_generator.anchor_generator.sizes = [[8], [16], [32], [64], [128]]
model.proposal_generator.head.conv_dims = [-1]
model.proposal_generator.head.in_channels = 32
model.roi_heads.box_head.input_shape = ShapeSpec(channels=32, height=7, width=7)
model.roi_heads.mask_head.input_shape = ShapeSpec(channels=32, height=14, width=14)
model.roi_heads.num_classes = 2
model.roi_heads.batch_size_per_image = 32
model.roi_heads.box_head.fc_dims = [64]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=64)
model.roi_heads.mask_head.conv_dims = [32]
model.input_format = "RGB"

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="engine_tiny_train"),
    mapper=L(DatasetMapper)(is_train=True, augmentations=[], image_format="RGB",
                            use_instance_mask=True),
    total_batch_size=2,
    num_workers=0,
)

train = model_zoo.get_config("common/train.py").train
train.device = "cpu"
train.seed = 7
train.max_iter = 30
train.log_period = 1
train.metrics_window = 1
train.eval_period = 0
train.checkpointer.period = 2
train.checkpointer.max_to_keep = 100
train.ddp_sync_check_period = 0
train.ddp.fp16_compression = False

optimizer = model_zoo.get_config("common/optim.py").AdamW
optimizer.lr = 1e-3
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.5], milestones=[1], num_updates=2), warmup_length=0.2, warmup_factor=0.1
)
