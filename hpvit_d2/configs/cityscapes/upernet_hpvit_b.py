"""UperNet, HPViT-B (four native stages), Cityscapes semantic segmentation (19 classes, 512x1024
crops), initialised from MAE ViT-B. Baseline: cityscapes/upernet_vit_b.py."""
from ..common.backbones import hpvit_b_fpn
from .semseg_common import dataloader, lr_multiplier, model, optimizer, train

# The detection recipe's HPViT-B; img_size 1024 (its default) keeps the 1/16 global blocks at
# the 64x64 limit for the 1024-wide crops.
model.backbone = hpvit_b_fpn.bottom_up
