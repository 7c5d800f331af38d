"""
What the ADE20K semantic segmentation configs share (ADEChallengeData2016: 150 classes, 20210
train / 2000 val images); only `model.backbone` differs between HPViT and the plain ViT.

Recipe (MAE paper, appendix A.4, following BEiT; mmsegmentation's ADE20K pipeline):
- data: detectron2's built-in `ade20k_sem_seg_{train,val}` under
  $DETECTRON2_DATASETS/ADEChallengeData2016 (`annotations_detectron2/`, made by detectron2's
  datasets/prepare_ade20k_sem_seg.py: labels 0..149, 255 = "other"/ignore), loaded by
  hpvit_d2.data.build.get_dataset_dicts; label maps are checked where they are read
  (hpvit_d2.data.labels: size, values < 150 or 255).
- training augmentation: random rescale to a short side of 0.5x..2.0x 512 (max long side 2048;
  the discrete list of detectron2 ports of mmseg's (2048, 512) ratio 0.5-2.0 resize, e.g.
  Mask2Former's ADE20K config), 512x512 crop by detectron2's RandomCrop_CategoryAreaConstraint
  with no class above 75% of the crop (mmseg's cat_max_ratio=0.75, 255 excluded), horizontal flip,
  and mmseg's PhotoMetricDistortion approximated by detectron2's RandomBrightness (x0.875..1.125,
  about +-32 at mid-grey), RandomContrast and RandomSaturation (0.5..1.5), each with p=0.5 (hue
  jitter has no detectron2 transform and is left out). Batches are padded with the ignore value.
- batch 16, 160k iterations (MAE/BEiT), evaluation every 16k iterations.
- test: short side 512 (long side <= 2048), whole image at once (BEiT/MAE's mmseg configs slide a
  512 window with stride 341; detectron2's SemanticSegmentor runs the whole image), detectron2's
  SemSegEvaluator: mIoU, fwIoU, mACC, pACC and per-class IoU/ACC.
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.evaluation import SemSegEvaluator
from omegaconf import OmegaConf

from hpvit_d2.data.build import get_dataset_dicts
from hpvit_d2.data.mapper import SafeDatasetMapper

from ..common.upernet_base import IGNORE_VALUE, lr_multiplier, model, optimizer, train

CROP_SIZE = 512

model.sem_seg_head.num_classes = 150

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_dataset_dicts)(names="ade20k_sem_seg_train"),
    mapper=L(SafeDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=[int(CROP_SIZE * x / 10) for x in range(5, 21)],
                max_size=4 * CROP_SIZE,
                sample_style="choice",
            ),
            L(T.RandomCrop_CategoryAreaConstraint)(
                crop_type="absolute",
                crop_size=(CROP_SIZE, CROP_SIZE),
                single_category_max_area=0.75,
                ignored_category=IGNORE_VALUE,
            ),
            L(T.RandomFlip)(horizontal=True),
            L(T.RandomApply)(tfm_or_aug=L(T.RandomBrightness)(intensity_min=0.875,
                                                              intensity_max=1.125), prob=0.5),
            L(T.RandomApply)(tfm_or_aug=L(T.RandomContrast)(intensity_min=0.5, intensity_max=1.5),
                             prob=0.5),
            L(T.RandomApply)(tfm_or_aug=L(T.RandomSaturation)(intensity_min=0.5,
                                                              intensity_max=1.5), prob=0.5),
        ],
        image_format="RGB",
        sem_seg_num_classes="${model.sem_seg_head.num_classes}",
        sem_seg_ignore_value="${model.sem_seg_head.ignore_value}",
    ),
    total_batch_size=16,
    num_workers=4,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_dataset_dicts)(names="ade20k_sem_seg_val", filter_empty=False),
    mapper=L(SafeDatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=CROP_SIZE,
                                               max_size=4 * CROP_SIZE)],
        image_format="RGB",
        sem_seg_num_classes="${model.sem_seg_head.num_classes}",
        sem_seg_ignore_value="${model.sem_seg_head.ignore_value}",
    ),
    num_workers=4,
)
dataloader.evaluator = L(SemSegEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${...train.output_dir}/inference",
)

train.max_iter = 160000
lr_multiplier.warmup_length = 1500 / train.max_iter
