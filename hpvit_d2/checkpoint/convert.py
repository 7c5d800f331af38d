"""Map plain-ViT checkpoints (MAE, DeiT/timm, ViTDet, bare) onto an HPViT (or detectron2 ViT)."""
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .io import CheckpointError

__all__ = ["ConversionReport", "convert_plain_vit", "extract_state_dict", "find_vit_backbone",
           "resize_rel_pos", "resize_abs_pos"]

_ANCHOR_KEY = "patch_embed.proj.weight"
# Target keys that a plain (pre-training) checkpoint is not expected to provide.
_NEW_IN_HPVIT = ("pools.",)
_NEW_IF_NO_REL_POS = (".attn.rel_pos_h", ".attn.rel_pos_w")


@dataclass
class ConversionReport:
    """What a conversion did with every key. Shapes are tuples."""

    source_format: str
    source_prefix: str
    loaded: List[str] = field(default_factory=list)
    resized: Dict[str, Tuple[tuple, tuple]] = field(default_factory=dict)
    unused: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    mismatched: Dict[str, Tuple[tuple, tuple]] = field(default_factory=dict)

    @property
    def missing_pretrained(self) -> List[str]:
        """Missing target keys a plain ViT checkpoint should have provided (block, patch, position)."""
        out = []
        for k in self.missing + list(self.mismatched):
            if k.startswith(_NEW_IN_HPVIT) or k.endswith(_NEW_IF_NO_REL_POS):
                continue
            out.append(k)
        return sorted(out)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "source_format": self.source_format,
            "source_prefix": self.source_prefix,
            "loaded": list(self.loaded),
            "resized": {k: [list(a), list(b)] for k, (a, b) in self.resized.items()},
            "unused": list(self.unused),
            "missing": list(self.missing),
            "mismatched": {k: [list(a), list(b)] for k, (a, b) in self.mismatched.items()},
        }

    def summary(self) -> str:
        """A human-readable report: counts, then every resized, unused, mismatched and missing key."""
        lines = [
            f"checkpoint format: {self.source_format} (backbone keys under {self.source_prefix!r})",
            f"  loaded: {len(self.loaded)} tensors ({len(self.resized)} of them resized)",
        ]
        for k, (a, b) in sorted(self.resized.items()):
            lines.append(f"    resized {k}: {tuple(a)} -> {tuple(b)}")
        lines.append(f"  unused source keys: {len(self.unused)}")
        lines += [f"    {k}" for k in _compact(self.unused)]
        if self.mismatched:
            lines.append(f"  shape mismatches (left at initialisation): {len(self.mismatched)}")
            lines += [f"    {k}: checkpoint {tuple(a)} vs model {tuple(b)}"
                      for k, (a, b) in sorted(self.mismatched.items())]
        lines.append(f"  model keys left at initialisation: {len(self.missing)}")
        lines += [f"    {k}" for k in _compact(self.missing)]
        if self.missing_pretrained:
            lines.append(f"  WARNING: {len(self.missing_pretrained)} pre-trained backbone weights "
                         "are missing or mismatched (see above)")
        return "\n".join(lines)


def _compact(keys: List[str]) -> List[str]:
    """Group keys by pattern, replacing block indices by '*', with counts: 'blocks.*.x (12)'."""
    groups: Dict[str, int] = {}
    for k in sorted(keys):
        parts = k.split(".")
        pattern = ".".join("*" if p.isdigit() else p for p in parts)
        groups[pattern] = groups.get(pattern, 0) + 1
    return [p if n == 1 else f"{p} ({n})" for p, n in groups.items()]


def extract_state_dict(obj: Any) -> Dict[str, torch.Tensor]:
    """
    The flat name -> tensor mapping of a loaded checkpoint: unwraps ``{"model": ...}`` (MAE,
    detectron2), ``{"state_dict": ...}`` and ``{"module": ...}``; numpy arrays become tensors;
    non-tensor entries (e.g. detectron2's ``__author__``) are dropped.
    """
    while isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict", "module"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
        else:
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a dict of tensors, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(np.ascontiguousarray(v))
        if isinstance(v, torch.Tensor):
            out[str(k)] = v
    return out


def _detect_format(keys: List[str], prefix: str) -> str:
    if any(k.startswith("decoder_") or k == "mask_token" for k in keys):
        return "MAE"
    if prefix == "backbone.net.":
        return "ViTDet (detectron2)"
    if prefix == "backbone.bottom_up.":
        return "HPViT detector"
    if any(k in ("cls_token", "dist_token", "head.weight", "fc_norm.weight") for k in keys):
        return "DeiT/timm"
    return "bare ViT state dict"


def resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly resample a relative-position table (L, C) -> (length, C), as detectron2 does at run time."""
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.float().t()[None], size=length, mode="linear")
    return resized[0].t().to(table.dtype)


def resize_abs_pos(pos: torch.Tensor, target_shape: torch.Size, target_has_cls: bool) -> torch.Tensor:
    """
    Resample a position embedding (1, prefix + s*s, C) to (1, [1 +] t*t, C).

    Extra prefix slots (DeiT's distillation token, registers) are dropped; the class-token slot is
    kept when the target has one (zeros if the source has none).
    """
    from timm.layers import resample_abs_pos_embed

    n_src = pos.shape[1]
    s = math.isqrt(n_src)
    n_prefix = n_src - s * s  # 0, 1 (class token) or more (distillation token, registers)
    n_tgt = target_shape[1] - (1 if target_has_cls else 0)
    t = math.isqrt(n_tgt)
    if t * t != n_tgt or s == 0:
        raise CheckpointError(f"position embedding {tuple(pos.shape)} is not a square grid")
    grid = pos[:, n_prefix:]
    if s != t:
        grid = resample_abs_pos_embed(grid.float(), new_size=[t, t], old_size=[s, s],
                                      num_prefix_tokens=0, antialias=False).to(pos.dtype)
    if not target_has_cls:
        return grid
    cls = pos[:, :1] if n_prefix > 0 else torch.zeros_like(pos[:, :1])
    return torch.cat([cls, grid], dim=1)


def find_vit_backbone(model: nn.Module) -> Tuple[str, nn.Module]:
    """(prefix, module) of the first HPViT or detectron2 ViT inside ``model`` (prefix '' if it is one)."""
    from detectron2.modeling import ViT

    from ..modeling import HPViT

    for name, module in model.named_modules():
        if isinstance(module, (HPViT, ViT)):
            return (name + "." if name else ""), module
    raise CheckpointError(f"{type(model).__name__} contains no HPViT or ViT backbone to load into")


def convert_plain_vit(
    state_dict: Any, model: nn.Module
) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """
    Convert a plain-ViT checkpoint into ``model``'s keys.

    Args:
        state_dict: a loaded checkpoint: MAE (``{"model": ...}`` with ``decoder_*``, ``mask_token``),
            DeiT/timm (``cls_token``, ``norm.*``, ``head.*``), detectron2 ViTDet (``backbone.net.*``,
            numpy arrays from ``.pkl`` or tensors from ``.pth``), or a bare state dict.
        model: an ``HPViT`` (or detectron2 ``ViT``) whose keys are the target.
    Returns:
        (state dict with a subset of ``model.state_dict()`` keys, ConversionReport). Relative-position
        tables and the position embedding are resized to the model's shapes; the patch kernel is kept
        (resampled only if the model's kernel size differs).
    """
    source = extract_state_dict(state_dict)
    anchors = [k for k in source if k.endswith(_ANCHOR_KEY)]
    if not anchors:
        raise CheckpointError(
            f"no '{_ANCHOR_KEY}' among its {len(source)} tensors: not a ViT checkpoint "
            "(expected MAE, DeiT/timm, detectron2 ViTDet or an HPViT state dict)"
        )
    prefix = min(anchors, key=len)[: -len(_ANCHOR_KEY)]
    report = ConversionReport(_detect_format(list(source), prefix), prefix)
    backbone_src = {k[len(prefix):]: v for k, v in source.items() if k.startswith(prefix)}
    report.unused = sorted(k for k in source if not k.startswith(prefix))

    target = model.state_dict()
    target_has_cls = getattr(model, "pretrain_use_cls_token", True)
    out: Dict[str, torch.Tensor] = {}
    for key, ref in target.items():
        if key not in backbone_src:
            report.missing.append(key)
            continue
        value = backbone_src.pop(key)
        if value.shape != ref.shape:
            try:
                if key == "pos_embed":
                    value = resize_abs_pos(value, ref.shape, target_has_cls)
                elif key.endswith(_NEW_IF_NO_REL_POS) and value.shape[1:] == ref.shape[1:]:
                    value = resize_rel_pos(value, ref.shape[0])
                elif key == _ANCHOR_KEY and value.shape[:2] == ref.shape[:2]:
                    from timm.layers import resample_patch_embed

                    value = resample_patch_embed(value.float(), list(ref.shape[2:]),
                                                 antialias=False).to(value.dtype)
            except CheckpointError:
                pass
            if value.shape != ref.shape:
                report.mismatched[key] = (tuple(value.shape), tuple(ref.shape))
                continue
            report.resized[key] = (tuple(source[prefix + key].shape), tuple(ref.shape))
        out[key] = value.to(ref.dtype)
        report.loaded.append(key)
    report.unused = sorted(report.unused + [prefix + k for k in backbone_src])
    return out, report
