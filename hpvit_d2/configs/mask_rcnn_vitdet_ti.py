"""Mask R-CNN, ViTDet-Ti (ViT-Ti/16 + simple feature pyramid), COCO: the baseline of
mask_rcnn_hpvit_ti.py; the two differ only in `model.backbone`."""
from .common.backbones import VIT_TI
from .mask_rcnn_vitdet_b import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.update(VIT_TI)
train.init_checkpoint = ""
