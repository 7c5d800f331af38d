"""
CPU-sized UperNet on the embedded shapes label maps (hpvit_d2.data.shapes_semseg: 256x256 images,
5 classes = background + circle, rectangle, triangle, star), shared by the tiny HPViT and plain-ViT
semantic configs, which differ only in `model.backbone`.

The UperNet base (configs/common/upernet_base.py) made small: a 64-channel head with BatchNorm
(one process), the auxiliary head kept; training on the images downscaled to a short side of
112..144 (so about 2x smaller), cropped to at most 128x128 (RandomCrop_CategoryAreaConstraint,
no area constraint) and flipped; batch 4, 600 iterations of AdamW (lr 1e-3, wd 0.05, layer decay
0.9) from random initialisation, 10% warm-up then poly decay (fractions of train.max_iter:
`train.max_iter=N` rescales it). Evaluation on the 100 val images downscaled to 128x128
(predictions are upsampled back to 256x256 and scored there) with detectron2's SemSegEvaluator.
Whole downscaled images rather than 128x128 crops of the full-size ones, so that a crop holds
whole shapes. How these models fare at this schedule, and at longer ones, is measured by the lab
(docs/tasks.md), not stated here.
The stock tool trains and evaluates it with no override.
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.evaluation import SemSegEvaluator
from omegaconf import OmegaConf

from hpvit_d2.data.build import get_dataset_dicts  # importing hpvit_d2.data registers the shapes
from hpvit_d2.data.mapper import SafeDatasetMapper

from .upernet_base import IGNORE_VALUE, lr_multiplier, model, optimizer, train

CROP_SIZE = 128

model.sem_seg_head.update(num_classes=5, channels=64, norm="BN")

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_dataset_dicts)(names="hpvit_shapes_sem_seg_train"),
    mapper=L(SafeDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=(112, 128, 144), max_size=288,
                                    sample_style="choice"),
            L(T.RandomCrop_CategoryAreaConstraint)(
                crop_type="absolute",
                crop_size=(CROP_SIZE, CROP_SIZE),
                single_category_max_area=1.0,
                ignored_category=IGNORE_VALUE,
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="RGB",
        sem_seg_num_classes="${model.sem_seg_head.num_classes}",
        sem_seg_ignore_value="${model.sem_seg_head.ignore_value}",
    ),
    total_batch_size=4,
    num_workers=1,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_dataset_dicts)(names="hpvit_shapes_sem_seg_val", filter_empty=False),
    mapper=L(SafeDatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=CROP_SIZE, max_size=2 * CROP_SIZE)],
        image_format="RGB",
        sem_seg_num_classes="${model.sem_seg_head.num_classes}",
        sem_seg_ignore_value="${model.sem_seg_head.ignore_value}",
    ),
    num_workers=1,
)
dataloader.evaluator = L(SemSegEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${...train.output_dir}/inference",
)

train.device = "cpu"
train.amp.enabled = False
train.init_checkpoint = ""
train.output_dir = "./output/semseg_tiny"
train.seed = 0
train.max_iter = 600
train.eval_period = 600
train.log_period = 10
train.checkpointer.period = 600
train.checkpointer.max_to_keep = 2

optimizer.lr = 1e-3
optimizer.params.lr_decay_rate = 0.9

lr_multiplier.warmup_length = 0.1
lr_multiplier.warmup_factor = 0.01
