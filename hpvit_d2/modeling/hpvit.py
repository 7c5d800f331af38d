"""HPViT: detectron2's ViT with two changes, a stride-4 patch embedding and pooling between stages."""
import inspect
import math
from typing import Optional, Sequence, Set, Union

import torch
import torch.nn as nn
from detectron2.modeling import ViT
from detectron2.modeling.backbone.utils import PatchEmbed
from torch.utils.checkpoint import checkpoint

from .attention import adopt_block
from .bands import RECOMPUTE_BAND_TOKENS, row_bands
from .pooling import TokenPool, check_pool_type
from .position import resize_rel_pos, resized_abs_pos
from .retype import retype

__all__ = ["HPViT", "MAX_GLOBAL_ATTENTION_SIDE", "find_vit_backbone", "recomputed_block",
           "stage_depths_problem"]

# Global attention is quadratic in the tokens: allowed on maps of at most 64x64 tokens at
# `img_size`, ViTDet's largest global map (ViT-B at 1024/16).
MAX_GLOBAL_ATTENTION_SIDE = 64

_VIT_ARGUMENTS = frozenset(inspect.signature(ViT.__init__).parameters) - {"self", "out_feature"}


def stage_depths_problem(stage_depths: Sequence[int], depth: int) -> Optional[str]:
    """What is wrong with ``stage_depths`` for a ViT of ``depth`` blocks, or None."""
    stage_depths = [int(d) for d in stage_depths]
    if stage_depths and min(stage_depths) >= 1 and sum(stage_depths) == depth:
        return None
    return (f"stage_depths={stage_depths} must be positive and sum to depth={depth} "
            f"(e.g. (2, 2, 6, 2) for depth 12, or ({depth},) for the plain ViT)")


