"""Tiny ViTDet Mask R-CNN for the CPU, equal in width, depth and heads to mask_rcnn_hpvit_tiny.py."""
from .common.backbones import TINY_VITDET, vitdet_b_sfp
from .common.tiny import PYRAMID_CHANNELS, dataloader, lr_multiplier, model, optimizer, train

model.backbone = vitdet_b_sfp
model.backbone.out_channels = PYRAMID_CHANNELS
model.backbone.square_pad = 256
model.backbone.net.update(TINY_VITDET)
train.output_dir = "./output/vitdet_tiny"
