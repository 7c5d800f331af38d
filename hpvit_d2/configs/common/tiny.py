"""
CPU-sized Mask R-CNN on the embedded shapes dataset (hpvit_d2.data.shapes), shared by the tiny
HPViT and ViTDet configs: 256x256 images, light heads (64-channel pyramid, 2fc box head,
2-conv mask head, anchors 16..256), batch 2, 480 iterations of AdamW (10% warm-up, x0.1 at 87%).
The schedule is given in fractions of train.max_iter, so `train.max_iter=N` rescales it. The
stock tool trains and evaluates it with no override. `train.init_checkpoint` is empty: the lab
fine-tunes from its shipped MAE (converted with hpvit_d2.convert); lr, layer decay and drop path
per arm are the lab's tuned recipes (projects/HPViT/hpvit_lab/recipes.json).
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.data import build_detection_test_loader, build_detection_train_loader
import detectron2.data.transforms as T
from detectron2.evaluation import COCOEvaluator
from fvcore.common.param_scheduler import MultiStepParamScheduler
from detectron2.solver import WarmupParamScheduler
from omegaconf import OmegaConf

from hpvit_d2.data.build import get_dataset_dicts  # importing hpvit_d2.data registers the shapes
from hpvit_d2.data.mapper import SafeDatasetMapper

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
model.roi_heads.box_predictor.test_topk_per_image = 50
# Anchors one octave smaller than COCO's (16..256 on p2..p6) for 256x256 images.
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_dataset_dicts)(
        names="hpvit_shapes_train", require_masks="${..mapper.use_instance_mask}"
    ),
    mapper=L(SafeDatasetMapper)(
        is_train=True,
        augmentations=[L(T.RandomFlip)(horizontal=True)],
        image_format="RGB",
        use_instance_mask=True,
    ),
    total_batch_size=2,
    num_workers=1,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_dataset_dicts)(names="hpvit_shapes_val", filter_empty=False),
    # The shapes images are 256x256 (unchanged); any other image is brought within the 256 square
    # the backbones pad to.
    mapper=L(SafeDatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=256, max_size=256)],
        image_format="RGB",
    ),
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
train.seed = 0
train.max_iter = 480
train.eval_period = 480
train.log_period = 10
train.checkpointer.period = 480
train.checkpointer.max_to_keep = 2

optimizer.lr = 4e-4
optimizer.weight_decay = 0.05
optimizer.params.lr_decay_rate = 0.75

# Fractions of train.max_iter, so `train.max_iter=N` on the command line rescales the schedule.
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1],
        milestones=[416],
        num_updates=train.max_iter,
    ),
    warmup_length=0.1,
    warmup_factor=0.01,
)
