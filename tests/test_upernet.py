"""The UperNet head: shapes at every level, the loss (ignore value honoured, decreasing, gradients
everywhere), its registration for yacs, and detectron2's SemanticSegmentor around HPViT and
around ViTDet's simple feature pyramid."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, SemanticSegmentor, SimpleFeaturePyramid, ViT
from detectron2.modeling.meta_arch.semantic_seg import build_sem_seg_head
from detectron2.utils.events import EventStorage

from hpvit_d2.modeling import HPViT, UperNetHead, semantic_segmentor
from hpvit_d2.modeling.upernet import semantic_seg_loss

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = {"a": ShapeSpec(channels=16, stride=4), "b": ShapeSpec(channels=24, stride=8),
          "c": ShapeSpec(channels=32, stride=16), "d": ShapeSpec(channels=40, stride=32)}
H, W, K = 64, 96, 5


def features(batch=2):
    return {n: torch.randn(batch, s.channels, H // s.stride, W // s.stride) for n, s in SHAPES.items()}


def head(**kwargs):
    kwargs = {"num_classes": K, "channels": 16, "norm": "BN", **kwargs}
    return UperNetHead(input_shape=dict(reversed(list(SHAPES.items()))), **kwargs)


def test_levels_are_ordered_by_stride_and_inference_is_at_the_finest_stride_times_four():
    model = head().eval()
    assert model.in_features == ["a", "b", "c", "d"] and model.common_stride == 4
    feats = features()
    logits, losses = model(feats)
    assert logits.shape == (2, K, H, W) and losses == {}
    # each stage of the head at its level's size
    assert model.ppm(feats["d"]).shape == (2, 40 + 4 * 16, 2, 3)
    assert model.layers(feats).shape == (2, K, H // 4, W // 4)


def test_losses_with_the_auxiliary_head_and_gradients_reach_every_parameter():
    model = head(aux_in_index=2, aux_loss_weight=0.4).train()
    targets = torch.randint(0, K, (2, H, W))
    _, losses = model(features(), targets)
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_aux"}
    sum(losses.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert no_grad == []


def test_ignore_value_is_honoured():
    logits = torch.randn(2, K, 8, 12, requires_grad=True)
    targets = torch.randint(0, K, (2, 32, 48))
    targets[:, :16] = 255
    loss = semantic_seg_loss(logits, targets, ignore_value=255)
    up = F.interpolate(logits, size=(32, 48), mode="bilinear", align_corners=False)
    valid = targets != 255
    expected = F.cross_entropy(up.permute(0, 2, 3, 1)[valid], targets[valid])
    torch.testing.assert_close(loss, expected)
    # nothing labelled: a zero loss with zero gradients, not NaN
    empty = semantic_seg_loss(logits, torch.full_like(targets, 255), ignore_value=255)
    empty.backward()
    assert empty.item() == 0.0 and not logits.grad.abs().sum()


def test_loss_decreases_on_a_tiny_batch():
    torch.manual_seed(0)
    model = head(dropout=0.0).train()
    feats = features()
    targets = torch.randint(0, K, (2, H // 8, W // 8)).repeat_interleave(8, 1).repeat_interleave(8, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    values = []
    for _ in range(40):
        _, losses = model(feats, targets)
        optimizer.zero_grad()
        losses["loss_sem_seg"].backward()
        optimizer.step()
        values.append(losses["loss_sem_seg"].item())
    assert values[-1] < 0.5 * values[0], values


def test_registered_for_yacs_configs():
    assert SEM_SEG_HEADS_REGISTRY.get("UperNetHead") is UperNetHead
    cfg = get_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NAME = "UperNetHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["a", "b", "c", "d"]
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 7
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.NORM = "GN"
    built = build_sem_seg_head(cfg, SHAPES)
    assert isinstance(built, UperNetHead) and built.num_classes == 7 and built.ignore_value == 255
    assert built.eval()(features())[0].shape == (2, 7, H, W)


def _tiny_hpvit():
    return HPViT(img_size=64, patch_size=16, embed_dim=32, depth=4, num_heads=2,
                 stage_depths=(1, 1, 1, 1))


def _tiny_sfp():
    vit = ViT(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, out_feature="last_feat")
    return SimpleFeaturePyramid(net=vit, in_feature="last_feat", out_channels=16,
                                scale_factors=(4.0, 2.0, 1.0, 0.5), norm="LN")


@pytest.mark.parametrize("make_backbone", [_tiny_hpvit, _tiny_sfp], ids=["hpvit", "vitdet_sfp"])
def test_semantic_segmentor_around_either_backbone(make_backbone):
    model = semantic_segmentor(backbone=make_backbone(),
                               sem_seg_head={"num_classes": K, "channels": 16, "aux_in_index": 2},
                               pixel_mean=[0.0, 0.0, 0.0], pixel_std=[1.0, 1.0, 1.0])
    assert type(model) is SemanticSegmentor
    names = sorted(model.backbone.output_shape())
    assert model.sem_seg_head.in_features == names
    images = [torch.rand(3, 64, 64) * 255, torch.rand(3, 48, 64) * 255]
    batch = [{"image": im, "sem_seg": torch.randint(0, K, im.shape[1:])} for im in images]
    batch[1]["sem_seg"][:10] = 255
    with EventStorage():
        losses = model.train()(batch)
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_aux"}
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model([{"image": images[1], "height": 30, "width": 40}])
    assert out[0]["sem_seg"].shape == (K, 30, 40)
