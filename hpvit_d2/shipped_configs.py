"""
The configs shipped in the package (``hpvit_d2/configs``, also ``configs/`` in a source checkout):
their names, a name or path resolved to a file, and the detection configs that fit a plain ViT's
geometry (for the loaders' error messages).
"""
import os
from pathlib import Path
from typing import List

from detectron2.config import LazyConfig

from .overrides import ConfigError

__all__ = ["CONFIG_ROOT", "ConfigNotFoundError", "configs_fitting", "get_config_file", "list_configs"]

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
    import difflib

    shipped = list_configs()
    close = difflib.get_close_matches(name, shipped, n=3, cutoff=0.6)
    hint = (f"did you mean {' or '.join(close)}?" if close else
            f"shipped: {', '.join(shipped)}")
    raise ConfigNotFoundError(f"config {config_path!r}: no such file, nor a shipped config; {hint}")


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
