"""Mask R-CNN, ViTDet-B (ViT-B + simple feature pyramid), COCO: the baseline of mask_rcnn_hpvit_b.py."""
from .common.backbones import vitdet_b_sfp
from .common.mask_rcnn_base import dataloader, lr_multiplier, model, optimizer, train

model.backbone = vitdet_b_sfp
