"""
What every Mask R-CNN config of this project shares; only `model.backbone` (and the lr decay depth)
differ between HPViT and ViTDet.

- model: detectron2's ViTDet Mask R-CNN heads (2-conv RPN head, 4conv1fc box head, LN in box and
  mask heads), RGB input with ImageNet mean/std; the backbone is set by each config.
- dataloader: COCO 2017 with LSJ at 1024, evaluated with COCOEvaluator (bbox, segm).
- train / optimizer / lr_multiplier: ViTDet's 100-epoch recipe: AdamW lr 1e-4, wd 0.1, layer-wise
  lr decay 0.7, 184375 iterations at batch 64, steps at 88.9% and 96.3%, 250-iteration warm-up.
"""
from functools import partial

import torch
from fvcore.common.param_scheduler import MultiStepParamScheduler
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate
from detectron2.solver import WarmupParamScheduler

from .coco_lsj import dataloader

model = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model

train = model_zoo.get_config("common/train.py").train
train.amp.enabled = torch.cuda.is_available()
train.ddp.fp16_compression = True
train.device = "cuda" if torch.cuda.is_available() else "cpu"
train.max_iter = 184375
train.checkpointer.period = 5000
train.eval_period = 5000

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[163889, 177546],
        num_updates=train.max_iter,
    ),
    warmup_length=250 / train.max_iter,
    warmup_factor=0.001,
)

optimizer = model_zoo.get_config("common/optim.py").AdamW
optimizer.params.lr_factor_func = partial(get_vit_lr_decay_rate, num_layers=12, lr_decay_rate=0.7)
optimizer.params.overrides = {"pos_embed": {"weight_decay": 0.0}}
