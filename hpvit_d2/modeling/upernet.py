"""
UperNet: the semantic segmentation head of the ViT papers (BEiT, MAE, ViTDet's comparisons),
as a detectron2 sem-seg head (``SEM_SEG_HEADS_REGISTRY``, used inside ``SemanticSegmentor``).

From the backbone's maps, finest first (strides s, 2s, 4s, 8s; HPViT gives 1/4..1/32):

1. a pyramid pooling module (PPM) on the coarsest map: average pooling to ``pool_scales`` grids,
   a 1x1 conv each, upsampled back and concatenated with the map, then a 3x3 conv;
2. FPN fusion: 1x1 lateral convs on the other maps, a top-down path (upsample + add) from the
   PPM output, a 3x3 conv on each fused map;
3. every level upsampled to the finest, concatenated, a 3x3 conv, dropout and a 1x1 classifier.

Optionally an auxiliary FCN head (one 3x3 conv, dropout, 1x1 classifier) on one level adds a
weighted loss in training (BEiT/MAE: third level, weight 0.4); it is not used at inference.

Losses are detectron2's sem-seg loss: logits upsampled (bilinear) to the target size, cross
entropy ignoring ``ignore_value``; an image batch with no labelled pixel gives a zero loss (not
NaN). At inference the logits come back upsampled by the finest stride, as ``SemSegFPNHead``
returns them (``SemanticSegmentor`` then crops the padding and resizes to the output size).

Conv + norm + ReLU units name their norm ``norm_layer``, not ``norm``: detectron2's
``?matching_heuristics=True`` loading matches checkpoint keys by suffix, and a pre-trained ViT's
final ``norm.weight`` would otherwise be matched to every head norm of the same width.
"""
from typing import Dict, Optional, Sequence, Union

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

__all__ = ["ConvNormAct", "PyramidPooling", "UperNetHead", "semantic_seg_loss"]


