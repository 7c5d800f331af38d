"""
Model-zoo style access to this project's LazyConfigs: a config by name, a built model with weights.

    from hpvit_d2 import model_zoo
    cfg = model_zoo.get_config("mask_rcnn_hpvit_tiny.py")
    model = model_zoo.get("mask_rcnn_hpvit_tiny.py", weights="output/hpvit_tiny/model_final.pth")

Config names are paths, or paths relative to the repository's ``configs/`` directory. Weights are a
local file or a URL (``https://``, ``detectron2://``: fetched and cached by iopath); they are loaded
through :func:`hpvit_d2.engine.weights.load_weights`, which prints what was loaded, converted and
left at initialisation.
"""
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn as nn
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.file_io import PathManager

from .engine.weights import load_weights

__all__ = ["CONFIG_ROOT", "build_model", "get", "get_config", "get_config_file"]

logger = logging.getLogger(__name__)

# The repository's configs/ (present in a source checkout and an editable install).
CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"


def get_config_file(config_path: str) -> str:
    """
    Absolute path of ``config_path``: an existing file as given, else relative to ``CONFIG_ROOT``.

    Raises:
        FileNotFoundError: neither exists; the message lists the configs that do.
    """
    if os.path.isfile(config_path):
        return os.path.abspath(config_path)
    candidate = CONFIG_ROOT / config_path
    if candidate.is_file():
        return str(candidate)
    if CONFIG_ROOT.is_dir():
        known = sorted(str(p.relative_to(CONFIG_ROOT)) for p in CONFIG_ROOT.rglob("*.py")
                       if "common" not in p.relative_to(CONFIG_ROOT).parts)
        hint = f"configs in {CONFIG_ROOT}: {', '.join(known)}"
    else:
        hint = (f"{CONFIG_ROOT} does not exist (hpvit_d2 is not installed from a source checkout): "
                "pass the path of a config file")
    raise FileNotFoundError(f"config_path={config_path!r}: no such file, nor under {CONFIG_ROOT}; "
                            f"{hint}")


def get_config(config_path: str, overrides: Sequence[str] = ()):
    """
    Load a LazyConfig by path or by name under ``configs/``, applying ``KEY=VALUE`` overrides.

    Returns:
        omegaconf.DictConfig with ``model``, ``dataloader``, ``train``, ``optimizer``,
        ``lr_multiplier``.
    """
    cfg = LazyConfig.load(get_config_file(config_path))
    return LazyConfig.apply_overrides(cfg, list(overrides))


def _is_url(path: str) -> bool:
    return "://" in path and not os.path.exists(path)


def _check_weights_reachable(weights: str) -> None:
    """Fail early, naming ``weights``, if it is a missing file or a URL that cannot be fetched."""
    path = weights.split("?", 1)[0]  # detectron2's "?matching_heuristics=True" suffix
    if _is_url(path):
        try:
            PathManager.get_local_path(path)
        except Exception as e:
            raise OSError(
                f"weights={weights!r} cannot be downloaded ({type(e).__name__}: {e}). Without "
                "network access, download the file on another machine and pass its local path as "
                "weights (or --weights / train.init_checkpoint)"
            ) from None
    elif not os.path.isfile(path):
        raise FileNotFoundError(
            f"weights={weights!r}: no such file. Pass a checkpoint written by training "
            "(output/.../model_final.pth), a plain ViT checkpoint, or a URL"
        )


def _check_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but CUDA is not available: use device='cpu'")
    return dev


def build_model(cfg, weights: Optional[str] = None, device: str = "cpu",
                strict: bool = False) -> nn.Module:
    """
    Instantiate ``cfg.model`` on ``device``, load ``weights`` (if given) and switch to eval mode.

    The load report of :func:`~hpvit_d2.engine.weights.load_weights` is printed. Without weights
    the model keeps its random initialisation (a warning says so).

    Raises:
        FileNotFoundError / OSError: ``weights`` is a missing file or an unreachable URL.
        hpvit_d2.checkpoint.CheckpointError: unreadable checkpoint, or weights missing with
            ``strict``.
    """
    dev = _check_device(device)
    if weights:
        _check_weights_reachable(weights)
    model = instantiate(cfg.model)
    if weights:
        report = load_weights(model, weights, strict=strict)
        print(report)
    else:
        logger.warning("No weights given: the model keeps its random initialisation")
    return model.to(dev).eval()


def get(config_path: str, weights: Optional[str] = None, device: str = "cpu",
        strict: bool = False, overrides: Sequence[str] = ()) -> nn.Module:
    """
    A model built from a config of this project, in eval mode, with ``weights`` loaded.

    Args:
        config_path (str): a config file, or its path relative to ``configs/``
            (e.g. ``"mask_rcnn_hpvit_tiny.py"``).
        weights (str or None): checkpoint path or URL: a trained detector (the model's own keys)
            or a plain ViT checkpoint (converted into the backbone). None: random initialisation.
        device (str): "cpu", "cuda", "cuda:1"...
        strict (bool): any model (detector checkpoint) or pre-trained backbone (plain ViT)
            weight missing from the checkpoint is an error instead of a line in the report.
        overrides (list[str]): ``KEY=VALUE`` config overrides, as on the command line.
    """
    return build_model(get_config(config_path, overrides), weights, device=device, strict=strict)
