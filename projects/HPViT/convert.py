#!/usr/bin/env python
"""
Convert a plain-ViT checkpoint (MAE, DeiT/timm, Hugging Face, ViTDet) for a config's backbone.

    python projects/HPViT/convert.py mae_pretrain_vit_base.pth hpvit_b_init.pth --config-file mask_rcnn_hpvit_b.py

See hpvit_d2/cli/convert.py.
"""
from hpvit_d2.cli.convert import entry

if __name__ == "__main__":
    entry()
