"""Tiny HPViT UperNet for the CPU: width 128, 4 blocks, one per stage (1/4..1/32), on the shapes
label maps. Its plain-ViT twin: semseg_vit_tiny.py."""
from .common.backbones import hpvit_b_fpn
from .common.semseg_tiny import dataloader, lr_multiplier, model, optimizer, train

# The backbone of mask_rcnn_hpvit_tiny.py, without the FPN.
model.backbone = hpvit_b_fpn.bottom_up
model.backbone.update(
    img_size=256,
    embed_dim=128,
    depth=4,
    num_heads=4,
    drop_path_rate=0.0,
    window_size=8,
    window_block_indexes=(0, 1),
    stage_depths=(1, 1, 1, 1),
)
train.output_dir = "./output/semseg_hpvit_tiny"
