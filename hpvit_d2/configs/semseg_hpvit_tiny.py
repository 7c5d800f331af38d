"""Tiny HPViT UperNet for the CPU: the trunk of mask_rcnn_hpvit_tiny.py (width 128, 6 blocks in
stages (1, 1, 3, 1), 1/4..1/32), on the shapes label maps. Its plain-ViT twin: semseg_vit_tiny.py."""
from .common.backbones import TINY_HPVIT, hpvit_b_fpn
from .common.semseg_tiny import dataloader, lr_multiplier, model, optimizer, train

model.backbone = hpvit_b_fpn.bottom_up
model.backbone.update(TINY_HPVIT)
train.output_dir = "./output/semseg_hpvit_tiny"
