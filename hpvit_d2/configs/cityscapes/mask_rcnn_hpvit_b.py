"""Mask R-CNN, HPViT-B + FPN, Cityscapes fine instances, initialised from MAE ViT-B."""
from ..common.backbones import hpvit_b_fpn
from .common import dataloader, lr_multiplier, model, optimizer, train

model.backbone = hpvit_b_fpn
model.backbone.square_pad = 0  # 2048x1024 images: pad to a multiple of the stride, not a square
