"""UperNet, HPViT-B (four native stages, 1/4..1/32, no FPN), ADE20K, MAE/BEiT recipe (160k
iterations, batch 16, 512x512 crops), initialised from MAE ViT-B. Baseline: upernet_vit_b.py."""
from ..common.backbones import hpvit_b_fpn
from .common import dataloader, lr_multiplier, model, optimizer, train

# The detection recipe's HPViT-B (stages (2, 2, 6, 2), conv pooling, windows of 14 in the first
# stages, global attention in blocks 7, 9, 10, 11), built for 512x512 crops.
model.backbone = hpvit_b_fpn.bottom_up
model.backbone.img_size = 512
