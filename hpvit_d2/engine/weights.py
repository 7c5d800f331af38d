"""Load `train.init_checkpoint` (a plain ViT or a full detector checkpoint) and say what happened."""
import logging
from typing import List, Optional

import torch.nn as nn
from detectron2.checkpoint import DetectionCheckpointer

from ..checkpoint import (
    CheckpointError,
    convert_plain_vit,
    extract_state_dict,
    find_vit_backbone,
    load_checkpoint_file,
)

__all__ = ["load_weights"]

logger = logging.getLogger(__name__)


def _strip_query(path: str) -> str:
    # detectron2 reads "?matching_heuristics=True" from URLs; we match keys ourselves.
    return path.split("?", 1)[0]


def _is_detector_checkpoint(state, model: nn.Module) -> bool:
    """True if the checkpoint already uses the model's own key names (e.g. a trained detector)."""
    model_keys = set(model.state_dict())
    return len(model_keys & set(state)) >= 0.5 * len(model_keys)


def load_weights(model: nn.Module, path: str, strict: bool = False) -> Optional[str]:
    """
    Load ``path`` into ``model`` and return the load report (also logged).

    A checkpoint with the model's own keys (a trained detector) is loaded as detectron2 does,
    reporting missing, unexpected and mismatched keys; anything else is taken for a plain ViT and
    converted into the model's HPViT/ViT backbone (hpvit_d2.checkpoint.convert_plain_vit).
    With ``strict``, any missing or mismatched backbone weight raises CheckpointError before the
    model is touched. Returns None for an empty path (random initialisation).
    """
    if not path:
        logger.info("No init checkpoint: the model starts from random initialisation")
        return None
    raw = load_checkpoint_file(_strip_query(path))
    state = extract_state_dict(raw)
    if _is_detector_checkpoint(state, model):
        return _load_detector(model, state, path, strict)
    prefix, backbone = find_vit_backbone(model)
    converted, report = convert_plain_vit(state, backbone)
    text = f"Loaded plain ViT checkpoint {path} into {prefix or 'the model'}:\n{report.summary()}"
    if strict and report.missing_pretrained:
        raise CheckpointError(
            f"{path}: strict loading refused: {len(report.missing_pretrained)} pre-trained backbone "
            f"weights missing or mismatched, e.g. {report.missing_pretrained[:3]}"
        )
    backbone.load_state_dict(converted, strict=False)
    logger.info(text)
    return text


def _load_detector(model: nn.Module, state, path: str, strict: bool) -> str:
    target = model.state_dict()
    missing: List[str] = sorted(k for k in target if k not in state)
    unexpected: List[str] = sorted(k for k in state if k not in target)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in target if k in state and state[k].shape != target[k].shape
    )
    if strict and (missing or mismatched):
        bad = missing + mismatched
        raise CheckpointError(f"{path}: strict loading refused: {len(bad)} model weights missing or "
                              f"mismatched, e.g. {bad[:3]}")
    # DetectionCheckpointer applies detectron2's own conversions (e.g. Caffe2 names) and loads.
    DetectionCheckpointer(model)._load_model({"model": dict(state), "__author__": "hpvit_d2"})
    lines = [f"Loaded detector checkpoint {path}: "
             f"{len(target) - len(missing) - len(mismatched)}/{len(target)} model tensors"]
    for title, keys in (("missing (left at initialisation)", missing),
                        ("shape mismatch (left at initialisation)", mismatched),
                        ("unused checkpoint keys", unexpected)):
        if keys:
            lines.append(f"  {title}: {len(keys)}")
            lines += [f"    {k}" for k in keys[:50]] + (["    ..."] if len(keys) > 50 else [])
    text = "\n".join(lines)
    logger.info(text)
    return text
