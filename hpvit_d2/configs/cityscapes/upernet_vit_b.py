"""UperNet, plain ViT-B + ViTDet's simple feature pyramid, Cityscapes semantic segmentation: the
baseline of cityscapes/upernet_hpvit_b.py (same head, data, schedule and MAE initialisation)."""
from ..common.backbones import vitdet_b_sfp
from .semseg_common import dataloader, lr_multiplier, model, optimizer, train

# ViTDet-B's backbone with its four maps p2..p5 (no p6) and no square padding (2048x1024 images).
model.backbone = vitdet_b_sfp
model.backbone.top_block = None
model.backbone.square_pad = 0
