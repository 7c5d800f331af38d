"""
HPViT classifiers in timm's model registry: after ``import hpvit_d2.timm_models``,
``timm.create_model("hpvit_base_patch16_224")`` builds one (``timm.list_models("hpvit_*")``).
``import hpvit_d2`` alone does not register them (it imports no timm or torch: see the package's
docstring); the classification command (``hpvit-classify``) imports this module itself.

    hpvit_tiny_patch16_224    width 192, 12 blocks, 3 heads,  stages (2, 2, 6, 2)
    hpvit_small_patch16_224   width 384, 12 blocks, 6 heads,  stages (2, 2, 6, 2)
    hpvit_base_patch16_224    width 768, 12 blocks, 12 heads, stages (2, 2, 6, 2)
    hpvit_large_patch16_224   width 1024, 24 blocks, 16 heads, stages (2, 2, 18, 2)

The widths, depths and heads of timm's ``vit_{tiny,small,base,large}_patch16_224``; patch
embedding at stride 4, conv pooling between stages, global attention everywhere (at 224 the first
stage is 56x56 tokens), absolute position embedding only, as MAE fine-tunes. Any argument of
``hpvit_d2.modeling.classifier.HPViTClassifier`` (HPViT's: ``patch_stride``, ``stage_depths``,
``pool_type``, ``img_size``, ``drop_path_rate``...) can be passed to ``timm.create_model``; any
input size runs (the position embedding is resized), ``img_size`` only sizes what global
attention is checked against.

Weights: ``pretrained=True, pretrained_cfg_overlay=dict(file="mae_pretrain_vit_base.pth")`` reads
a plain (or HPViT) checkpoint with ``hpvit_d2.checkpoint.HPViTCheckpointer``, the reader, converter
and load report of every entry of this project (``pretrained_require="backbone"`` demands every
backbone weight); there are no hosted HPViT weights (``pretrained=True`` alone is an error).

This module only registers names (it imports timm, not detectron2): the model class is imported
when a model is built.
"""
from functools import partial

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model

__all__ = ["VARIANTS"]

VARIANTS = {
    "hpvit_tiny_patch16_224": dict(embed_dim=192, depth=12, num_heads=3, stage_depths=(2, 2, 6, 2)),
    "hpvit_small_patch16_224": dict(embed_dim=384, depth=12, num_heads=6, stage_depths=(2, 2, 6, 2)),
    "hpvit_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12, stage_depths=(2, 2, 6, 2)),
    "hpvit_large_patch16_224": dict(embed_dim=1024, depth=24, num_heads=16,
                                    stage_depths=(2, 2, 18, 2)),
}
_COMMON = dict(patch_size=16, patch_stride=4, pool_type="conv", mlp_ratio=4.0, qkv_bias=True)


def _cfg(**kwargs):
    # MAE's fine-tuning data settings: ImageNet mean/std, bicubic, eval resize 256 -> crop 224.
    return {"url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None,
            "crop_pct": 0.875, "interpolation": "bicubic", "fixed_input_size": False,
            "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
            "first_conv": "patch_embed.proj", "classifier": "head", "license": "apache-2.0",
            **kwargs}


default_cfgs = generate_default_cfgs({name: _cfg() for name in VARIANTS})


def _create(variant: str, pretrained: bool, pretrained_require: str = "architecture", **kwargs):
    """
    Build a registered variant with timm's ``build_model_with_cfg`` (its ``pretrained_cfg``).
    With ``pretrained=True`` the file named by ``pretrained_cfg_overlay=dict(file=PATH)`` is read
    as every other entry of this project reads weights: by ``hpvit_d2.checkpoint.HPViTCheckpointer``
    (``.pth``, ``.pkl``, ``.safetensors`` or a Hugging Face directory, no code executed, a plain
    ViT converted, one load report on stderr, ``require=pretrained_require``: "architecture",
    "backbone" or "everything"). A pre-training checkpoint has no pooling layers, ``fc_norm`` or
    head: what it lacks stays at initialisation and the report names it.

    Raises:
        ValueError: ``pretrained=True`` without a file (no HPViT weights are hosted).
        IncompatibleCheckpointError / CheckpointError: the file does not fit the model.
    """
    import torch.nn as nn
    from timm.models import build_model_with_cfg

    from .checkpoint import HPViTCheckpointer
    from .modeling.classifier import HPViTClassifier

    kwargs = {"norm_layer": partial(nn.LayerNorm, eps=1e-6), **_COMMON, **VARIANTS[variant], **kwargs}
    file = (kwargs.get("pretrained_cfg_overlay") or {}).get("file") if pretrained else None
    if pretrained and not file:
        raise ValueError(f"{variant}: no HPViT weights are hosted; give the plain ViT (or HPViT) "
                         "checkpoint to start from, pretrained_cfg_overlay=dict(file=PATH)")
    model = build_model_with_cfg(HPViTClassifier, variant, pretrained=False, **kwargs)
    if file:
        HPViTCheckpointer(model, require=pretrained_require).load(str(file))
    return model


@register_model
def hpvit_tiny_patch16_224(pretrained: bool = False, **kwargs):
    """HPViT-Ti/16: ViT-Tiny's blocks in 4 stages (2, 2, 6, 2), 1/4..1/32."""
    return _create("hpvit_tiny_patch16_224", pretrained, **kwargs)


@register_model
def hpvit_small_patch16_224(pretrained: bool = False, **kwargs):
    """HPViT-S/16: ViT-Small's blocks in 4 stages (2, 2, 6, 2), 1/4..1/32."""
    return _create("hpvit_small_patch16_224", pretrained, **kwargs)


@register_model
def hpvit_base_patch16_224(pretrained: bool = False, **kwargs):
    """HPViT-B/16: ViT-Base's blocks in 4 stages (2, 2, 6, 2), 1/4..1/32."""
    return _create("hpvit_base_patch16_224", pretrained, **kwargs)


@register_model
def hpvit_large_patch16_224(pretrained: bool = False, **kwargs):
    """HPViT-L/16: ViT-Large's blocks in 4 stages (2, 2, 18, 2), 1/4..1/32."""
    return _create("hpvit_large_patch16_224", pretrained, **kwargs)
