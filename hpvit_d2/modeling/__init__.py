"""HPViT modeling: the backbone (detectron2's ViT with two changes), pooling, fused block forward,
the plain-ViT checkpoint filter, the yacs builder, the UperNet semantic segmentation head."""
from .attention import fused_attention, fused_block_forward
from .build import build_hpvit_backbone, build_hpvit_fpn_backbone
from .checkpoint_filter import (
    ConversionReport,
    IncompatibleCheckpointError,
    convert_plain_vit,
)
from .classifier import checkpoint_filter_fn
from .hpvit import HPViT, find_vit_backbone
from .pooling import TokenPool
from .segmentor import semantic_segmentor
from .upernet import UperNetHead

__all__ = [
    "ConversionReport",
    "HPViT",
    "IncompatibleCheckpointError",
    "TokenPool",
    "UperNetHead",
    "build_hpvit_backbone",
    "build_hpvit_fpn_backbone",
    "checkpoint_filter_fn",
    "convert_plain_vit",
    "find_vit_backbone",
    "fused_attention",
    "fused_block_forward",
    "semantic_segmentor",
]
