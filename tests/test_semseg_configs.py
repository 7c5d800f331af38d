"""
The semantic segmentation configs: each HPViT config and its plain-ViT twin differ only in the
backbone; the B configs carry the MAE/BEiT recipe and load MAE ViT-B completely through
detectron2's stock path and the project's; every config builds, trains a step and predicts.
"""
import functools
import gc
import math

import pytest
import timm
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.data import transforms as T
from detectron2.modeling import SemanticSegmentor
from detectron2.utils.events import EventStorage
from omegaconf import OmegaConf

from hpvit_d2.checkpoint import HPViTCheckpointer
from hpvit_d2.model_zoo import get_config
from hpvit_d2.modeling import HPViT, UperNetHead, find_vit_backbone

TWINS = [
    ("ade20k/upernet_hpvit_b.py", "ade20k/upernet_vit_b.py"),
    ("cityscapes/upernet_hpvit_b.py", "cityscapes/upernet_vit_b.py"),
    ("semseg_hpvit_tiny.py", "semseg_vit_tiny.py"),
]
B_CONFIGS = [name for pair in TWINS[:2] for name in pair]
ALL = [name for pair in TWINS for name in pair]


def without_backbone(cfg) -> dict:
    tree = {k: OmegaConf.to_container(cfg[k], resolve=False)
            for k in ("model", "dataloader", "train", "optimizer", "lr_multiplier")}
    del tree["model"]["backbone"]
    del tree["train"]["output_dir"]
    return tree


@pytest.mark.parametrize("hpvit, vit", TWINS)
def test_twins_differ_only_in_the_backbone(hpvit, vit):
    a, b = get_config(hpvit), get_config(vit)
    assert without_backbone(a) == without_backbone(b)
    assert a.model.backbone._target_ is HPViT
    assert b.model.backbone.net.depth == a.model.backbone.depth
    assert b.model.backbone.net.embed_dim == a.model.backbone.embed_dim


def test_b_configs_carry_the_mae_beit_recipe():
    ade, cs = get_config("ade20k/upernet_hpvit_b.py"), get_config("cityscapes/upernet_hpvit_b.py")
    for cfg, classes, crop, iters in ((ade, 150, (512, 512), 160000),
                                      (cs, 19, (512, 1024), 90000)):
        head = cfg.model.sem_seg_head
        assert (head.num_classes, head.channels, head.ignore_value) == (classes, 768, 255)
        assert tuple(head.pool_scales) == (1, 2, 3, 6) and head.aux_loss_weight == 0.4
        assert cfg.dataloader.train.total_batch_size == 16 and cfg.train.max_iter == iters
        crop_aug = cfg.dataloader.train.mapper.augmentations[1]
        assert crop_aug._target_ is T.RandomCrop_CategoryAreaConstraint
        assert tuple(crop_aug.crop_size) == crop
        assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (1e-4, 0.05)
        assert cfg.optimizer.params.lr_decay_rate == 0.65
        assert cfg.train.init_checkpoint.startswith(
            "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_base.pth")
        schedule = instantiate(cfg.lr_multiplier)
        assert schedule(0.0) == pytest.approx(1e-6)
        assert schedule(1500 / iters) == pytest.approx(1 - 1500 / iters, rel=1e-3)
        assert schedule(0.5) == pytest.approx(0.5) and schedule(1.0) == pytest.approx(0.0)
        # the mapper checks labels against the head's classes and ignore value
        mapper = instantiate(cfg.dataloader.train.mapper)
        assert (mapper.sem_seg_num_classes, mapper.sem_seg_ignore_value) == (classes, 255)
    assert ade.dataloader.train.mapper.augmentations[1].single_category_max_area == 0.75
    assert ade.model.backbone.img_size == 512
    assert list(cs.dataloader.train.mapper.augmentations[0].short_edge_length) == list(
        range(512, 2049, 256))


