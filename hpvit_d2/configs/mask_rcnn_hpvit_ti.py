"""
Mask R-CNN, HPViT-Ti + FPN, COCO: mask_rcnn_hpvit_b.py with a ViT-Ti/16 trunk (width 192, 3
heads), for DeiT-Ti and timm's vit_tiny_patch16_224 checkpoints. There is no public MAE of this
size: give yours as `train.init_checkpoint=/path/ckpt.pth` (converted on load), or convert it
first with `hpvit-convert ckpt.pth init.pth`, which picks this config by its width.
"""
from .common.backbones import VIT_TI
from .mask_rcnn_hpvit_b import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.update(VIT_TI)
train.init_checkpoint = ""
