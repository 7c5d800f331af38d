"""
yacs config keys for HPViT (MODEL.HPVIT.*), for users of detectron2's DefaultTrainer.

One recipe, one home: the defaults :func:`add_hpvit_config` gives MODEL.HPVIT.*, the FPN and the
optimizer keys are read from the LazyConfig ``configs/mask_rcnn_hpvit_b.py`` (its backbone,
``configs/common/backbones.py``'s ``hpvit_b_fpn``, and its optimizer), so a yaml file states only
what differs from HPViT-B (e.g. ``EMBED_DIM``/``NUM_HEADS`` for a smaller ViT). The builders are
in ``hpvit_d2.modeling.build``.
"""
import inspect
import math
from typing import Dict

from detectron2.config import CfgNode as CN
from detectron2.config import LazyConfig
from detectron2.modeling import ViT
from omegaconf import ListConfig, OmegaConf

from .modeling.build import HPVIT_YACS_ARGUMENTS, hpvit_kwargs_from_cfg
from .modeling.hpvit import HPViT
from .shipped_configs import get_config_file

__all__ = ["HPVIT_YACS_ARGUMENTS", "RECIPE", "add_hpvit_config", "hpvit_kwargs_from_cfg"]

# The LazyConfig the yacs defaults are read from.
RECIPE = "mask_rcnn_hpvit_b.py"


def _class_defaults() -> Dict[str, object]:
    """The defaults of HPViT and of the detectron2 ViT arguments it passes on."""
    defaults = {}
    for cls in (ViT, HPViT):
        for name, p in inspect.signature(cls.__init__).parameters.items():
            if p.default is not inspect.Parameter.empty:
                defaults[name] = p.default
    return defaults


def _yacs_value(value):
    """A plain Python value (omegaconf's ListConfig becomes a list)."""
    if isinstance(value, ListConfig):
        value = OmegaConf.to_object(value)
    return list(value) if isinstance(value, (list, tuple)) else value


def add_hpvit_config(cfg: CN) -> CN:
    """
    Add MODEL.HPVIT.* (the HPViT arguments and NORM_EPS, the LayerNorm eps), MODEL.FPN.SQUARE_PAD
    and SOLVER.{OPTIMIZER, LR_DECAY_RATE, BETAS}, and set them and
    MODEL.FPN.{IN_FEATURES, OUT_CHANNELS, NORM} to :data:`RECIPE`'s values (HPViT's class
    defaults where the LazyConfig leaves an argument out). Returns ``cfg``.
    """
    lazy = LazyConfig.load(get_config_file(RECIPE))
    backbone, trunk = lazy.model.backbone, lazy.model.backbone.bottom_up
    defaults = _class_defaults()
    cfg.MODEL.HPVIT = CN()
    for name in HPVIT_YACS_ARGUMENTS:
        value = trunk.get(name, defaults[name])
        if name == "out_features" and value is None:  # all stages, named by stride
            stride, stages = trunk.get("patch_stride", defaults["patch_stride"]), \
                len(trunk.get("stage_depths", defaults["stage_depths"]))
            value = [f"scale{int(math.log2(stride)) + k}" for k in range(stages)]
        setattr(cfg.MODEL.HPVIT, name.upper(), _yacs_value(value))
    cfg.MODEL.HPVIT.NORM_EPS = trunk.norm_layer.keywords["eps"] if "norm_layer" in trunk else 1e-6
    cfg.MODEL.FPN.IN_FEATURES = _yacs_value(backbone.in_features)
    cfg.MODEL.FPN.OUT_CHANNELS = backbone.out_channels
    cfg.MODEL.FPN.NORM = backbone.norm
    cfg.MODEL.FPN.SQUARE_PAD = backbone.get("square_pad", 0)
    # AdamW with layer-wise lr decay (hpvit_d2.engine.yacs_train.Trainer reads these).
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.LR_DECAY_RATE = lazy.optimizer.params.lr_decay_rate
    cfg.SOLVER.BETAS = tuple(_yacs_value(lazy.optimizer.betas))
    return cfg
