"""Tiny plain-ViT UperNet for the CPU (ViT of width 128, 4 blocks, at 1/16, + ViTDet's simple
feature pyramid), equal in width, depth and heads to semseg_hpvit_tiny.py: its baseline."""
from .common.backbones import vitdet_b_sfp
from .common.semseg_tiny import dataloader, lr_multiplier, model, optimizer, train

# The backbone of mask_rcnn_vitdet_tiny.py: 64-channel pyramid, four maps (no p6), no square pad.
model.backbone = vitdet_b_sfp
model.backbone.update(out_channels=64, top_block=None, square_pad=0)
model.backbone.net.update(
    img_size=256,
    embed_dim=128,
    depth=4,
    num_heads=4,
    drop_path_rate=0.0,
    window_size=8,
    window_block_indexes=(0, 2),
)
train.output_dir = "./output/semseg_vit_tiny"
