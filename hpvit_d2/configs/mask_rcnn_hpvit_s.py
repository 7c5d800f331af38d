"""
Mask R-CNN, HPViT-S + FPN, COCO: mask_rcnn_hpvit_b.py with a ViT-S/16 trunk (width 384, 6 heads),
for the small checkpoints most people hold (DeiT-S, timm's vit_small_patch16_224). There is no
public MAE of this size: give yours as `train.init_checkpoint=/path/ckpt.pth` (converted on load),
or convert it first with `hpvit-convert ckpt.pth init.pth`, which picks this config by its width.
"""
from .common.backbones import VIT_S
from .mask_rcnn_hpvit_b import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.update(VIT_S)
train.init_checkpoint = ""
