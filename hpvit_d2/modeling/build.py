"""
yacs: the constructor arguments the MODEL.HPVIT.* keys give, and the builders that
``MODEL.BACKBONE.NAME: build_hpvit_fpn_backbone`` names (FPN over HPViT). The keys and their
defaults (HPViT-B's LazyConfig) are added by ``hpvit_d2.config.add_hpvit_config``.
"""
from functools import partial
from typing import Dict

import torch.nn as nn
from detectron2.config import CfgNode as CN
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from .hpvit import HPViT

__all__ = ["HPVIT_YACS_ARGUMENTS", "build_hpvit_backbone",
           "build_hpvit_fpn_backbone", "hpvit_kwargs_from_cfg"]

# HPViT constructor arguments settable from yacs, as MODEL.HPVIT.<NAME.upper()>.
HPVIT_YACS_ARGUMENTS = (
    "img_size", "patch_size", "patch_stride", "embed_dim", "depth", "num_heads", "mlp_ratio",
    "qkv_bias", "drop_path_rate", "use_abs_pos", "use_rel_pos", "rel_pos_zero_init",
    "window_size", "window_block_indexes", "residual_block_indexes", "stage_depths",
    "pool_type", "pretrain_img_size", "pretrain_use_cls_token", "out_features",
    "fused_attn", "use_act_checkpoint",
)


def hpvit_kwargs_from_cfg(cfg: CN) -> Dict[str, object]:
    """HPViT constructor arguments from MODEL.HPVIT.* (norm_layer from NORM_EPS, in_chans from PIXEL_MEAN)."""
    c = cfg.MODEL.HPVIT
    kwargs = {}
    for name in HPVIT_YACS_ARGUMENTS:
        value = getattr(c, name.upper())
        kwargs[name] = tuple(value) if isinstance(value, list) else value
    kwargs["norm_layer"] = partial(nn.LayerNorm, eps=c.NORM_EPS)
    kwargs["in_chans"] = len(cfg.MODEL.PIXEL_MEAN)
    return kwargs


def build_hpvit_backbone(cfg) -> HPViT:
    """HPViT from MODEL.HPVIT.* (see hpvit_d2.config.add_hpvit_config)."""
    return HPViT(**hpvit_kwargs_from_cfg(cfg))


@BACKBONE_REGISTRY.register()
def build_hpvit_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """FPN (MODEL.FPN.*: IN_FEATURES, OUT_CHANNELS, NORM, FUSE_TYPE, SQUARE_PAD) over HPViT, p6 by max pool."""
    return FPN(
        bottom_up=build_hpvit_backbone(cfg),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        square_pad=cfg.MODEL.FPN.get("SQUARE_PAD", 0),
    )
