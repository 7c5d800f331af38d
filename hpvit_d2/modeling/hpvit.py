"""HPViT: a plain ViT made hierarchical by a stride-4 patch embedding and pooling between stages."""
import math
from functools import partial
from typing import Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint
from detectron2.modeling import Backbone
from detectron2.modeling.backbone.utils import PatchEmbed, get_abs_pos

from .attention import Block
from .pooling import POOL_TYPES, TokenPool

__all__ = ["HPViT", "MAX_GLOBAL_ATTENTION_SIDE"]

# Global attention is quadratic in the number of tokens: it is only allowed on maps of at most
# 64x64 tokens at `img_size` (ViTDet's largest global map, ViT at 1024/16).
MAX_GLOBAL_ATTENTION_SIDE = 64


class HPViT(Backbone):
    """
    Hierarchical plain ViT ("Rethinking Hierarchies in Pre-trained Plain Vision Transformer").

    The blocks are the plain ViT's blocks (named ``blocks.{i}`` with the global index, as in MAE,
    timm and ViTDet). Two changes make it hierarchical: the patch embedding keeps its pre-trained
    ``patch_size`` kernel but runs at ``patch_stride`` (4 by default), and a pooling layer
    (``pools.{k}``) halves the map after every stage but the last. Outputs are named by stride:
    ``scale2`` (1/4) ... ``scale5`` (1/32), each (B, embed_dim, H/stride, W/stride).

    With ``patch_stride=patch_size`` and ``stage_depths=(depth,)`` it is detectron2's ``ViT``
    (same state dict, same output, named ``scale4``).
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        patch_stride: int = 4,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        act_layer=nn.GELU,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        rel_pos_zero_init: bool = True,
        window_size: int = 14,
        window_block_indexes: Sequence[int] = (0, 1, 2, 3, 4, 5, 6, 8),
        stage_depths: Sequence[int] = (2, 2, 6, 2),
        pool_type: str = "conv",
        pretrain_img_size: int = 224,
        pretrain_use_cls_token: bool = True,
        out_features: Sequence[str] = ("scale2", "scale3", "scale4", "scale5"),
        use_act_checkpoint: bool = False,
    ):
        """
        Args:
            img_size (int): input size the model is built for; sizes the relative-position tables
                of global blocks and decides where global attention is allowed. Any input size
                runs.
            patch_size (int): kernel of the patch embedding (the pre-trained one, 16).
            patch_stride (int): stride of the patch embedding: 4 for HPViT, ``patch_size`` for
                the plain ViT.
            in_chans (int): input image channels.
            embed_dim (int): width of every block (the pre-trained width).
            depth (int): number of blocks.
            num_heads (int): attention heads per block.
            mlp_ratio (float): MLP hidden width / embed_dim.
            qkv_bias (bool): learnable bias on query, key, value.
            drop_path_rate (float): stochastic depth, increasing linearly to this over the blocks.
            norm_layer (callable): normalisation layer.
            act_layer (callable): MLP activation.
            use_abs_pos (bool): add the pre-trained absolute position embedding, resized at run
                time to the first stage's grid.
            use_rel_pos (bool): decomposed relative positions in attention.
            rel_pos_zero_init (bool): start relative-position tables at zero.
            window_size (int): window side of window-attention blocks.
            window_block_indexes (list[int]): blocks with window attention; the others are global.
            stage_depths (list[int]): blocks per stage, summing to ``depth``.
            pool_type (str): "conv" (2x2 stride-2 conv, initialised to the average), "avg" or "max".
            pretrain_img_size (int): image size of pre-training, giving the stored position grid.
            pretrain_use_cls_token (bool): the stored position embedding has a class-token slot.
            out_features (list[str]): stages to return, among ``scale{log2(stride)}``.
            use_act_checkpoint (bool): recompute block activations in backward to save memory.
        """
        super().__init__()
        stage_depths = tuple(int(d) for d in stage_depths)
        window_block_indexes = tuple(int(i) for i in window_block_indexes)
        self._validate(img_size, patch_size, patch_stride, depth, window_size,
                       window_block_indexes, stage_depths, pool_type)

        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.use_act_checkpoint = use_act_checkpoint
        self.stage_depths = stage_depths
        self.stage_strides = tuple(patch_stride * 2**k for k in range(len(stage_depths)))
        self.stage_names = tuple(f"scale{int(math.log2(s))}" for s in self.stage_strides)
        unknown = [f for f in out_features if f not in self.stage_names]
        if unknown or not out_features:
            raise ValueError(
                f"out_features={list(out_features)} names stages that do not exist: "
                f"with patch_stride={patch_stride} and {len(stage_depths)} stages they are "
                f"{list(self.stage_names)}"
            )

        self.patch_embed = PatchEmbed(
            kernel_size=(patch_size, patch_size),
            stride=(patch_stride, patch_stride),
            padding=((patch_size - patch_stride) // 2,) * 2,
            in_chans=in_chans,
            embed_dim=embed_dim,
        )
        if use_abs_pos:
            grid = pretrain_img_size // patch_size
            num_positions = grid * grid + (1 if pretrain_use_cls_token else 0)
            self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        else:
            self.pos_embed = None

        drop_path = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList()
        for i in range(depth):
            stride = self.stage_strides[self._stage_of_block(i)]
            global_side = math.ceil(img_size / stride)
            self.blocks.append(
                Block(
                    dim=embed_dim,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path=drop_path[i],
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                    use_rel_pos=use_rel_pos,
                    rel_pos_zero_init=rel_pos_zero_init,
                    window_size=window_size if i in window_block_indexes else 0,
                    input_size=(global_side, global_side),
                )
            )
        self.pools = nn.ModuleList(
            TokenPool(embed_dim, pool_type) for _ in range(len(stage_depths) - 1)
        )

        self._out_features = list(out_features)
        self._out_feature_channels = {name: embed_dim for name in self._out_features}
        self._out_feature_strides = {
            name: s for name, s in zip(self.stage_names, self.stage_strides) if name in out_features
        }
        self._last_stage = max(self.stage_names.index(f) for f in self._out_features)

        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _validate(img_size, patch_size, patch_stride, depth, window_size, window_block_indexes,
                  stage_depths, pool_type):
        if patch_stride < 1 or patch_stride > patch_size or (patch_size - patch_stride) % 2:
            raise ValueError(
                f"patch_stride={patch_stride} does not fit patch_size={patch_size}: the patch "
                "embedding pads by (patch_size - patch_stride) / 2 on each side, so "
                "patch_size - patch_stride must be even and >= 0 (e.g. 16 and 4)"
            )
        if not stage_depths or min(stage_depths) < 1 or sum(stage_depths) != depth:
            raise ValueError(
                f"stage_depths={list(stage_depths)} must be positive and sum to depth={depth} "
                f"(e.g. (2, 2, 6, 2) for depth 12, or ({depth},) for the plain ViT)"
            )
        if pool_type not in POOL_TYPES:
            raise ValueError(f"pool_type={pool_type!r} is unknown: use one of {POOL_TYPES}")
        bad = [i for i in window_block_indexes if not 0 <= i < depth]
        if bad:
            raise ValueError(
                f"window_block_indexes has {bad}, outside the blocks 0..{depth - 1}"
            )
        if window_size < 0:
            raise ValueError(f"window_size={window_size} must be >= 0")
        stage_starts = [sum(stage_depths[:k]) for k in range(len(stage_depths))]
        for i in range(depth):
            if window_size > 0 and i in window_block_indexes:
                continue
            stage = max(k for k, start in enumerate(stage_starts) if start <= i)
            stride = patch_stride * 2**stage
            side = math.ceil(img_size / stride)
            if side > MAX_GLOBAL_ATTENTION_SIDE:
                raise ValueError(
                    f"window_block_indexes: block {i} has global attention at stride {stride}, "
                    f"where img_size={img_size} gives a {side}x{side} map. Global attention is "
                    f"allowed only on maps of at most {MAX_GLOBAL_ATTENTION_SIDE}x"
                    f"{MAX_GLOBAL_ATTENTION_SIDE} tokens (img_size / stride <= "
                    f"{MAX_GLOBAL_ATTENTION_SIDE}): add {i} to window_block_indexes, or move it to "
                    "a later stage with stage_depths"
                )

    def _stage_of_block(self, i: int) -> int:
        end = 0
        for k, d in enumerate(self.stage_depths):
            end += d
            if i < end:
                return k
        raise IndexError(i)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    @property
    def size_divisibility(self) -> int:
        return self.stage_strides[-1]

    def forward(self, x: torch.Tensor):
        """
        Args:
            x (Tensor): images (B, in_chans, H, W).
        Returns:
            dict[str, Tensor]: ``scale{n}`` -> (B, embed_dim, ceil(H / 2**n), ceil(W / 2**n)),
            exact for H, W divisible by ``size_divisibility``.
        """
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, (x.shape[1], x.shape[2]))

        outputs = {}
        first = 0
        for stage, depth in enumerate(self.stage_depths):
            if stage > 0:
                x = self.pools[stage - 1](x)
            for blk in self.blocks[first : first + depth]:
                if self.use_act_checkpoint and self.training and torch.is_grad_enabled():
                    x = checkpoint(blk, x, use_reentrant=False)
                else:
                    x = blk(x)
            first += depth
            name = self.stage_names[stage]
            if name in self._out_features:
                outputs[name] = x.permute(0, 3, 1, 2)
            if stage == self._last_stage:
                break
        return outputs
