"""
Optimizer parameter groups for ViT detectors: ViTDet's layer-wise lr decay, with an explicit place
for HPViT's pooling layers.

- lr: detectron2's ``get_vit_lr_decay_rate`` (patch and position embeddings at layer 0, block
  ``i`` at layer ``i + 1``, everything outside the backbone at full lr). The pooling layer
  ``pools.{k}``, which feeds stage ``k + 1``, sits at the layer of the first block of that stage:
  it is that stage's input layer, as the patch embedding is the first stage's.
- weight decay: the optimizer's, except norms (``weight_decay_norm``), the position embedding
  (``pos_embed_weight_decay``, default 0, as ViTDet and MAE), ``overrides`` by parameter name,
  and the pooling layers (``pool_weight_decay``, default 0).
  A pooling conv starts as the 2x2 average; weight decay pulls it towards zero, not towards the
  average, and so shrinks the residual stream entering the next stage, which no pre-trained
  block was trained to expect. It is free to move where the gradient takes it, and only there.
"""
from functools import partial
from typing import Any, Dict, List, Optional

import torch
from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate
from detectron2.solver.build import get_default_optimizer_params, reduce_param_groups

from .modeling.hpvit import find_vit_backbone

__all__ = ["hpvit_lr_decay_rate", "vit_optimizer_params"]


def hpvit_lr_decay_rate(name: str, lr_decay_rate: float, vit: torch.nn.Module, prefix: str) -> float:
    """
    lr factor of parameter ``name`` (a full name) for layer-wise decay by the layer of ``vit``
    (the ViT at ``prefix`` of the model): ``HPViT.layer_id`` (which places the pooling layers),
    detectron2's ``get_vit_lr_decay_rate`` for its plain ``ViT``; parameters outside the ViT but
    in the backbone (pyramid) and everything else at full lr.
    """
    num_layers = len(vit.blocks)
    if not hasattr(vit, "layer_id") or not name.startswith(prefix):
        return get_vit_lr_decay_rate(name, lr_decay_rate=lr_decay_rate, num_layers=num_layers)
    return lr_decay_rate ** (num_layers + 1 - vit.layer_id(name[len(prefix):]))


def vit_optimizer_params(
    model: torch.nn.Module,
    base_lr: float,
    lr_decay_rate: float = 1.0,
    weight_decay_norm: Optional[float] = 0.0,
    pool_weight_decay: Optional[float] = 0.0,
    pos_embed_weight_decay: Optional[float] = 0.0,
    overrides: Optional[Dict[str, Dict[str, float]]] = None,
) -> List[Dict[str, Any]]:
    """
    Parameter groups for ``torch.optim.AdamW(params, lr, weight_decay)`` (used as
    ``optimizer.params`` in the configs): the depth and stages are read from the model's ViT, so
    the same call serves HPViT and ViTDet of any size.

    Args:
        model: a detector with an HPViT or detectron2 ViT in it.
        base_lr (float): the optimizer's lr.
        lr_decay_rate (float): layer-wise lr decay (ViTDet-B: 0.7, ViT-L: 0.8).
        weight_decay_norm (float or None): weight decay of normalisation layers.
        pool_weight_decay (float or None): weight decay of the pooling layers (None: the
            optimizer's).
        pos_embed_weight_decay (float or None): weight decay of the absolute position
            embedding ``pos_embed`` (None: the optimizer's).
        overrides (dict): hyper-parameters by parameter name, as detectron2's (they take
            precedence over ``pos_embed_weight_decay``).
    Returns:
        list[dict]: parameter groups with ``lr`` (and ``weight_decay`` where it differs).
    """
    prefix, vit = find_vit_backbone(model)
    if pos_embed_weight_decay is not None:
        overrides = {"pos_embed": {"weight_decay": pos_embed_weight_decay}, **(overrides or {})}
    groups = get_default_optimizer_params(
        model,
        base_lr=base_lr,
        weight_decay_norm=weight_decay_norm,
        lr_factor_func=partial(hpvit_lr_decay_rate, lr_decay_rate=lr_decay_rate, vit=vit,
                               prefix=prefix),
        overrides=overrides,
    )
    if pool_weight_decay is None or not hasattr(vit, "pools"):
        return groups
    pool_params = {id(p) for p in vit.pools.parameters()}
    single = [dict(group, params=[p]) for group in groups for p in group["params"]]
    for group in single:
        if id(group["params"][0]) in pool_params:
            group["weight_decay"] = pool_weight_decay
    return reduce_param_groups(single)
