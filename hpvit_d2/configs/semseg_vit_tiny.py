"""Tiny plain-ViT UperNet for the CPU (the trunk of mask_rcnn_vitdet_tiny.py at 1/16 + ViTDet's
simple feature pyramid), equal in width, depth and heads to semseg_hpvit_tiny.py: its baseline."""
from .common.backbones import TINY_VITDET, vitdet_b_sfp
from .common.semseg_tiny import dataloader, lr_multiplier, model, optimizer, train

# 64-channel pyramid, four maps (no p6), no square pad.
model.backbone = vitdet_b_sfp
model.backbone.update(out_channels=64, top_block=None, square_pad=0)
model.backbone.net.update(TINY_VITDET)
train.output_dir = "./output/semseg_vit_tiny"
