"""Load a plain-ViT checkpoint file into a model's ViT backbone, loudly."""
import logging

import torch.nn as nn

from .convert import ConversionReport, convert_plain_vit, find_vit_backbone
from .io import CheckpointError, load_checkpoint_file

__all__ = ["load_plain_vit"]

logger = logging.getLogger(__name__)


def load_plain_vit(model: nn.Module, path: str, strict: bool = False) -> ConversionReport:
    """
    Convert the checkpoint at ``path`` and load it into the HPViT/ViT inside ``model``.

    The report is logged. With ``strict``, any pre-trained backbone weight (block, patch
    embedding, position embedding) missing or mismatched raises CheckpointError before anything
    is loaded.
    """
    prefix, backbone = find_vit_backbone(model)
    state, report = convert_plain_vit(load_checkpoint_file(path), backbone)
    logger.info("Loading %s into %s:\n%s", path, prefix or type(model).__name__, report.summary())
    if strict and report.missing_pretrained:
        raise CheckpointError(
            f"{path}: strict loading: {len(report.missing_pretrained)} pre-trained backbone weights "
            f"missing or mismatched, e.g. {report.missing_pretrained[:3]}"
        )
    backbone.load_state_dict(state, strict=False)
    return report
