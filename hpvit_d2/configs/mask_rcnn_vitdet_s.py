"""Mask R-CNN, ViTDet-S (ViT-S/16 + simple feature pyramid), COCO: the baseline of
mask_rcnn_hpvit_s.py; the two differ only in `model.backbone`."""
from .common.backbones import VIT_S
from .mask_rcnn_vitdet_b import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.update(VIT_S)
train.init_checkpoint = ""
