#!/usr/bin/env python
"""
Draw the predictions of an HPViT (or ViTDet) model on images, as detectron2's demo/demo.py.

    python projects/HPViT/demo.py --config-file mask_rcnn_hpvit_tiny.py \
        --input photos/ extra.jpg --output vis/ --weights output/hpvit_tiny/model_final.pth

See hpvit_d2/cli/demo.py for the flags and exit codes.
"""
from hpvit_d2.cli.demo import entry

if __name__ == "__main__":
    entry()
