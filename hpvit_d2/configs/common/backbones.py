"""
The backbones, as LazyCall data, one definition each: HPViT + FPN (this project) and
ViT + SimpleFeaturePyramid (ViTDet). Every config takes its backbone from here.
Both pad every image to a 1024 square (`square_pad`), as ViTDet does.
"""
from functools import partial

import torch.nn as nn
from detectron2.config import LazyCall as L
from detectron2.modeling import FPN, SimpleFeaturePyramid, ViT
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from hpvit_d2.modeling import HPViT

# HPViT-B: MAE ViT-B blocks; patch embedding at stride 4, stages (2, 2, 6, 2) and conv pooling
# are HPViT's defaults, the paper's values, not restated here (docs/design.md, "Defaults").
# Global attention in blocks 7, 9 (1/16) and 10, 11 (1/32); window attention elsewhere.
hpvit_b_fpn = L(FPN)(
    bottom_up=L(HPViT)(
        img_size=1024,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_path_rate=0.1,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=14,
        window_block_indexes=(0, 1, 2, 3, 4, 5, 6, 8),
        out_features=("scale2", "scale3", "scale4", "scale5"),
        # Recompute every stage in backward, window blocks in bands of window rows: the same
        # gradients in less memory. (0, 1) recomputes the 1/4 and 1/8 stages only, False none;
        # their time and memory against ViTDet-B: docs/benchmarks.md, "Training step" block.
        use_act_checkpoint=True,
    ),
    in_features=("scale2", "scale3", "scale4", "scale5"),
    out_channels=256,
    norm="LN",
    top_block=L(LastLevelMaxPool)(),
    square_pad=1024,
)

# ViTDet-B: the plain ViT-B at 1/16 with the simple feature pyramid, as detectron2's model zoo.
vitdet_b_sfp = L(SimpleFeaturePyramid)(
    net=L(ViT)(
        img_size=1024,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        drop_path_rate=0.1,
        window_size=14,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        window_block_indexes=(0, 1, 3, 4, 6, 7, 9, 10),
        residual_block_indexes=(),
        use_rel_pos=True,
        out_feature="last_feat",
    ),
    in_feature="${.net.out_feature}",
    out_channels=256,
    scale_factors=(4.0, 2.0, 1.0, 0.5),
    top_block=L(LastLevelMaxPool)(),
    norm="LN",
    square_pad=1024,
)

# The small ViT sizes of timm, DeiT and most public checkpoints (patch 16, 12 blocks, MLP ratio 4):
# ViT-S/16 (vit_small_patch16_224, deit_small_patch16_224) and ViT-Ti/16 (vit_tiny_patch16_224,
# deit_tiny_patch16_224). The B trunk with these widths and heads.
VIT_S = dict(embed_dim=384, num_heads=6)
VIT_TI = dict(embed_dim=192, num_heads=3)

# The tiny trunk of every CPU config (mask_rcnn_*_tiny.py, semseg_*_tiny.py) and of the lab's
# shipped MAE: width 128, 6 blocks, 4 heads, patch 16, windows of 8 on 256x256 inputs.
TINY_VIT = dict(img_size=256, embed_dim=128, depth=6, num_heads=4, drop_path_rate=0.1, window_size=8)
# HPViT-tiny in HPViT-B's proportions: stages (1, 1, 3, 1) keep half of the pre-trained blocks at
# 1/16, as (2, 2, 6, 2) does; windows at 1/4, 1/8 and in every other 1/16 block, global attention
# in blocks 3 (1/16) and 5 (1/32). Average pools (docs/reproduction.md, pooling). No activation
# checkpointing: the tiny trunk fits in memory and trains faster without it.
TINY_HPVIT = dict(TINY_VIT, window_block_indexes=(0, 1, 2, 4), stage_depths=(1, 1, 3, 1),
                  pool_type="avg", use_act_checkpoint=False)
# ViTDet-tiny: the same blocks at 1/16, global attention in blocks 2 and 5 (every third, as ViTDet-B).
TINY_VITDET = dict(TINY_VIT, window_block_indexes=(0, 1, 3, 4))
