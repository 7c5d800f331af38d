"""HPViT modeling: the backbone, its attention block and pooling layers."""
from .attention import Attention, Block
from .hpvit import HPViT
from .pooling import TokenPool

__all__ = ["HPViT", "Attention", "Block", "TokenPool"]