class HPViT(ViT):
    """
    Hierarchical plain ViT ("Rethinking Hierarchies in Pre-trained Plain Vision Transformer").

    detectron2's ``ViT`` (its blocks, patch and position embeddings, ``blocks.{i}`` names and
    initialisation) with two changes: the patch embedding runs its ``patch_size`` kernel at
    ``patch_stride``, and a pooling layer ``pools.{k}`` halves the map after every stage but the
    last. Outputs ``scale2`` (1/4) ... ``scale5`` (1/32), each (B, embed_dim, H / s, W / s). With
    ``patch_stride=patch_size`` and ``stage_depths=(depth,)`` it is detectron2's ``ViT``, its one
    output named ``scale4``.

    Its own arguments default to the paper's HPViT-B/16 at 224; those it passes on keep
    detectron2's ``ViT`` defaults (docs/design.md, "Defaults").
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_stride: int = 4,
        stage_depths: Sequence[int] = (2, 2, 6, 2),
        pool_type: str = "conv",
        out_features: Optional[Sequence[str]] = None,
        fused_attn: bool = True,
        use_act_checkpoint: Union[bool, Sequence[int]] = False,
        **vit_kwargs,
    ):
        """
        Args:
            img_size (int): the input size the model is built for: sizes the relative-position
                tables of global blocks (each for its stage's map) and decides where global
                attention is allowed. Any input size runs.
            patch_stride (int): stride of the patch embedding (``patch_size``: the plain ViT).
            stage_depths (list[int]): blocks per stage, summing to ``depth``.
            pool_type (str): "conv" (2x2 stride-2 conv, initialised to the average), "avg" or "max".
            out_features (list[str] or None): stages to return, ``scale{log2(stride)}``; None: all.
            fused_attn (bool): the blocks' attention kernel (:class:`~.attention.Attention`).
            use_act_checkpoint (bool or list[int]): recompute block activations in backward
                (``torch.utils.checkpoint``): in every stage, or in the stages listed.
            vit_kwargs: detectron2 ``ViT``'s other arguments, with its defaults.
        """
        unknown = sorted(set(vit_kwargs) - _VIT_ARGUMENTS)
        if unknown:
            raise TypeError(f"HPViT got unexpected argument(s) {unknown}; it takes img_size, "
                            "patch_stride, stage_depths, pool_type, out_features, fused_attn, "
                            f"use_act_checkpoint and detectron2 ViT's {sorted(_VIT_ARGUMENTS)}")
        super().__init__(img_size=img_size, use_act_checkpoint=False, **vit_kwargs)
        patch_size = self.patch_embed.proj.kernel_size[0]
        self.stage_depths = tuple(int(d) for d in stage_depths)
        self.stage_strides = tuple(patch_stride * 2**k for k in range(len(self.stage_depths)))
        self.stage_names = tuple(f"scale{int(math.log2(s))}" for s in self.stage_strides)
        self._validate(patch_size, patch_stride, pool_type,
                       vit_kwargs.get("window_block_indexes", ()))

        # detectron2's modules with forwards that keep the map row-major and let the attention
        # choose its kernel (same parameters and state dict).
        retype(self.patch_embed, RowMajorPatchEmbed)
        for blk in self.blocks:
            adopt_block(blk, fused_attn)
        # Change 1: the pre-trained kernel at a finer stride (the padding keeps the grid centred).
        self.patch_embed.proj.stride = (patch_stride, patch_stride)
        self.patch_embed.proj.padding = ((patch_size - patch_stride) // 2,) * 2
        # Change 2: a pooling layer between consecutive stages.
        embed_dim = self.patch_embed.proj.out_channels
        self.pools = nn.ModuleList(
            TokenPool(embed_dim, pool_type) for _ in range(len(self.stage_depths) - 1)
        )

        self.use_act_checkpoint = use_act_checkpoint
        self._block_stages = [k for k, d in enumerate(self.stage_depths) for _ in range(d)]
        self._check_global_attention(img_size)
        self._size_global_rel_pos_tables(img_size, patch_size)
        self._set_out_features(self.stage_names if out_features is None else out_features)

    def _set_out_features(self, out_features: Sequence[str]) -> None:
        """The stages ``forward`` returns, and the shapes detectron2's necks read from them."""
        out_features = tuple(out_features)
        if not out_features or any(f not in self.stage_names for f in out_features):
            raise ValueError(
                f"out_features={list(out_features)} names stages that do not exist: with "
                f"patch_stride={self.stage_strides[0]} and {len(self.stage_depths)} stages they "
                f"are {list(self.stage_names)}")
        self._out_features = list(out_features)
        self._out_feature_channels = {n: self.patch_embed.proj.out_channels for n in out_features}
        self._out_feature_strides = {
            n: s for n, s in zip(self.stage_names, self.stage_strides) if n in out_features
        }
        self._last_stage = max(self.stage_names.index(f) for f in out_features)

    def _validate(self, patch_size: int, patch_stride: int, pool_type: str,
                  window_block_indexes: Sequence[int]) -> None:
        if patch_stride < 1 or patch_stride > patch_size or (patch_size - patch_stride) % 2:
            raise ValueError(
                f"patch_stride={patch_stride} does not fit patch_size={patch_size}: the patch "
                "embedding pads by (patch_size - patch_stride) / 2 on each side, so "
                "patch_size - patch_stride must be even and >= 0 (e.g. 16 and 4)"
            )
        depth = len(self.blocks)
        problem = stage_depths_problem(self.stage_depths, depth)
        if problem:
            raise ValueError(problem)
        check_pool_type(pool_type)  # also where one stage builds no pool
        outside = [i for i in window_block_indexes if not 0 <= i < depth]
        if outside:
            raise ValueError(
                f"window_block_indexes has {outside}, outside the blocks 0..{depth - 1}")

    def _check_global_attention(self, img_size: int) -> None:
        for i, blk in enumerate(self.blocks):
            stride = self.stage_strides[self._block_stages[i]]
            side = math.ceil(img_size / stride)
            if blk.window_size == 0 and side > MAX_GLOBAL_ATTENTION_SIDE:
                raise ValueError(
                    f"window_block_indexes: block {i} has global attention at stride {stride}, "
                    f"where img_size={img_size} gives a {side}x{side} map. Global attention is "
                    f"allowed only on maps of at most {MAX_GLOBAL_ATTENTION_SIDE}x"
                    f"{MAX_GLOBAL_ATTENTION_SIDE} tokens (img_size / stride <= "
                    f"{MAX_GLOBAL_ATTENTION_SIDE}): add {i} to window_block_indexes (with a "
                    "window_size), or move it to a later stage with stage_depths"
                )

    @torch.no_grad()
    def _size_global_rel_pos_tables(self, img_size: int, patch_size: int) -> None:
        """detectron2 sizes every global block's tables for the 1/patch_size map; here each gets
        its own stage's map at ``img_size`` (its initial values resampled)."""
        for i, blk in enumerate(self.blocks):
            stride = self.stage_strides[self._block_stages[i]]
            if blk.window_size > 0 or not blk.attn.use_rel_pos or stride == patch_size:
                continue
            length = 2 * math.ceil(img_size / stride) - 1
            blk.attn.rel_pos_h = nn.Parameter(resize_rel_pos(blk.attn.rel_pos_h, length))
            blk.attn.rel_pos_w = nn.Parameter(resize_rel_pos(blk.attn.rel_pos_w, length))

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """
        Names (fnmatch patterns) trained without weight decay besides 1-D tensors, read by timm's
        optimizers and ``hpvit_d2.solver``: the position embedding (ViTDet's and MAE's recipe),
        and the pooling layers: a conv pool starts as the average, and decay would pull it towards
        zero, shrinking the stream the next stage's pre-trained blocks expect.
        """
        return {"pos_embed", "pools.*"}

    def layer_id(self, name: str) -> int:
        """
        Depth of parameter ``name`` for layer-wise lr decay: patch and position embeddings 0,
        block ``i`` at ``i + 1`` (as ``get_vit_lr_decay_rate``), pooling layer ``k`` at the layer
        of the first block of the stage it feeds (that stage's input layer), the rest ``depth + 1``.
        """
        if name.startswith(("patch_embed.", "pos_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        if name.startswith("pools."):
            return sum(self.stage_depths[: int(name.split(".")[1]) + 1]) + 1
        return len(self.blocks) + 1

    @property
    def use_act_checkpoint(self) -> Union[bool, Sequence[int]]:
        """Activations recomputed in backward: True (every stage), False, or the stages listed."""
        return self._act_checkpoint

    @use_act_checkpoint.setter
    def use_act_checkpoint(self, value: Union[bool, Sequence[int]]) -> None:
        stages = range(len(self.stage_depths))
        chosen = frozenset(stages if value is True else () if value is False
                           else (int(k) for k in value))
        if not chosen <= set(stages):
            raise ValueError(f"use_act_checkpoint={value!r}: stages are 0..{len(stages) - 1} "
                             "(or True / False for all / none)")
        self._act_checkpoint, self._recomputed_stages = value, chosen

    @property
    def size_divisibility(self) -> int:
        return self.stage_strides[-1]

    def forward(self, x: torch.Tensor):
        """(B, in_chans, H, W) -> {``scale{n}``: (B, embed_dim, ceil(H / 2**n), ceil(W / 2**n))}."""
        x = self.patch_embed(x)  # (B, H / patch_stride, W / patch_stride, C)
        if self.pos_embed is not None:  # in place: one map in memory, not two
            x += resized_abs_pos(self.pos_embed, self.pretrain_use_cls_token, x.shape[1:3])
        training = self.training and torch.is_grad_enabled()
        outputs = {}
        first = 0
        for stage, depth in enumerate(self.stage_depths):
            if stage > 0:
                x = self.pools[stage - 1](x)
            recompute = training and stage in self._recomputed_stages
            for blk in self.blocks[first : first + depth]:
                x = recomputed_block(blk, x) if recompute else blk(x)
            first += depth
            if self.stage_names[stage] in self._out_features:
                outputs[self.stage_names[stage]] = x.permute(0, 3, 1, 2)
            if stage == self._last_stage:
                break
        return outputs


def recomputed_block(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """
    ``blk(x)`` with its activations recomputed in backward; a window block without a residual
    conv in row bands (:mod:`.bands`), each recomputed on its own. x: (B, H, W, C).
    """
    ws = blk.window_size
    pieces = [] if ws == 0 or blk.use_residual_block else list(
        row_bands(x, RECOMPUTE_BAND_TOKENS, ws))
    if len(pieces) <= 1:
        return checkpoint(blk, x, use_reentrant=False)
    return torch.cat([checkpoint(blk, band, use_reentrant=False) for band in pieces], dim=1)


class RowMajorPatchEmbed(PatchEmbed):
    """detectron2's ``PatchEmbed`` with a contiguous (B, H', W', C) output: given the image
    channels-last, the convolution writes the map in that layout, so the blocks read and write
    contiguous memory (detectron2 returns a permuted view)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1).contiguous()


def find_vit_backbone(model: nn.Module):
    """(prefix, module) of the first detectron2 ViT (HPViT included) in ``model``'s modules; prefix
    '' if it is one. Raises ValueError if there is none."""
    for name, module in model.named_modules():
        if isinstance(module, ViT):
            return (name + "." if name else ""), module
    raise ValueError(f"{type(model).__name__} contains no HPViT or detectron2 ViT backbone")
