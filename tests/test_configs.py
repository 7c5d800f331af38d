"""
Every LazyConfig under configs/ builds its model, trains one step (finite losses) and predicts.

Full-size backbones are shrunk in the test (width, heads, image size, window, RoI counts) so this
stays fast; the backbone class, depth, stage structure and heads are those of the config.
"""
import math
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling import ViT
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from hpvit_d2.modeling import HPViT

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
# Full Mask R-CNN configs only: shared bases (common/, */*common.py) are imported by them;
# semantic segmentation configs (upernet_*, semseg_*) are tested in tests/test_semseg_configs.py.
CONFIGS = sorted(p for p in CONFIG_DIR.rglob("*.py")
                 if "common" not in p.parts and not p.stem.endswith("common")
                 and not p.name.startswith(("_", "upernet_", "semseg_")))
SIZE = 128  # test image side, and the backbone's img_size after shrinking
CHANNELS = 32  # pyramid and head width after shrinking


pytestmark = pytest.mark.usefixtures("one_thread")


def test_expected_configs_are_collected():
    names = {str(p.relative_to(CONFIG_DIR)) for p in CONFIGS}
    assert {"mask_rcnn_hpvit_b.py", "mask_rcnn_hpvit_l.py", "mask_rcnn_vitdet_b.py",
            "mask_rcnn_hpvit_tiny.py", "mask_rcnn_vitdet_tiny.py"} <= names


def _vit_node(backbone_cfg):
    """The ViT-like node of a backbone config: FPN.bottom_up (HPViT) or SimpleFeaturePyramid.net."""
    for key in ("bottom_up", "net"):
        if key in backbone_cfg and backbone_cfg[key]._target_ in (HPViT, ViT):
            return backbone_cfg[key]
    raise AssertionError(f"no HPViT/ViT backbone in {backbone_cfg._target_}")


def pyramid_channels(model_cfg) -> dict:
    """The width each part of a Mask R-CNN config builds for: all must equal the pyramid's."""
    heads = model_cfg.roi_heads
    return {
        "backbone.out_channels": model_cfg.backbone.out_channels,
        "proposal_generator.head.in_channels": model_cfg.proposal_generator.head.in_channels,
        "roi_heads.box_head.input_shape": heads.box_head.input_shape.channels,
        "roi_heads.mask_head.input_shape": heads.mask_head.input_shape.channels,
    }


def shrink(model_cfg) -> None:
    """
    Narrow the backbone (width 32, 2 heads), the pyramid and the heads (CHANNELS wide, same number
    of layers), pad ViTDet's square input to SIZE only, and cut RoI counts. Depth, stages,
    img_size, windows and global blocks are the config's.
    """
    _vit_node(model_cfg.backbone).update(embed_dim=32, num_heads=2)
    if model_cfg.backbone.get("square_pad"):
        model_cfg.backbone.square_pad = SIZE
    model_cfg.backbone.out_channels = CHANNELS
    heads = model_cfg.roi_heads
    box_head, mask_head = heads.box_head, heads.mask_head
    box_head.input_shape = ShapeSpec(channels=CHANNELS, height=7, width=7)
    box_head.conv_dims = [CHANNELS] * len(box_head.conv_dims)
    box_head.fc_dims = [CHANNELS] * len(box_head.fc_dims)
    heads.box_predictor.input_shape = ShapeSpec(channels=CHANNELS)
    mask_head.input_shape = ShapeSpec(channels=CHANNELS, height=14, width=14)
    mask_head.conv_dims = [CHANNELS] * len(mask_head.conv_dims)
    rpn = model_cfg.proposal_generator
    rpn.head.in_channels = CHANNELS
    rpn.update(pre_nms_topk=(100, 100), post_nms_topk=(16, 16), batch_size_per_image=64)
    heads.batch_size_per_image = 16
    heads.box_predictor.test_topk_per_image = 5
    heads.box_predictor.test_score_thresh = 0.0


def _inputs(num_classes: int):
    """Two non-square images (3, 96, SIZE) with one box and mask each, gt classes in range."""
    batch = []
    for i in range(2):
        h, w = 96, SIZE
        image = torch.randint(0, 255, (3, h, w), dtype=torch.uint8).float()
        box = torch.tensor([[10.0 + 8 * i, 12.0, 70.0 + 8 * i, 80.0]])
        mask = torch.zeros(1, h, w, dtype=torch.bool)
        mask[0, 12:80, 10 + 8 * i:70 + 8 * i] = True
        gt = Instances((h, w), gt_boxes=Boxes(box), gt_classes=torch.tensor([i % num_classes]),
                       gt_masks=BitMasks(mask))
        batch.append({"image": image, "height": h, "width": w, "instances": gt})
    return batch


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_config_builds_trains_and_predicts(config):
    cfg = LazyConfig.load(str(config))
    for key in ("model", "dataloader", "train", "optimizer", "lr_multiplier"):
        assert key in cfg, f"{config.name} does not define {key}"
    expected_backbone = _vit_node(cfg.model.backbone)._target_
    expected_depth = _vit_node(cfg.model.backbone).depth
    channels = pyramid_channels(cfg.model)
    assert len(set(channels.values())) == 1, f"{config.name}: pyramid and heads disagree: {channels}"
    shrink(cfg.model)
    # the test-time pre-processing the predictor and the evaluation read
    augmentations = instantiate(cfg.dataloader.test.mapper.augmentations)
    assert all(hasattr(a, "get_transform") for a in augmentations)
    assert cfg.dataloader.test.mapper.image_format == cfg.model.input_format

    model = instantiate(cfg.model)
    vit = model.backbone.bottom_up if hasattr(model.backbone, "bottom_up") else model.backbone.net
    assert type(vit) is expected_backbone and len(vit.blocks) == expected_depth
    num_classes = cfg.model.roi_heads.num_classes

    model.train()
    with EventStorage():
        losses = model(_inputs(num_classes))
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    total = sum(losses.values())
    assert all(math.isfinite(v.item()) for v in losses.values()), losses
    total.backward()
    assert vit.patch_embed.proj.weight.grad is not None

    model.eval()
    batch = _inputs(num_classes)
    for item in batch:  # predictions come back at the requested (original) size
        item["height"], item["width"] = 48, 64
    with torch.no_grad():
        outputs = model(batch)
    for out in outputs:
        instances = out["instances"]
        assert isinstance(instances, Instances) and instances.image_size == (48, 64)
        assert 0 < len(instances) <= 5
        assert instances.pred_masks.shape[1:] == (48, 64)
        assert int(instances.pred_classes.max()) < num_classes
