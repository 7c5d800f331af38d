"""Tiny ViTDet Mask R-CNN for the CPU, equal in width, depth and heads to mask_rcnn_hpvit_tiny.py."""
from .common.backbones import vitdet_b_sfp
from .common.tiny import PYRAMID_CHANNELS, dataloader, lr_multiplier, model, optimizer, train

model.backbone = vitdet_b_sfp
model.backbone.out_channels = PYRAMID_CHANNELS
model.backbone.square_pad = 256
model.backbone.net.update(
    img_size=256,
    embed_dim=128,
    depth=4,
    num_heads=4,
    drop_path_rate=0.0,
    window_size=8,
    window_block_indexes=(0, 2),
)
train.output_dir = "./output/vitdet_tiny"
