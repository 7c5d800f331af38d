"""HPViT modeling: the backbone, its attention block, pooling layers, and the yacs builder."""
from .attention import Attention, Block
from .build import build_hpvit_backbone, build_hpvit_fpn_backbone
from .hpvit import HPViT
from .pooling import TokenPool

__all__ = ["HPViT", "Attention", "Block", "TokenPool", "build_hpvit_backbone",
           "build_hpvit_fpn_backbone"]
