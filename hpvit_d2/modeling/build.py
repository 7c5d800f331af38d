"""yacs builder: `MODEL.BACKBONE.NAME: build_hpvit_fpn_backbone` gives FPN over HPViT."""
from functools import partial

import torch.nn as nn
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from .hpvit import HPViT

__all__ = ["build_hpvit_backbone", "build_hpvit_fpn_backbone"]


def build_hpvit_backbone(cfg) -> HPViT:
    """HPViT from MODEL.HPVIT.* (see hpvit_d2.config.add_hpvit_config)."""
    c = cfg.MODEL.HPVIT
    return HPViT(
        img_size=c.IMG_SIZE,
        patch_size=c.PATCH_SIZE,
        patch_stride=c.PATCH_STRIDE,
        in_chans=len(cfg.MODEL.PIXEL_MEAN),
        embed_dim=c.EMBED_DIM,
        depth=c.DEPTH,
        num_heads=c.NUM_HEADS,
        mlp_ratio=c.MLP_RATIO,
        qkv_bias=c.QKV_BIAS,
        drop_path_rate=c.DROP_PATH_RATE,
        norm_layer=partial(nn.LayerNorm, eps=c.NORM_EPS),
        use_abs_pos=c.USE_ABS_POS,
        use_rel_pos=c.USE_REL_POS,
        rel_pos_zero_init=c.REL_POS_ZERO_INIT,
        window_size=c.WINDOW_SIZE,
        window_block_indexes=tuple(c.WINDOW_BLOCK_INDEXES),
        stage_depths=tuple(c.STAGE_DEPTHS),
        pool_type=c.POOL_TYPE,
        pretrain_img_size=c.PRETRAIN_IMG_SIZE,
        pretrain_use_cls_token=c.PRETRAIN_USE_CLS_TOKEN,
        out_features=tuple(c.OUT_FEATURES),
        use_act_checkpoint=c.USE_ACT_CHECKPOINT,
    )


@BACKBONE_REGISTRY.register()
def build_hpvit_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """FPN (MODEL.FPN.*: IN_FEATURES, OUT_CHANNELS, NORM, FUSE_TYPE) over HPViT, with p6 by max pool."""
    return FPN(
        bottom_up=build_hpvit_backbone(cfg),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
