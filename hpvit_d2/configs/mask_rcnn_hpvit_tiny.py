"""Tiny HPViT Mask R-CNN for the CPU: width 128, 6 blocks in stages (1, 1, 3, 1), FPN, on the
shapes dataset."""
from .common.backbones import TINY_HPVIT, hpvit_b_fpn
from .common.tiny import PYRAMID_CHANNELS, dataloader, lr_multiplier, model, optimizer, train

model.backbone = hpvit_b_fpn
model.backbone.out_channels = PYRAMID_CHANNELS
model.backbone.square_pad = 256
model.backbone.bottom_up.update(TINY_HPVIT)
train.output_dir = "./output/hpvit_tiny"
