"""
What the Cityscapes semantic segmentation configs share (gtFine, 19 classes, 2975 train / 500 val
images of 2048x1024); only `model.backbone` differs between HPViT and the plain ViT.

- model, optimizer, schedule shape: configs/common/upernet_base.py (UperNet, MAE ViT-B init,
  AdamW lr 1e-4, wd 0.05, layer decay 0.65, 1500-iteration warm-up then poly), with 19 classes.
- data: detectron2's built-in `cityscapes_fine_sem_seg_{train,val}` under
  $DETECTRON2_DATASETS/cityscapes (gtFine_labelTrainIds.png, made by cityscapesscripts'
  csCreateTrainIdLabelImgs: train ids 0..18, 255 ignored), loaded by
  hpvit_d2.data.build.get_dataset_dicts.
- training augmentation, crop and batch as detectron2's DeepLab Cityscapes configs
  (projects/DeepLab, Base-DeepLabV3-OS16-Semantic.yaml): short side one of 512, 768, ..., 2048
  (long side <= 4096), a 512x1024 crop (RandomCrop_CategoryAreaConstraint, no area constraint:
  SINGLE_CATEGORY_MAX_AREA 1.0), horizontal flip; batch 16, 90k iterations (DeepLab's schedule
  length; the optimizer is the ViT recipe's, not DeepLab's SGD). Not tuned here (no GPU): a
  starting point.
- test: full resolution (short side 1024, long side <= 2048), whole image.
- evaluation: detectron2's SemSegEvaluator (key "sem_seg": mIoU, fwIoU, mACC, pACC on train ids)
  and the official cityscapesscripts metric on the same predictions
  (hpvit_d2.evaluation.CityscapesSemSegEvaluator, key "cityscapes_sem_seg": IoU, iIoU over the 19
  classes and the 7 categories; it also reads gtFine_labelIds.png and gtFine_instanceIds.png).
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.evaluation import DatasetEvaluators, SemSegEvaluator
from omegaconf import OmegaConf

from hpvit_d2.data.build import get_dataset_dicts
from hpvit_d2.data.mapper import SafeDatasetMapper
from hpvit_d2.evaluation import CityscapesSemSegEvaluator

from ..common.upernet_base import IGNORE_VALUE, lr_multiplier, model, optimizer, train

model.sem_seg_head.num_classes = 19

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_dataset_dicts)(names="cityscapes_fine_sem_seg_train"),
    mapper=L(SafeDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=(512, 768, 1024, 1280, 1536, 1792, 2048),
                max_size=4096,
                sample_style="choice",
            ),
            L(T.RandomCrop_CategoryAreaConstraint)(
                crop_type="absolute",
                crop_size=(512, 1024),
                single_category_max_area=1.0,
                ignored_category=IGNORE_VALUE,
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="RGB",
        sem_seg_num_classes="${model.sem_seg_head.num_classes}",
        sem_seg_ignore_value="${model.sem_seg_head.ignore_value}",
    ),
    total_batch_size=16,
    num_workers=4,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_dataset_dicts)(names="cityscapes_fine_sem_seg_val", filter_empty=False),
    mapper=L(SafeDatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=1024, max_size=2048)],
        image_format="RGB",
        sem_seg_num_classes="${model.sem_seg_head.num_classes}",
        sem_seg_ignore_value="${model.sem_seg_head.ignore_value}",
    ),
    num_workers=4,
)
dataloader.evaluator = L(DatasetEvaluators)(
    evaluators=[
        L(SemSegEvaluator)(
            dataset_name="${dataloader.test.dataset.names}",
            output_dir="${train.output_dir}/inference",
        ),
        L(CityscapesSemSegEvaluator)(
            dataset_name="${dataloader.test.dataset.names}",
            output_dir="${train.output_dir}/inference",
        ),
    ]
)

train.max_iter = 90000
train.checkpointer.period = 10000
train.eval_period = 10000
lr_multiplier.warmup_length = 1500 / train.max_iter
