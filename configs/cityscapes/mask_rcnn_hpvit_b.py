"""Mask R-CNN, HPViT-B + FPN, Cityscapes fine instances, initialised from MAE ViT-B."""

from ..common.backbones import hpvit_b_fpn
from .common import dataloader, lr_multiplier, model, optimizer, train

model.backbone = hpvit_b_fpn
train.init_checkpoint = (
    "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_base.pth?matching_heuristics=True"
)
