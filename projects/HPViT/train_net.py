#!/usr/bin/env python
"""
Train or evaluate HPViT (or ViTDet) Mask R-CNN from a LazyConfig (.py) or a yacs config (.yaml).

    python projects/HPViT/train_net.py --config-file configs/mask_rcnn_hpvit_b.py --num-gpus 8
    python projects/HPViT/train_net.py --config-file configs/mask_rcnn_hpvit_b.py --eval-only \
        train.init_checkpoint=output/model_final.pth

Flags are those of detectron2's lazyconfig_train_net.py, plus --strict; the load report of the
init checkpoint is printed. See hpvit_d2/engine/launch.py.
"""
import sys

from hpvit_d2.engine.launch import invoke_main

if __name__ == "__main__":
    invoke_main(sys.argv[1:])
