"""
Plain-ViT checkpoints onto an HPViT (or detectron2 ViT): key mapping and resizing, the one place
this project converts other formats.

``convert_plain_vit(state_dict, model)`` returns the state dict to load into ``model`` with a
:class:`ConversionReport`; :func:`checkpoint_filter_fn` is the same as timm's filter. Sources:

- MAE (``{"model": ...}`` with ``decoder_*`` and ``mask_token``), timm and DeiT (``cls_token``,
  ``dist_token``, ``head.*``), detectron2 ViTDet (``backbone.net.*``), HPViT detectors
  (``backbone.bottom_up.*``) and bare ViT state dicts: timm's key names, under some prefix;
- Hugging Face ``transformers`` ViT, ViTMAE and DeiT (``save_pretrained`` state dicts:
  ``[vit.|deit.]embeddings.*``, ``encoder.layer.{i}.attention.attention.{query,key,value}``... or
  transformers 5's module names ``layers.{i}.attention.{q,k,v}_proj``...),
  renamed to timm's names first (query, key and value concatenated into ``qkv`` in that order).

The position embedding is resampled (bicubic) to the model's grid, keeping the class-token slot;
relative-position tables are resampled (linear, as detectron2 does at run time). A source of
another width, depth or patch size cannot fill the model: :class:`IncompatibleCheckpointError`.
"""
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
from timm.layers import resample_abs_pos_embed

from ..modeling.position import resize_rel_pos

__all__ = [
    "ANCHOR_KEY",
    "ConversionReport",
    "IncompatibleCheckpointError",
    "VitGeometry",
    "checkpoint_filter_fn",
    "convert_plain_vit",
    "convert_pos_embed",
    "extract_state_dict",
    "hf_vit_to_timm",
    "timm_named",
    "vit_geometry",
    "vit_key_prefix",
]

logger = logging.getLogger(__name__)

ANCHOR_KEY = "patch_embed.proj.weight"
_HF_ANCHOR = "embeddings.patch_embeddings.projection.weight"
# Target keys a plain (pre-training) checkpoint is not expected to provide: HPViT's pooling
# layers, and a classifier's fc_norm and head (hpvit_d2.modeling.classifier), new at fine-tuning.
_NEW_IN_HPVIT = ("pools.", "fc_norm.", "head.")
_REL_POS = (".attn.rel_pos_h", ".attn.rel_pos_w")


class IncompatibleCheckpointError(ValueError):
    """The checkpoint is not a ViT, or a ViT whose width, depth or patch size differs from the model's."""


class VitGeometry(NamedTuple):
    """What a ViT's weights fix: width (embed_dim), number of blocks, patch kernel side."""

    width: int
    depth: int
    patch_size: int

    def __str__(self) -> str:
        return f"width {self.width}, depth {self.depth}, patch {self.patch_size}"


