"""UperNet, plain ViT-B + ViTDet's simple feature pyramid (1/4..1/32 from the 1/16 map), ADE20K:
the baseline of upernet_hpvit_b.py (same head, data, schedule and MAE ViT-B initialisation)."""
from ..common.backbones import vitdet_b_sfp
from .common import dataloader, lr_multiplier, model, optimizer, train

# ViTDet-B's backbone (window attention, global blocks 2, 5, 8, 11) for 512x512 crops, with its
# four maps p2..p5 (no p6: UperNet takes four levels) and no square padding. Its 256 output
# channels are ViTDet's (768 would make detectron2's matching heuristics map MAE's final
# `norm.weight` onto the pyramid's norms and fail on the ambiguity).
model.backbone = vitdet_b_sfp
model.backbone.net.img_size = 512
model.backbone.top_block = None
model.backbone.square_pad = 0
