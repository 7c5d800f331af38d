"""Tiny HPViT Mask R-CNN for the CPU: width 128, 4 blocks, one per stage, on the shapes dataset."""
from .common.backbones import hpvit_b_fpn
from .common.tiny import PYRAMID_CHANNELS, dataloader, lr_multiplier, model, optimizer, train

model.backbone = hpvit_b_fpn
model.backbone.out_channels = PYRAMID_CHANNELS
model.backbone.square_pad = 256
model.backbone.bottom_up.update(
    img_size=256,
    embed_dim=128,
    depth=4,
    num_heads=4,
    drop_path_rate=0.0,
    window_size=8,
    window_block_indexes=(0, 1),
    stage_depths=(1, 1, 1, 1),
)
train.output_dir = "./output/hpvit_tiny"