@dataclass
class ConversionReport:
    """What a conversion did with every key. Shapes are tuples."""

    source_format: str
    source_prefix: str
    source_geometry: Optional[VitGeometry] = None
    loaded: List[str] = field(default_factory=list)
    resized: Dict[str, Tuple[tuple, tuple]] = field(default_factory=dict)
    unused: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    mismatched: Dict[str, Tuple[tuple, tuple]] = field(default_factory=dict)
    # Loaded weight matrices and position embeddings that are all zeros in the checkpoint: never
    # trained (e.g. the frozen sin-cos table of a transformers 5 ViTMAE built from a config).
    all_zero: List[str] = field(default_factory=list)

    @property
    def missing_pretrained(self) -> List[str]:
        """Target keys a plain ViT checkpoint should have provided (block, patch, position) but did
        not, or provided as all zeros."""
        out = []
        for k in self.missing + list(self.mismatched) + self.all_zero:
            if k.startswith(_NEW_IN_HPVIT) or k.endswith(_REL_POS):
                continue
            out.append(k)
        return sorted(out)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "source_format": self.source_format,
            "source_prefix": self.source_prefix,
            "source_geometry": list(self.source_geometry) if self.source_geometry else None,
            "loaded": list(self.loaded),
            "resized": {k: [list(a), list(b)] for k, (a, b) in self.resized.items()},
            "unused": list(self.unused),
            "missing": list(self.missing),
            "mismatched": {k: [list(a), list(b)] for k, (a, b) in self.mismatched.items()},
            "all_zero": list(self.all_zero),
        }


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
        raise IncompatibleCheckpointError(f"expected a dict of tensors, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if type(v).__module__ == "numpy" and hasattr(v, "dtype"):
            v = torch.as_tensor(v.copy())
        if isinstance(v, torch.Tensor):
            out[str(k)] = v
    return out


def hf_vit_to_timm(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], str]:
    """
    Rename a Hugging Face ViT / ViTMAE / DeiT state dict to timm's names.

    Returns:
        (state dict with timm names for the encoder, the rest kept under their names), and the
        prefix the encoder was found under ("vit.", "deit.", or "" for a base model).
    """
    anchors = [k for k in state if k.endswith(_HF_ANCHOR)]
    prefix = min(anchors, key=len)[: -len(_HF_ANCHOR)]
    renames = {
        "embeddings.cls_token": "cls_token",
        "embeddings.distillation_token": "dist_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    # Both namings: the files save_pretrained writes ("encoder.layer.{i}.attention.attention.query")
    # and the modules of transformers >= 5 ("layers.{i}.attention.q_proj").
    block_parts = {
        "layernorm_before": "norm1",
        "layernorm_after": "norm2",
        "attention.output.dense": "attn.proj",
        "attention.o_proj": "attn.proj",
        "intermediate.dense": "mlp.fc1",
        "output.dense": "mlp.fc2",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    qkv_parts = {"attention.attention.query": "query", "attention.attention.key": "key",
                 "attention.attention.value": "value", "attention.q_proj": "query",
                 "attention.k_proj": "key", "attention.v_proj": "value"}
    heads = {"classifier": "head", "cls_classifier": "head", "distillation_classifier": "head_dist"}
    layer = re.compile(r"(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")
    out: Dict[str, torch.Tensor] = {}
    qkv: Dict[Tuple[int, str], Dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            head, _, leaf = key.rpartition(".")
            out[f"{heads[head]}.{leaf}" if head in heads else key] = value
            continue
        name = key[len(prefix):]
        match = layer.match(name)
        if name in renames:
            out[renames[name]] = value
        elif match:
            i, part, leaf = int(match.group(1)), match.group(2), match.group(3)
            if part in qkv_parts:
                qkv.setdefault((i, leaf), {})[qkv_parts[part]] = value
            elif part in block_parts:
                out[f"blocks.{i}.{block_parts[part]}.{leaf}"] = value
            else:
                out[key] = value
        else:
            out[key] = value
    for (i, leaf), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise IncompatibleCheckpointError(
                f"block {i}: attention {leaf} has {sorted(parts)}, expected query, key and value")
        out[f"blocks.{i}.attn.qkv.{leaf}"] = torch.cat([parts[n] for n in ("query", "key", "value")])
    return out, prefix


def timm_named(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Optional[str]]:
    """``state`` with timm's key names: Hugging Face ViT/ViTMAE/DeiT are renamed (returns the
    Hugging Face prefix, else None and ``state`` unchanged)."""
    if vit_key_prefix(state) is None and any(k.endswith(_HF_ANCHOR) for k in state):
        return hf_vit_to_timm(state)
    return state, None


def _detect_format(keys: List[str], prefix: str, hf_prefix: Optional[str]) -> str:
    if hf_prefix is not None:
        if any(k.startswith("decoder.") for k in keys):
            return "Hugging Face ViTMAE"
        if hf_prefix == "deit." or "dist_token" in keys:
            return "Hugging Face DeiT"
        return "Hugging Face ViT"
    if any(k.startswith("decoder_") or k == "mask_token" for k in keys):
        return "MAE"
    if prefix == "backbone.net.":
        return "ViTDet (detectron2)"
    if prefix == "backbone.bottom_up.":
        return "HPViT detector"
    if any(k in ("cls_token", "dist_token", "head.weight", "fc_norm.weight") for k in keys):
        return "DeiT/timm"
    return "bare ViT state dict"


def vit_key_prefix(state: Mapping[str, Any]) -> Optional[str]:
    """The shortest prefix under which ``state`` has ``patch_embed.proj.weight``, or None."""
    anchors = [k for k in state if k.endswith(ANCHOR_KEY)]
    return min(anchors, key=len)[: -len(ANCHOR_KEY)] if anchors else None


def vit_geometry(state: Mapping[str, torch.Tensor], prefix: str = "") -> VitGeometry:
    """Width, depth and patch size of the ViT whose weights are ``state[prefix + ...]``."""
    kernel = state[prefix + ANCHOR_KEY]
    blocks = re.compile(re.escape(prefix) + r"blocks\.(\d+)\.")
    indexes = {int(m.group(1)) for m in map(blocks.match, state) if m}
    return VitGeometry(int(kernel.shape[0]), 1 + max(indexes, default=-1), int(kernel.shape[-1]))


def convert_pos_embed(pos: torch.Tensor, target_shape: torch.Size, target_has_cls: bool) -> torch.Tensor:
    """
    Resample a position embedding (1, prefix + s*s, C) to (1, [1 +] t*t, C), bicubic.

    Extra prefix slots (DeiT's distillation token, registers) are dropped; the class-token slot is
    kept when the target has one (zeros if the source has none).
    """
    n_src = pos.shape[1]
    s = math.isqrt(n_src)
    n_prefix = n_src - s * s  # 0, 1 (class token) or more (distillation token, registers)
    n_tgt = target_shape[1] - (1 if target_has_cls else 0)
    t = math.isqrt(n_tgt)
    if t * t != n_tgt or s == 0 or n_prefix > 8:
        raise IncompatibleCheckpointError(
            f"position embedding {tuple(pos.shape)} is not a square grid (with at most 8 prefix "
            f"tokens), cannot be resized to {tuple(target_shape)}")
    grid = pos[:, n_prefix:]
    if s != t:  # timm's resampler, bicubic without antialiasing (as detectron2's get_abs_pos)
        grid = resample_abs_pos_embed(grid.float(), new_size=[t, t], old_size=[s, s],
                                      num_prefix_tokens=0, antialias=False).to(pos.dtype)
    if not target_has_cls:
        return grid
    cls = pos[:, :1] if n_prefix > 0 else torch.zeros_like(pos[:, :1])
    return torch.cat([cls, grid], dim=1)


def convert_plain_vit(
    state_dict: Any, model: nn.Module
) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """
    Convert a plain-ViT checkpoint into ``model``'s keys.

    Args:
        state_dict: a loaded checkpoint in one of the formats of the module docstring.
        model: an ``HPViT`` (or detectron2 ``ViT``) whose keys are the target.
    Returns:
        (state dict with a subset of ``model.state_dict()`` keys, ConversionReport).
    Raises:
        IncompatibleCheckpointError: no ViT in the checkpoint, or one whose width, depth or patch
            size differs from the model's (both are named).
    """
    source, hf_prefix = timm_named(extract_state_dict(state_dict))
    prefix = vit_key_prefix(source)
    if prefix is None:
        sample = ", ".join(sorted(source)[:3])
        raise IncompatibleCheckpointError(
            f"no '{ANCHOR_KEY}' among its {len(source)} tensors (e.g. {sample}): not a ViT "
            "checkpoint (expected MAE, DeiT/timm, Hugging Face ViT/ViTMAE/DeiT, detectron2 ViTDet "
            "or an HPViT state dict)"
        )
    target = model.state_dict()
    got, want = vit_geometry(source, prefix), vit_geometry(target)
    if got != want:
        raise IncompatibleCheckpointError(
            f"the checkpoint's ViT ({got}) cannot fill the model's ({want})")
    report = ConversionReport(_detect_format(list(source), prefix, hf_prefix), prefix, got)
    backbone_src = {k[len(prefix):]: v for k, v in source.items() if k.startswith(prefix)}
    unused = [k for k in source if not k.startswith(prefix)]
    target_has_cls = getattr(model, "pretrain_use_cls_token", True)
    out: Dict[str, torch.Tensor] = {}
    for key, ref in target.items():
        if key not in backbone_src:
            report.missing.append(key)
            continue
        value = backbone_src.pop(key)
        if value.shape != ref.shape:
            if key == "pos_embed":
                value = convert_pos_embed(value, ref.shape, target_has_cls)
            elif key.endswith(_REL_POS) and value.shape[1:] == ref.shape[1:]:
                value = resize_rel_pos(value, ref.shape[0])
            if value.shape != ref.shape:
                report.mismatched[key] = (tuple(value.shape), tuple(ref.shape))
                continue
            report.resized[key] = (tuple(source[prefix + key].shape), tuple(ref.shape))
        out[key] = value.to(ref.dtype)
        report.loaded.append(key)
        if value.dim() >= 2 and not key.endswith(_REL_POS) and not bool(value.any()):
            report.all_zero.append(key)
    report.unused = sorted(unused + [prefix + k for k in backbone_src])
    return out, report


def checkpoint_filter_fn(state_dict: Any, model: nn.Module) -> Dict[str, torch.Tensor]:
    """
    timm's filter (``timm.models.load_checkpoint(..., filter_fn=checkpoint_filter_fn)``):
    :func:`convert_plain_vit`'s state dict, with what was loaded and left out logged.
    """
    converted, report = convert_plain_vit(state_dict, model)
    left = sorted(set(model.state_dict()) - set(converted))
    logger.info("%s checkpoint: %d of %d tensors loaded (%d resized); left at initialisation: "
                "%s; shape mismatches: %s", report.source_format, len(converted),
                len(model.state_dict()), len(report.resized), left or "none",
                sorted(report.mismatched) or "none")
    return converted
