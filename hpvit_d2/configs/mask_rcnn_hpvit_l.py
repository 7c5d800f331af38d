"""Mask R-CNN, HPViT-L + FPN, COCO, initialised from MAE ViT-L (ViTDet's ViT-L recipe: lr decay 0.8)."""
from .mask_rcnn_hpvit_b import dataloader, lr_multiplier, model, optimizer, train

# ViT-L: 24 blocks of width 1024. Stages (2, 2, 18, 2).
model.backbone.bottom_up.embed_dim = 1024
model.backbone.bottom_up.depth = 24
model.backbone.bottom_up.num_heads = 16
model.backbone.bottom_up.drop_path_rate = 0.4
model.backbone.bottom_up.stage_depths = (2, 2, 18, 2)
# Global attention in blocks 11, 17, 21 (1/16) and 23 (1/32).
model.backbone.bottom_up.window_block_indexes = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 18, 19, 20, 22,
)
optimizer.params.lr_decay_rate = 0.8
train.init_checkpoint = (
    "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_large.pth?matching_heuristics=True"
)
