#!/usr/bin/env python
"""
Fine-tune and evaluate an image classifier (HPViT as a timm model, or any timm model) on an
ImageFolder tree, MAE's ImageNet fine-tuning recipe by default.

    python projects/HPViT/classify.py --data-dir /data/imagenet --model hpvit_base_patch16_224 \
        --pretrained mae_pretrain_vit_base.pth
    python projects/HPViT/classify.py --shapes --model hpvit_tiny_patch16_224 --img-size 64 ...

See hpvit_d2/cli/classify.py for the flags and exit codes.
"""
from hpvit_d2.cli.classify import entry

if __name__ == "__main__":
    entry()