@pytest.fixture(scope="module")
def mae_b_file(tmp_path_factory):
    """An MAE ViT-B file as MAE publishes it: {"model": encoder + decoder keys + mask_token}."""
    torch.manual_seed(0)
    encoder = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).state_dict()
    encoder["mask_token"] = torch.zeros(1, 1, 512)
    encoder["decoder_embed.weight"] = torch.randn(512, 768)
    encoder["decoder_norm.weight"] = torch.ones(512)
    path = tmp_path_factory.mktemp("mae") / "mae_pretrain_vit_base.pth"
    torch.save({"model": encoder}, path)
    return path, encoder


def _arrived(model, source) -> bool:
    _, vit = find_vit_backbone(model)
    state = vit.state_dict()
    keys = [k for k in source if k.startswith(("blocks.", "patch_embed."))]
    assert len(keys) == 12 * 12 + 2
    return all(torch.equal(state[k], source[k]) for k in keys)


def _comparable(tree):
    """functools.partial values (norm_layer) as (func, keywords), which compare by value."""
    if isinstance(tree, dict):
        return {k: _comparable(v) for k, v in tree.items()}
    if isinstance(tree, functools.partial):
        return (tree.func, tree.args, tree.keywords)
    return tree


def test_cityscapes_backbones_are_the_ade20k_ones_but_for_the_input_size():
    for name in ("upernet_hpvit_b.py", "upernet_vit_b.py"):
        ade, cs = (_comparable(OmegaConf.to_container(get_config(f"{d}/{name}").model.backbone))
                   for d in ("ade20k", "cityscapes"))
        (ade.get("net") or ade)["img_size"] = (cs.get("net") or cs)["img_size"]
        assert ade == cs, name


# The Cityscapes twins' backbones are the ADE20K ones (test above): loading is tested on ADE20K's.
@pytest.mark.parametrize("config", B_CONFIGS[:2])
def test_b_configs_load_mae_through_the_stock_path_and_ours(config, mae_b_file):
    path, source = mae_b_file
    cfg = get_config(config, ["model.sem_seg_head.channels=32", "model.sem_seg_head.aux_channels=32"])
    query = cfg.train.init_checkpoint.partition("?")[2]
    assert query == "matching_heuristics=True"
    model = instantiate(cfg.model)
    DetectionCheckpointer(model).load(f"{path}?{query}")  # what lazyconfig_train_net.py does
    assert _arrived(model, source)
    _, vit = find_vit_backbone(model)
    with torch.no_grad():
        for p in vit.parameters():
            p.zero_()
    checkpointer = HPViTCheckpointer(model, require="backbone")  # the project's entry, --strict
    checkpointer.load(f"{path}?{query}")
    assert _arrived(model, source)
    assert checkpointer.report.conversion.missing_pretrained == []
    del model
    gc.collect()


def _shrink(cfg) -> None:
    vit = cfg.model.backbone if "net" not in cfg.model.backbone else cfg.model.backbone.net
    vit.update(embed_dim=32, num_heads=2)
    if "out_channels" in cfg.model.backbone:
        cfg.model.backbone.out_channels = 16
    cfg.model.sem_seg_head.update(channels=16, aux_channels=16)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("config", ALL)
def test_config_builds_trains_and_predicts(config):
    cfg = get_config(config)
    _shrink(cfg)
    model = instantiate(cfg.model)
    assert type(model) is SemanticSegmentor and isinstance(model.sem_seg_head, UperNetHead)
    assert model.sem_seg_head.in_features == sorted(model.backbone.output_shape())
    assert len(model.sem_seg_head.in_features) == 4
    assert [s.stride for s in model.backbone.output_shape().values()] == [4, 8, 16, 32]
    assert all(hasattr(a, "get_transform")
               for a in instantiate(cfg.dataloader.test.mapper.augmentations))
    classes = cfg.model.sem_seg_head.num_classes
    batch = [{"image": torch.rand(3, 64, 96) * 255,
              "sem_seg": torch.randint(0, classes, (64, 96))} for _ in range(2)]
    with EventStorage():
        losses = model.train()(batch)
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_aux"}
    assert all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    assert find_vit_backbone(model)[1].patch_embed.proj.weight.grad is not None
    with torch.no_grad():
        out = model.eval()([{"image": batch[0]["image"], "height": 48, "width": 72}])
    assert out[0]["sem_seg"].shape == (classes, 48, 72)
