"""HPViT as a timm classifier: registered names, plain mode equal to timm's ViT (same checkpoint,
same logits), hierarchical shapes, loading plain checkpoints through timm's pretrained path, and
timm's layer-wise lr decay placing the pooling layers."""
import pytest
import timm
import torch
from timm.optim import create_optimizer_v2

import hpvit_d2.timm_models  # noqa: F401  (registers the hpvit_* models)
from hpvit_d2.checkpoint import CheckpointError
from hpvit_d2.modeling.classifier import HPViTClassifier
from hpvit_d2.timm_models import VARIANTS

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["hpvit_base_patch16_224", "hpvit_large_patch16_224", "hpvit_small_patch16_224",
         "hpvit_tiny_patch16_224"]
# Small stand-ins: a timm ViT and an HPViT of the same (reduced) geometry.
SMALL = dict(embed_dim=64, depth=4, num_heads=2)


def test_registered_on_import():
    assert timm.list_models("hpvit_*") == NAMES
    assert timm.is_model("hpvit_base_patch16_224")


def test_registered_by_timm_models_not_by_the_package():
    """``import hpvit_d2`` is light (no timm); ``import hpvit_d2.timm_models`` registers the names."""
    import subprocess
    import sys

    probe = ("import hpvit_d2, timm; before = timm.list_models('hpvit_*'); "
             "import hpvit_d2.timm_models; print(before, timm.list_models('hpvit_*'))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"[] {NAMES}"


def test_base_gives_1000_logits_and_timm_like_names():
    model = timm.create_model("hpvit_base_patch16_224").eval()
    assert isinstance(model, HPViTClassifier)
    assert model.stage_depths == (2, 2, 6, 2) and model.head.weight.shape == (1000, 768)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(93.6e6, rel=0.01)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
    names = {k.split(".")[0] for k in model.state_dict()}
    assert names == {"patch_embed", "pos_embed", "blocks", "pools", "fc_norm", "head"}
    assert model.pretrained_cfg["mean"] == (0.485, 0.456, 0.406)


def test_variants_have_the_geometry_of_timms_vits():
    geometry = {name: (v["embed_dim"], v["depth"], v["num_heads"], v["stage_depths"])
                for name, v in VARIANTS.items()}
    assert geometry == {"hpvit_tiny_patch16_224": (192, 12, 3, (2, 2, 6, 2)),
                        "hpvit_small_patch16_224": (384, 12, 6, (2, 2, 6, 2)),
                        "hpvit_base_patch16_224": (768, 12, 12, (2, 2, 6, 2)),
                        "hpvit_large_patch16_224": (1024, 24, 16, (2, 2, 18, 2))}
    # ViT-L's depth and stages, narrowed to stay fast
    model = timm.create_model("hpvit_large_patch16_224", num_classes=10, embed_dim=32, num_heads=2)
    assert (len(model.blocks), model.stage_depths) == (24, (2, 2, 18, 2))
    assert model.stage_strides == (4, 8, 16, 32) and model.head.out_features == 10


def test_hierarchical_features_and_head():
    model = timm.create_model("hpvit_tiny_patch16_224", num_classes=4, img_size=64, **SMALL,
                              stage_depths=(1, 1, 1, 1)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 2, 2, 64)  # the 1/32 stage, channels last
        assert model.forward_head(features, pre_logits=True).shape == (2, 64)
        assert model(x).shape == (2, 4)
    model.reset_classifier(7)
    assert model.get_classifier().out_features == 7


@pytest.fixture(scope="module")
def timm_vit(tmp_path_factory):
    """A timm ViT-Ti/16 without class token, average-pooled (fc_norm), saved as timm saves it."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", class_token=False, global_pool="avg").eval()
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in vit.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("timm") / "vit_tiny_avg.pth"
    torch.save(vit.state_dict(), path)
    return vit, str(path)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "detectron2_forward"])
def test_plain_mode_reproduces_timm_logits(timm_vit, fused):
    vit, path = timm_vit
    model = timm.create_model("hpvit_tiny_patch16_224", pretrained=True,
                              pretrained_cfg_overlay=dict(file=path), patch_stride=16,
                              stage_depths=(12,), fused_attn=fused).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), vit(x), rtol=0, atol=1e-4)


def test_plain_checkpoint_fills_the_hierarchical_model(timm_vit):
    vit, path = timm_vit
    model = timm.create_model("hpvit_tiny_patch16_224", pretrained=True,
                              pretrained_cfg_overlay=dict(file=path), num_classes=4)
    source, state = vit.state_dict(), model.state_dict()
    for key in source:
        if key.startswith(("blocks.", "patch_embed.", "fc_norm.")):
            assert torch.equal(state[key], source[key]), key
    assert state["pools.0.conv.weight"][0, 0, 0, 0] == 0.25  # new: at the average
    assert state["head.weight"].shape == (4, 192)  # 1000 -> 4 classes: left at initialisation
    # MAE-format file (encoder + decoder keys): the same path
    mae = {"model": {**{k: v for k, v in source.items() if not k.startswith(("head", "fc_norm"))},
                     "mask_token": torch.zeros(1, 1, 8), "decoder_embed.weight": torch.ones(8, 192)}}
    mae_path = path.replace(".pth", "_mae.pth")
    torch.save(mae, mae_path)
    model = timm.create_model("hpvit_tiny_patch16_224", pretrained=True,
                              pretrained_cfg_overlay=dict(file=mae_path))
    assert torch.equal(model.state_dict()["blocks.11.mlp.fc2.weight"], source["blocks.11.mlp.fc2.weight"])
    # One loading path: the project's checkpointer reads the file, names it, and says what fits.
    with pytest.raises(CheckpointError, match=r"vit_tiny_avg\.pth: .*width 192.*build the model "
                                              r"with embed_dim=192, depth=12, patch_size=16"):
        timm.create_model("hpvit_small_patch16_224", pretrained=True,
                          pretrained_cfg_overlay=dict(file=path))
    with pytest.raises(ValueError, match="no HPViT weights are hosted"):
        timm.create_model("hpvit_tiny_patch16_224", pretrained=True)


def test_timm_layer_decay_places_the_pooling_layers():
    model = timm.create_model("hpvit_tiny_patch16_224", num_classes=4, **SMALL,
                              stage_depths=(1, 1, 1, 1))
    optimizer = create_optimizer_v2(model, "adamw", lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scale, decay = {}, {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            scale[id(p)], decay[id(p)] = group["lr_scale"], group["weight_decay"]
    named = dict(model.named_parameters())
    lr = {n: scale[id(p)] for n, p in named.items()}
    wd = {n: decay[id(p)] for n, p in named.items()}
    # 4 blocks: embeddings at layer 0 (0.5^5), block i at i + 1, head and fc_norm at 1.0
    assert lr["patch_embed.proj.weight"] == lr["pos_embed"] == 0.5 ** 5
    for i in range(4):
        assert lr[f"blocks.{i}.attn.qkv.weight"] == 0.5 ** (4 - i)
    for k in range(3):  # pools.k feeds stage k + 1, whose first block is block k + 1
        assert lr[f"pools.{k}.conv.weight"] == lr[f"blocks.{k + 1}.attn.qkv.weight"]
        assert wd[f"pools.{k}.conv.weight"] == 0.0
    assert lr["head.weight"] == lr["fc_norm.weight"] == 1.0
    assert wd["head.weight"] == 0.05 and wd["pos_embed"] == 0.0 and wd["blocks.0.norm1.weight"] == 0.0
