"""HPViT modeling: the backbone (detectron2's ViT with two changes), pooling, the attention with
its kernel switch, the opt-in CPU inference step, the plain-ViT checkpoint filter, the yacs
builder, the UperNet semantic segmentation head."""
from .attention import Attention, Block
from .build import build_hpvit_backbone, build_hpvit_fpn_backbone
from .checkpoint_filter import (
    ConversionReport,
    IncompatibleCheckpointError,
    convert_plain_vit,
)
from .classifier import checkpoint_filter_fn
from .cpu_inference import cpu_inference_kernels, optimize_for_cpu_inference
from .hpvit import HPViT, find_vit_backbone
from .pooling import TokenPool
from .segmentor import semantic_segmentor
from .upernet import UperNetHead

__all__ = [
    "Attention",
    "Block",
    "ConversionReport",
    "HPViT",
    "IncompatibleCheckpointError",
    "TokenPool",
    "UperNetHead",
    "build_hpvit_backbone",
    "build_hpvit_fpn_backbone",
    "checkpoint_filter_fn",
    "convert_plain_vit",
    "cpu_inference_kernels",
    "find_vit_backbone",
    "optimize_for_cpu_inference",
    "semantic_segmentor",
]
