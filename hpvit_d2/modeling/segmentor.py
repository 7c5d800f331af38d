"""
``semantic_segmentor``: detectron2's ``SemanticSegmentor`` whose head is built for its backbone.

detectron2's LazyConfigs state a sem-seg head's ``input_shape`` (feature names, channels,
strides) by hand. Here the head's arguments are given without it and the head is built on
``backbone.output_shape()``, so one head config serves any backbone: HPViT (``scale2``..``scale5``,
``embed_dim`` channels) and ViTDet's simple feature pyramid (``p2``..``p5``, ``out_channels``)
alike, and an HPViT config and its plain-ViT twin differ only in ``model.backbone``::

    model = L(semantic_segmentor)(
        backbone=L(HPViT)(...),
        sem_seg_head=dict(num_classes=150, channels=768),   # UperNetHead arguments
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )

``cfg.model.sem_seg_head.num_classes=19`` overrides work as usual. A head built elsewhere
(``sem_seg_head=L(UperNetHead)(input_shape=..., ...)`` or any module) is used as it is.
"""
from typing import Any, Mapping, Optional, Sequence, Union

import torch.nn as nn
from detectron2.modeling import Backbone, SemanticSegmentor
from omegaconf import DictConfig, OmegaConf

from .upernet import UperNetHead

__all__ = ["semantic_segmentor"]


def semantic_segmentor(
    *,
    backbone: Backbone,
    sem_seg_head: Union[nn.Module, Mapping[str, Any]],
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    in_features: Optional[Sequence[str]] = None,
) -> SemanticSegmentor:
    """
    Args:
        backbone: a detectron2 ``Backbone`` (HPViT, SimpleFeaturePyramid, FPN, ...).
        sem_seg_head: a head module, or the keyword arguments of :class:`UperNetHead` except
            ``input_shape``, which is ``backbone.output_shape()`` (restricted to ``in_features``).
        pixel_mean, pixel_std: per-channel input normalisation, in the input's channel order.
        in_features: backbone outputs the head reads; None: all of them.
    Returns:
        ``detectron2.modeling.SemanticSegmentor`` (training: losses; inference:
        ``[{"sem_seg": (num_classes, H, W) logits}]`` at each input's ``height`` x ``width``).
    """
    if not isinstance(sem_seg_head, nn.Module):
        kwargs = (OmegaConf.to_container(sem_seg_head, resolve=True)
                  if isinstance(sem_seg_head, DictConfig) else dict(sem_seg_head))
        shapes = backbone.output_shape()
        if in_features is not None:
            unknown = [f for f in in_features if f not in shapes]
            if unknown:
                raise ValueError(f"in_features {unknown} are not outputs of the backbone "
                                 f"({sorted(shapes)})")
            shapes = {f: shapes[f] for f in in_features}
        sem_seg_head = UperNetHead(input_shape=shapes, **kwargs)
    return SemanticSegmentor(backbone=backbone, sem_seg_head=sem_seg_head,
                             pixel_mean=pixel_mean, pixel_std=pixel_std)
