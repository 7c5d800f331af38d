"""Reusing plain-ViT checkpoints: safe reading, conversion with a report, atomic writing."""
from .convert import (
    ConversionReport,
    convert_plain_vit,
    extract_state_dict,
    find_vit_backbone,
    resize_abs_pos,
    resize_rel_pos,
)
from .io import CheckpointError, load_checkpoint_file, safe_pickle_load, save_atomic
from .loading import load_plain_vit

__all__ = [
    "CheckpointError",
    "ConversionReport",
    "convert_plain_vit",
    "extract_state_dict",
    "find_vit_backbone",
    "load_checkpoint_file",
    "load_plain_vit",
    "resize_abs_pos",
    "resize_rel_pos",
    "safe_pickle_load",
    "save_atomic",
]
