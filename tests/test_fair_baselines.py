"""Fair baselines by construction: every HPViT config and its ViTDet twin differ only in the
backbone, and both load the same MAE checkpoint completely through detectron2's stock loading
path and through the project's; the pooling layers have an explicit place in the optimizer."""
import gc

import pytest
import timm
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from omegaconf import OmegaConf

from hpvit_d2.checkpoint import HPViTCheckpointer
from hpvit_d2.model_zoo import get_config
from hpvit_d2.modeling import find_vit_backbone
from hpvit_d2.solver import vit_optimizer_params

TWINS = [
    ("mask_rcnn_hpvit_b.py", "mask_rcnn_vitdet_b.py"),
    ("cityscapes/mask_rcnn_hpvit_b.py", "cityscapes/mask_rcnn_vitdet_b.py"),
    ("mask_rcnn_hpvit_tiny.py", "mask_rcnn_vitdet_tiny.py"),
]
B_CONFIGS = [name for pair in TWINS[:2] for name in pair]


def without_backbone(cfg) -> dict:
    """The five names the stock tool reads, without model.backbone."""
    tree = {k: OmegaConf.to_container(cfg[k], resolve=False)
            for k in ("model", "dataloader", "train", "optimizer", "lr_multiplier")}
    del tree["model"]["backbone"]
    del tree["train"]["output_dir"]  # names the run, not the experiment
    return tree


@pytest.mark.parametrize("hpvit, vitdet", TWINS)
def test_twins_differ_only_in_the_backbone(hpvit, vitdet):
    a, b = get_config(hpvit), get_config(vitdet)
    assert without_backbone(a) == without_backbone(b)
    assert a.train.init_checkpoint == b.train.init_checkpoint
    # Same padding policy: both pad to the same square (or neither does).
    assert a.model.backbone.square_pad == b.model.backbone.square_pad


@pytest.fixture(scope="module")
def mae_b_file(tmp_path_factory):
    """An MAE ViT-B file as MAE publishes it: {"model": encoder + decoder keys + mask_token}."""
    torch.manual_seed(0)
    encoder = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).state_dict()
    encoder["mask_token"] = torch.zeros(1, 1, 512)
    encoder["decoder_embed.weight"] = torch.randn(512, 768)
    encoder["decoder_pos_embed"] = torch.zeros(1, 197, 512)
    encoder["decoder_blocks.0.attn.qkv.weight"] = torch.randn(1536, 512)
    encoder["decoder_blocks.0.norm1.weight"] = torch.ones(512)
    encoder["decoder_norm.weight"] = torch.ones(512)
    encoder["decoder_pred.weight"] = torch.randn(768, 512)
    path = tmp_path_factory.mktemp("mae") / "mae_pretrain_vit_base.pth"
    torch.save({"model": encoder}, path)
    return path, encoder


def assert_every_block_and_patch_tensor_arrived(model, source):
    prefix, vit = find_vit_backbone(model)
    state = vit.state_dict()
    expected = [k for k in source if k.startswith(("blocks.", "patch_embed."))]
    assert len(expected) == 12 * 12 + 2
    for key in expected:
        assert torch.equal(state[key], source[key]), prefix + key


@pytest.mark.parametrize("config", B_CONFIGS)
def test_b_configs_load_mae_through_the_stock_path_and_ours(config, mae_b_file):
    path, source = mae_b_file
    cfg = get_config(config)
    query = cfg.train.init_checkpoint.partition("?")[2]
    assert query == "matching_heuristics=True", cfg.train.init_checkpoint
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    DetectionCheckpointer(model).load(f"{path}?{query}")  # what lazyconfig_train_net.py does
    assert_every_block_and_patch_tensor_arrived(model, source)
    # The project's entry: the same file, converted, every pre-trained weight required. Into the
    # same model (a ViT-B detector takes seconds to build), its trunk zeroed first: every tensor
    # compared must arrive again.
    with torch.no_grad():
        for tensor in find_vit_backbone(model)[1].state_dict().values():
            tensor.zero_()
    assert not torch.equal(find_vit_backbone(model)[1].state_dict()["blocks.0.attn.qkv.weight"],
                           source["blocks.0.attn.qkv.weight"])
    checkpointer = HPViTCheckpointer(model, require="backbone")
    checkpointer.load(f"{path}?{query}")
    assert_every_block_and_patch_tensor_arrived(model, source)
    assert checkpointer.report.conversion.missing_pretrained == []
    del model
    gc.collect()


def test_pooling_layers_have_their_place_in_lr_decay_and_weight_decay():
    cfg = get_config("mask_rcnn_hpvit_tiny.py")
    cfg.model.backbone.bottom_up.pool_type = "conv"  # the pooling with weights
    model = instantiate(cfg.model)
    groups = vit_optimizer_params(model, base_lr=1.0, lr_decay_rate=0.5, weight_decay_norm=0.0)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    lr = {n: by_param[id(p)]["lr"] for n, p in named.items()}
    wd = {n: by_param[id(p)].get("weight_decay") for n, p in named.items()}
    bb = "backbone.bottom_up."
    depth, stages = cfg.model.backbone.bottom_up.depth, cfg.model.backbone.bottom_up.stage_depths
    # patch at layer 0 (0.5^(depth+1)), block i at i+1, heads at full lr.
    assert lr[bb + "patch_embed.proj.weight"] == 0.5 ** (depth + 1)
    for i in range(depth):
        assert lr[bb + f"blocks.{i}.attn.qkv.weight"] == 0.5 ** (depth - i)
    # pools.k feeds stage k+1, whose first block is sum(stages[:k+1]): the same lr.
    for k in range(3):
        first = sum(stages[:k + 1])
        assert lr[bb + f"pools.{k}.conv.weight"] == lr[bb + f"blocks.{first}.attn.qkv.weight"]
        assert wd[bb + f"pools.{k}.conv.weight"] == 0.0 and wd[bb + f"pools.{k}.conv.bias"] == 0.0
    assert lr["roi_heads.box_predictor.cls_score.weight"] == 1.0
    assert wd["roi_heads.box_predictor.cls_score.weight"] is None  # the optimizer's (0.05)
    assert wd[bb + "blocks.0.attn.qkv.weight"] is None and wd[bb + "pos_embed"] == 0.0
    # ViTDet: the same function, no pools, depth read from its ViT.
    vitdet = instantiate(get_config("mask_rcnn_vitdet_tiny.py").model)
    groups = vit_optimizer_params(vitdet, base_lr=1.0, lr_decay_rate=0.5)
    lrs = {n: g["lr"] for g in groups for n, p in vitdet.named_parameters() if any(p is q for q in g["params"])}
    wds = {n: g.get("weight_decay") for g in groups for n, p in vitdet.named_parameters()
           if any(p is q for q in g["params"])}
    assert lrs[f"backbone.net.blocks.{depth - 1}.mlp.fc1.weight"] == 0.5
    assert lrs["backbone.net.pos_embed"] == 0.5 ** (depth + 1)
    # The no-decay set is read from the model: HPViT's no_weight_decay(), ViTDet's pos_embed.
    assert model.backbone.bottom_up.no_weight_decay() == {"pos_embed", "pools.*"}
    assert wds["backbone.net.pos_embed"] == 0.0 and wds["backbone.net.blocks.0.mlp.fc1.weight"] is None
    # An override by name takes precedence over the model's set.
    groups = vit_optimizer_params(model, base_lr=1.0, overrides={"pos_embed": {"weight_decay": 0.3}})
    assert [g.get("weight_decay") for g in groups if any(p is model.backbone.bottom_up.pos_embed
                                                         for p in g["params"])] == [0.3]
