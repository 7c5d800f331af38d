"""
The backbones and detectors compared by the benchmark and the summary, built from the shipped
configs (configs/mask_rcnn_{vitdet,hpvit}_b.py) so that both measure what the configs train.

Variants: ``vit`` (detectron2's ``ViT``; in Mask R-CNN, ViTDet-B with ``SimpleFeaturePyramid``),
``plain`` (HPViT in plain mode, same weights; in Mask R-CNN, the same ViTDet with HPViT's
trunk), ``hpvit-{2262,1191}-{conv,avg}`` (HPViT-B with ``stage_depths`` (2, 2, 6, 2) or
(1, 1, 9, 1) and conv or average pooling; in Mask R-CNN, HPViT + FPN).
"""
from typing import Dict

import torch

from hpvit_d2.model_zoo import CONFIG_ROOT

__all__ = ["SCALES", "VARIANTS", "build_model", "config_act_checkpoint", "model_config",
           "projection_shapes", "share_weights"]

# name -> (label, how the trunk differs from the configs' defaults)
VARIANTS: Dict[str, dict] = {
    "vit": dict(label="detectron2 ViT-B (ViTDet)", kind="vit"),
    "plain": dict(label="HPViT-B plain mode", kind="plain"),
    "hpvit-2262-conv": dict(label="HPViT-B (2,2,6,2) conv", kind="hpvit",
                            stage_depths=(2, 2, 6, 2), pool_type="conv"),
    "hpvit-2262-avg": dict(label="HPViT-B (2,2,6,2) avg", kind="hpvit",
                           stage_depths=(2, 2, 6, 2), pool_type="avg"),
    "hpvit-1191-conv": dict(label="HPViT-B (1,1,9,1) conv", kind="hpvit",
                            stage_depths=(1, 1, 9, 1), pool_type="conv"),
    "hpvit-1191-avg": dict(label="HPViT-B (1,1,9,1) avg", kind="hpvit",
                           stage_depths=(1, 1, 9, 1), pool_type="avg"),
}
# "base" is ViT-B with the configs' heads; "tiny" (a narrow trunk, small heads, few proposals)
# only exercises the harness quickly.
SCALES = {
    "base": dict(trunk={}, heads={}),
    "tiny": dict(
        trunk=dict(embed_dim=64, num_heads=2),
        heads={"proposal_generator.post_nms_topk": (1000, 20),
               "roi_heads.box_predictor.test_topk_per_image": 5,
               "roi_heads.box_head.conv_dims": [32] * 4,
               "roi_heads.mask_head.conv_dims": [32] * 5},
    ),
}


def projection_shapes(scale: str):
    """The (C_in, C_out) of a block's qkv, proj, fc1 and fc2 at ``scale`` (the B configs'
    768 wide, MLP ratio 4; the trunks of every variant share them)."""
    dim = SCALES[scale]["trunk"].get("embed_dim", 768)
    return [(dim, 3 * dim), (dim, dim), (dim, 4 * dim), (4 * dim, dim)]


def model_config(variant: str, scale: str, size: int, checkpoint=False):
    """LazyConfig node of the whole Mask R-CNN for ``variant`` (see VARIANTS)."""
    from detectron2.config import LazyCall as L
    from detectron2.config import LazyConfig

    from hpvit_d2.modeling import HPViT

    spec = VARIANTS[variant]
    if spec["kind"] == "hpvit":
        model = LazyConfig.load(str(CONFIG_ROOT / "mask_rcnn_hpvit_b.py")).model
        trunk = model.backbone.bottom_up
        trunk.stage_depths, trunk.pool_type = spec["stage_depths"], spec["pool_type"]
        model.backbone.square_pad = size
    else:
        model = LazyConfig.load(str(CONFIG_ROOT / "mask_rcnn_vitdet_b.py")).model
        model.backbone.square_pad = size
        if spec["kind"] == "plain":
            vit = model.backbone.net
            keep = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "drop_path_rate",
                    "window_size", "mlp_ratio", "qkv_bias", "norm_layer", "window_block_indexes",
                    "use_rel_pos")
            model.backbone.net = L(HPViT)(**{k: vit[k] for k in keep}, patch_stride=16,
                                          stage_depths=(vit.depth,), out_features=("scale4",))
            model.backbone.in_feature = "scale4"
        trunk = model.backbone.net
    trunk.update(SCALES[scale]["trunk"])
    if spec["kind"] != "vit" and checkpoint is not None:  # False, True (every stage) or the
        # stages (HPViT.use_act_checkpoint), whatever the config sets (the B config recomputes
        # every stage); None: as the config sets it
        trunk.use_act_checkpoint = checkpoint if isinstance(checkpoint, bool) else list(checkpoint)
    # Score threshold 0: always 100 detections, so the mask head's work does not depend on weights.
    model.roi_heads.box_predictor.test_score_thresh = 0.0
    for dotted, value in SCALES[scale]["heads"].items():
        *parents, leaf = dotted.split(".")
        node = model
        for name in parents:
            node = node[name]
        node[leaf] = value
    return model


def config_act_checkpoint(variant: str):
    """The trunk's ``use_act_checkpoint`` as ``variant``'s config sets it: False, True or a list
    of stages (the B config: True, every stage)."""
    node = model_config(variant, "base", 512, checkpoint=None).backbone
    trunk = node.bottom_up if VARIANTS[variant]["kind"] == "hpvit" else node.net
    value = trunk.get("use_act_checkpoint", False)
    return value if isinstance(value, bool) else list(value)


def build_model(variant: str, part: str, scale: str = "base", size: int = 512,
                checkpoint=False, seed: int = 0) -> torch.nn.Module:
    """
    The module for (variant, part): ``backbone`` or ``train`` the ViT trunk alone, ``pyramid`` the
    trunk with its feature pyramid (``model.backbone``), ``maskrcnn`` or ``train-maskrcnn`` the
    whole detector. ``checkpoint``: the trunk's activation checkpointing (None: the config's).
    """
    from detectron2.config import instantiate

    torch.manual_seed(seed)
    model = instantiate(model_config(variant, scale, size, checkpoint))
    from hpvit_d2.modeling import find_vit_backbone

    if part in ("maskrcnn", "train-maskrcnn"):
        return model
    return model.backbone if part == "pyramid" else find_vit_backbone(model)[1]


def share_weights(models: Dict[str, torch.nn.Module], reference: str) -> None:
    """
    Give every model the reference's weights where they share parameters: tensors of the same
    name and shape, and the ViT trunk through the plain-ViT conversion (resized rel-pos tables).
    """
    from hpvit_d2.checkpoint import convert_plain_vit
    from hpvit_d2.modeling import find_vit_backbone

    ref_state = models[reference].state_dict()
    for name, model in models.items():
        if name == reference:
            continue
        own = model.state_dict()
        same = {k: v for k, v in ref_state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(same, strict=False)
        _, trunk = find_vit_backbone(model)
        trunk_state, _ = convert_plain_vit(ref_state, trunk)
        trunk.load_state_dict(trunk_state, strict=False)


