"""
Optimizer parameter groups for ViT detectors: ViTDet's layer-wise lr decay, with an explicit place
for HPViT's pooling layers, and no weight decay where the model says so.

- lr: detectron2's ``get_vit_lr_decay_rate`` for a plain ``ViT``; ``HPViT.layer_id`` for HPViT,
  which places the pooling layer ``pools.{k}`` at the layer of the first block of the stage it
  feeds (that stage's input layer, as the patch embedding is the first stage's).
- weight decay: the optimizer's, except norms (``weight_decay_norm``), ``overrides`` by parameter
  name, and what the ViT's ``no_weight_decay()`` names (HPViT: the position embedding and the
  pooling layers; detectron2's ``ViT``, which has no such method: ViTDet's ``pos_embed``).
"""
import fnmatch
from functools import partial
from typing import Any, Dict, List, Optional

import torch
from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate
from detectron2.solver.build import get_default_optimizer_params, reduce_param_groups

from .modeling.hpvit import find_vit_backbone

__all__ = ["hpvit_lr_decay_rate", "no_weight_decay_names", "vit_optimizer_params"]


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


def no_weight_decay_names(vit: torch.nn.Module) -> List[str]:
    """Names (fnmatch patterns, relative to ``vit``) trained without weight decay: the model's
    ``no_weight_decay()``, or ViTDet's ``pos_embed`` for a ViT without one."""
    names = vit.no_weight_decay() if hasattr(vit, "no_weight_decay") else {"pos_embed"}
    return sorted(names)


def vit_optimizer_params(
    model: torch.nn.Module,
    base_lr: float,
    lr_decay_rate: float = 1.0,
    weight_decay_norm: Optional[float] = 0.0,
    overrides: Optional[Dict[str, Dict[str, float]]] = None,
) -> List[Dict[str, Any]]:
    """
    Parameter groups for ``torch.optim.AdamW(params, lr, weight_decay)`` (``optimizer.params`` in
    the configs), read from the model's ViT, so the same call serves HPViT and ViTDet of any size.

    Args:
        model: a detector with an HPViT or detectron2 ViT in it.
        base_lr (float): the optimizer's lr.
        lr_decay_rate (float): layer-wise lr decay (ViTDet-B: 0.7, ViT-L: 0.8).
        weight_decay_norm (float or None): weight decay of normalisation layers.
        overrides (dict): hyper-parameters by parameter name, as detectron2's; they take
            precedence over :func:`no_weight_decay_names`.
    Returns:
        list[dict]: parameter groups with ``lr`` (and ``weight_decay`` where it differs).
    """
    prefix, vit = find_vit_backbone(model)
    groups = get_default_optimizer_params(
        model,
        base_lr=base_lr,
        weight_decay_norm=weight_decay_norm,
        lr_factor_func=partial(hpvit_lr_decay_rate, lr_decay_rate=lr_decay_rate, vit=vit,
                               prefix=prefix),
        overrides=overrides,
    )
    patterns = no_weight_decay_names(vit)
    exempt = {id(p) for name, p in vit.named_parameters()
              if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
              and name.rsplit(".", 1)[-1] not in (overrides or {})}
    single = [dict(group, params=[p]) for group in groups for p in group["params"]]
    for group in single:
        if id(group["params"][0]) in exempt:
            group["weight_decay"] = 0.0
    return reduce_param_groups(single)
