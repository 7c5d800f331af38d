#!/usr/bin/env python
"""
Train or evaluate HPViT (or ViTDet) from a LazyConfig (.py) or a yacs config (.yaml).

    python projects/HPViT/train_net.py --config-file configs/mask_rcnn_hpvit_b.py --num-gpus 8
    python projects/HPViT/train_net.py --config-file mask_rcnn_hpvit_b.py --eval-only \
        train.init_checkpoint=output/model_final.pth
    torchrun --nproc-per-node 8 --max-restarts 3 projects/HPViT/train_net.py --config-file ...

Flags: those of detectron2's lazyconfig_train_net.py, plus --strict, --allow-partial,
--dist-timeout, --debug (see hpvit_d2/cli/train.py).
"""
from hpvit_d2.cli.train import entry

if __name__ == "__main__":
    entry()
