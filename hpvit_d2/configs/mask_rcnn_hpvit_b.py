"""Mask R-CNN, HPViT-B + FPN, COCO, ViTDet's 100-epoch recipe, initialised from MAE ViT-B."""
from .common.backbones import hpvit_b_fpn
from .common.mask_rcnn_base import dataloader, lr_multiplier, model, optimizer, train

model.backbone = hpvit_b_fpn
