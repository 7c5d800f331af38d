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
import os
from pathlib import Path
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from detectron2.config import LazyConfig, instantiate

from .checkpoint import HPViTCheckpointer
from .overrides import ConfigError, apply_overrides

__all__ = ["CONFIG_ROOT", "ConfigError", "ConfigNotFoundError", "build_model", "check_device",
           "configs_fitting", "get", "get_config", "get_config_file", "list_configs"]

logger = logging.getLogger(__name__)

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"


class ConfigNotFoundError(ConfigError, FileNotFoundError):
    """A config path or name that is neither a file nor a shipped config."""


def list_configs() -> List[str]:
    """Names of the shipped configs (paths under ``CONFIG_ROOT``), without the shared ``common/``."""
    return sorted(str(p.relative_to(CONFIG_ROOT)) for p in CONFIG_ROOT.rglob("*")
                  if p.suffix in (".py", ".yaml") and "common" not in p.relative_to(CONFIG_ROOT).parts
                  and not p.stem.endswith("common") and p.name != "__init__.py")


def get_config_file(config_path: str) -> str:
    """
    Absolute path of ``config_path``: an existing file as given, else a shipped config by name
    (``mask_rcnn_hpvit_tiny.py``, ``cityscapes/mask_rcnn_hpvit_b.py``, with or without ``configs/``).

    Raises:
        ConfigNotFoundError: neither exists; the message lists the shipped configs.
    """
    if os.path.isfile(config_path):
        return os.path.abspath(config_path)
    name = config_path[len("configs/"):] if config_path.startswith("configs/") else config_path
    candidate = CONFIG_ROOT / name
    if candidate.is_file():
        return str(candidate)
    raise ConfigNotFoundError(
        f"config {config_path!r}: no such file, nor a shipped config; shipped: "
        f"{', '.join(list_configs())}")


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


def _vit_node(cfg):
    """The ViT config node: FPN's ``bottom_up``, SimpleFeaturePyramid's ``net``, or the backbone
    itself when it is a ViT (the semantic segmentation configs' HPViT)."""
    backbone = cfg.model.get("backbone", {}) or {}
    for key in ("bottom_up", "net"):
        if key in backbone:
            return backbone[key]
    return backbone if "embed_dim" in backbone else None


def configs_fitting(geometry) -> List[str]:
    """Shipped detection configs whose backbone ViT has this (width, depth, patch size)."""
    import inspect

    from detectron2.modeling import ViT

    defaults = {k: p.default for k, p in inspect.signature(ViT.__init__).parameters.items()}
    names = []
    for name in list_configs():
        if not name.endswith(".py"):
            continue
        try:
            node = _vit_node(LazyConfig.load(str(CONFIG_ROOT / name)))
        except Exception:  # a config whose imports fail here cannot fit anything
            continue
        if node is None:
            continue
        values = tuple(node.get(k, defaults[k]) for k in ("embed_dim", "depth", "patch_size"))
        if values == tuple(geometry):
            names.append(name)
    return names


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
