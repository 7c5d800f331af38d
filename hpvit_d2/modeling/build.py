"""yacs builder: `MODEL.BACKBONE.NAME: build_hpvit_fpn_backbone` gives FPN over HPViT."""
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from .hpvit import HPViT

__all__ = ["build_hpvit_backbone", "build_hpvit_fpn_backbone"]


def build_hpvit_backbone(cfg) -> HPViT:
    """HPViT from MODEL.HPVIT.* (see hpvit_d2.config.add_hpvit_config)."""
    from ..config import hpvit_kwargs_from_cfg

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
