"""HPViT modeling: the backbone (detectron2's ViT with two changes), pooling, the attention with
its kernel switch, the opt-in CPU inference step, the yacs builder, the UperNet semantic
segmentation head. Converting other checkpoint formats is :mod:`hpvit_d2.checkpoint`'s."""
from .attention import Attention, Block
from .build import build_hpvit_backbone, build_hpvit_fpn_backbone
from .cpu_inference import cpu_inference_kernels, optimize_for_cpu_inference
from .hpvit import HPViT, find_vit_backbone
from .pooling import TokenPool
from .segmentor import semantic_segmentor
from .upernet import UperNetHead

__all__ = [
    "Attention",
    "Block",
    "HPViT",
    "TokenPool",
    "UperNetHead",
    "build_hpvit_backbone",
    "build_hpvit_fpn_backbone",
    "cpu_inference_kernels",
    "find_vit_backbone",
    "optimize_for_cpu_inference",
    "semantic_segmentor",
]
