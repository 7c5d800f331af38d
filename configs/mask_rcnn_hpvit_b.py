"""Mask R-CNN, HPViT-B + FPN, COCO, ViTDet's 100-epoch recipe, initialised from MAE ViT-B."""
from .common.backbones import hpvit_b_fpn
from .common.mask_rcnn_base import dataloader, lr_multiplier, model, optimizer, train

model.backbone = hpvit_b_fpn
# MAE ViT-B as detectron2 hosts it; the heuristics map its `backbone.net.*` keys onto
# `backbone.bottom_up.*`. Offline: convert a local file with `python -m hpvit_d2.convert`.
train.init_checkpoint = (
    "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_base.pth?matching_heuristics=True"
)