class ConvNormAct(nn.Module):
    """Conv2d (no bias when normalised) -> norm -> ReLU: (B, in, H, W) -> (B, out, H', W')."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 norm: Union[str, nn.Module, None] = "BN"):
        """
        Args:
            norm: a detectron2 norm name ("BN", "SyncBN", "GN", "LN", "" for none) or callable.
        """
        super().__init__()
        norm_layer = get_norm(norm, out_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                              bias=norm_layer is None)
        self.norm_layer = norm_layer if norm_layer is not None else nn.Identity()
        weight_init.c2_msra_fill(self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm_layer(self.conv(x)), inplace=True)


class PyramidPooling(nn.Module):
    """
    PSPNet's pyramid pooling module: (B, C_in, H, W) -> (B, C_in + len(scales) * channels, H, W),
    the input concatenated with each pooled-convolved-upsampled branch.
    """

    def __init__(self, in_channels: int, channels: int, pool_scales: Sequence[int], norm):
        super().__init__()
        self.pool_scales = tuple(int(s) for s in pool_scales)
        self.branches = nn.ModuleList(ConvNormAct(in_channels, channels, 1, norm)
                                      for _ in self.pool_scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [x]
        for scale, branch in zip(self.pool_scales, self.branches):
            pooled = branch(F.adaptive_avg_pool2d(x, scale))
            outs.append(F.interpolate(pooled, size=size, mode="bilinear", align_corners=False))
        return torch.cat(outs, dim=1)


def semantic_seg_loss(logits: torch.Tensor, targets: torch.Tensor,
                      ignore_value: int) -> torch.Tensor:
    """
    Cross entropy of (B, C, h, w) logits, upsampled (bilinear) to the (B, H, W) targets' size,
    averaged over the pixels whose target is not ``ignore_value``; 0 (with a gradient path) when
    every pixel is ignored.
    """
    logits = logits.float()  # https://github.com/pytorch/pytorch/issues/48163
    if logits.shape[-2:] != targets.shape[-2:]:
        logits = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear",
                               align_corners=False)
    if not (targets != ignore_value).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets, reduction="mean", ignore_index=ignore_value)


@SEM_SEG_HEADS_REGISTRY.register()
class UperNetHead(nn.Module):
    """
    UperNet (PPM + FPN) semantic segmentation head; see the module docstring.

    ``forward(features, targets)`` returns ``(None, losses)`` in training (``loss_sem_seg`` and,
    with an auxiliary head, ``loss_sem_seg_aux``) and ``((B, num_classes, H, W) logits, {})`` at
    inference, where H, W are the finest input map's size times its stride.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        norm: Union[str, nn.Module, None] = "BN",
        dropout: float = 0.1,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        aux_in_index: Optional[int] = None,
        aux_channels: int = 256,
        aux_loss_weight: float = 0.4,
    ):
        """
        Args:
            input_shape: the backbone maps to use, name -> ShapeSpec(channels, stride); ordered by
                stride here (finest first). Typically ``backbone.output_shape()``.
            num_classes: classes predicted (the ignore value is not one of them).
            channels: width of every conv of the head (BEiT/MAE ViT-B: 768; UperNet: 512).
            pool_scales: output grids of the PPM's average pooling.
            norm: detectron2 norm name for the head's convs ("BN", "SyncBN", "GN", "").
            dropout: dropout (Dropout2d) before each classifier.
            ignore_value: target value excluded from the loss (and the padding value of targets).
            loss_weight: weight of the main loss.
            aux_in_index: position (in stride order) of the map the auxiliary FCN head reads;
                None: no auxiliary head (BEiT/MAE: 2, the 1/16 map).
            aux_channels: width of the auxiliary head's conv.
            aux_loss_weight: weight of the auxiliary loss.
        """
        super().__init__()
        if not input_shape:
            raise ValueError("UperNetHead: input_shape is empty; give the backbone's maps")
        ordered = sorted(input_shape.items(), key=lambda item: item[1].stride)
        self.in_features = [name for name, _ in ordered]
        in_channels = [shape.channels for _, shape in ordered]
        self.common_stride = ordered[0][1].stride
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight

        self.ppm = PyramidPooling(in_channels[-1], channels, pool_scales, norm)
        self.ppm_bottleneck = ConvNormAct(in_channels[-1] + len(pool_scales) * channels,
                                          channels, 3, norm)
        self.lateral_convs = nn.ModuleList(ConvNormAct(c, channels, 1, norm)
                                           for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvNormAct(channels, channels, 3, norm)
                                       for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvNormAct(len(in_channels) * channels, channels, 3, norm)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.predictor = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

        self.aux_in_index = aux_in_index
        self.aux_loss_weight = aux_loss_weight
        if aux_in_index is not None:
            if not -len(in_channels) <= aux_in_index < len(in_channels):
                raise ValueError(f"aux_in_index={aux_in_index}: the head has "
                                 f"{len(in_channels)} input maps ({self.in_features})")
            self.aux_head = nn.Sequential(
                ConvNormAct(in_channels[aux_in_index], aux_channels, 3, norm),
                nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
                nn.Conv2d(aux_channels, num_classes, kernel_size=1),
            )
            nn.init.normal_(self.aux_head[-1].weight, std=0.01)
            nn.init.zeros_(self.aux_head[-1].bias)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        """yacs: MODEL.SEM_SEG_HEAD.{IN_FEATURES, NUM_CLASSES, CONVS_DIM, NORM, IGNORE_VALUE,
        LOSS_WEIGHT} and, if present, POOL_SCALES, DROPOUT, AUX_IN_INDEX, AUX_CHANNELS,
        AUX_LOSS_WEIGHT."""
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "num_classes": head.NUM_CLASSES,
            "channels": head.CONVS_DIM,
            "norm": head.NORM,
            "ignore_value": head.IGNORE_VALUE,
            "loss_weight": head.LOSS_WEIGHT,
            "pool_scales": tuple(head.get("POOL_SCALES", (1, 2, 3, 6))),
            "dropout": head.get("DROPOUT", 0.1),
            "aux_in_index": head.get("AUX_IN_INDEX", None),
            "aux_channels": head.get("AUX_CHANNELS", 256),
            "aux_loss_weight": head.get("AUX_LOSS_WEIGHT", 0.4),
        }

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """
        Args:
            features: name -> (B, C_i, H_i, W_i) for every name of ``in_features``.
        Returns:
            (B, num_classes, H_0, W_0) logits at the finest map's resolution.
        """
        maps = [features[f] for f in self.in_features]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, maps[:-1])]
        laterals.append(self.ppm_bottleneck(self.ppm(maps[-1])))
        for i in range(len(laterals) - 1, 0, -1):  # top-down
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="bilinear",
                align_corners=False)
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [F.interpolate(x, size=size, mode="bilinear", align_corners=False)
                            for x in outs[1:]]
        fused = self.fpn_bottleneck(torch.cat(outs, dim=1))
        return self.predictor(self.dropout(fused))

    def forward(self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None):
        """
        Args:
            features: the backbone's maps (name -> (B, C, H_i, W_i)).
            targets: (B, H, W) int64 labels (padded with ``ignore_value``), for training.
        Returns:
            training: (None, {"loss_sem_seg": ..., ["loss_sem_seg_aux": ...]});
            inference: ((B, num_classes, H_0 * s, W_0 * s) logits, {}), s the finest stride.
        """
        logits = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError("UperNetHead: training needs targets (the 'sem_seg' of the inputs)")
            losses = {"loss_sem_seg":
                      semantic_seg_loss(logits, targets, self.ignore_value) * self.loss_weight}
            if self.aux_in_index is not None:
                aux = self.aux_head(features[self.in_features[self.aux_in_index]])
                losses["loss_sem_seg_aux"] = (
                    semantic_seg_loss(aux, targets, self.ignore_value) * self.aux_loss_weight)
            return None, losses
        logits = F.interpolate(logits, scale_factor=self.common_stride, mode="bilinear",
                               align_corners=False)
        return logits, {}
