"""
Model-zoo style access to this project's LazyConfigs: a config by name, a built model with weights.

    from hpvit_d2 import model_zoo
    cfg = model_zoo.get_config("mask_rcnn_hpvit_tiny.py", ["train.max_iter=10"])
    model = model_zoo.get("mask_rcnn_hpvit_tiny.py", weights="output/hpvit_tiny/model_final.pth")

Config names are paths, or names under the configs shipped in the package (``hpvit_d2/configs``,
also reachable as ``configs/`` in a source checkout). Weights are a local file, a Hugging Face
model directory, or a URL (``https://``, ``detectron2://``: fetched and cached by iopath); they are
read by :class:`hpvit_d2.checkpoint.HPViTCheckpointer`, strictly by default.
"""
import logging
from typing import Optional, Sequence

import torch
import torch.nn as nn
from detectron2.config import LazyConfig, instantiate

from .checkpoint import HPViTCheckpointer
from .overrides import ConfigError, apply_overrides
from .shipped_configs import (
    CONFIG_ROOT,
    ConfigNotFoundError,
    configs_fitting,
    get_config_file,
    list_configs,
)

__all__ = ["CONFIG_ROOT", "ConfigError", "ConfigNotFoundError", "build_model", "check_device",
           "configs_fitting", "get", "get_config", "get_config_file", "list_configs"]

logger = logging.getLogger(__name__)

def get_config(config_path: str, overrides: Sequence[str] = ()):
    """
    Load a LazyConfig by path or name, with ``KEY=VALUE`` overrides (checked: a key that does not
    exist is an error naming the closest one; ``+KEY=VALUE`` adds a new key).

    Returns:
        omegaconf.DictConfig with ``model``, ``dataloader``, ``train``, ``optimizer``,
        ``lr_multiplier``.
    """
    path = get_config_file(config_path)
    try:
        cfg = LazyConfig.load(path)
    except Exception as e:
        raise ConfigError(f"config {path}: cannot be loaded ({type(e).__name__}: {e})") from e
    return apply_overrides(cfg, overrides)


def check_device(device: str) -> torch.device:
    """``torch.device(device)``, refused with a ConfigError when it is CUDA on a machine without one."""
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"device {device!r} is not a device ({e}); use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine; use "
                          "train.device=cpu (or device='cpu')")
    return dev


def build_model(cfg, weights: Optional[str] = None, device: str = "cpu",
                strict: bool = True, verbose: bool = True) -> nn.Module:
    """
    Instantiate ``cfg.model`` on ``device``, load ``weights`` and switch to eval mode.

    With ``strict`` (default) every model tensor must come from ``weights``: a checkpoint of
    another model, a plain ViT (backbone only) or a partial one is a CheckpointError naming the
    cause. ``strict=False`` loads what fits and reports the rest. Without weights the model keeps
    its random initialisation (a warning says so). The load report is printed when ``verbose``.
    """
    dev = check_device(device)
    model = instantiate(cfg.model)
    if weights:
        checkpointer = HPViTCheckpointer(model, require="everything" if strict else "nothing")
        checkpointer.load(weights)
        if verbose:
            print(checkpointer.report.summary())
    else:
        logger.warning("No weights given: the model keeps its random initialisation")
    return model.to(dev).eval()


def get(config_path: str, weights: Optional[str] = None, device: str = "cpu",
        strict: bool = True, overrides: Sequence[str] = ()) -> nn.Module:
    """
    A model built from a config, in eval mode, with ``weights`` loaded.

    Args:
        config_path (str): a config file, or a shipped config's name (``"mask_rcnn_hpvit_tiny.py"``).
        weights (str or None): a trained detector checkpoint (path, URL or Hugging Face directory
            of a plain ViT with ``strict=False``). None: random initialisation.
        device (str): "cpu", "cuda", "cuda:1"...
        strict (bool): refuse weights that do not fill the whole model (see build_model).
        overrides (list[str]): ``KEY=VALUE`` config overrides, as on the command line.
    """
    return build_model(get_config(config_path, overrides), weights, device=device, strict=strict)
