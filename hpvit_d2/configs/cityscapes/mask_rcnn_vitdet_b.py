"""Mask R-CNN, ViTDet-B, Cityscapes fine instances: the baseline of cityscapes/mask_rcnn_hpvit_b.py."""
from ..common.backbones import vitdet_b_sfp
from .common import dataloader, lr_multiplier, model, optimizer, train

model.backbone = vitdet_b_sfp
model.backbone.square_pad = 0  # 2048x1024 images: pad to a multiple of the stride, not a square
