"""Small ViTs are first-class: the ViT-S/16 and ViT-Ti/16 configs (HPViT and ViTDet twins) take
timm's and DeiT's checkpoints; the converter picks the config that fits when none is given, and
the file it writes trains that config."""
import subprocess
import sys

import pytest
import timm
import torch
from detectron2.config import instantiate
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from hpvit_d2 import model_zoo
from hpvit_d2.checkpoint import HPViTCheckpointer


@pytest.mark.parametrize("twin", ["s", "ti"])
def test_small_twins_differ_only_in_the_backbone(twin):
    hpvit = model_zoo.get_config(f"mask_rcnn_hpvit_{twin}.py")
    vitdet = model_zoo.get_config(f"mask_rcnn_vitdet_{twin}.py")
    width, heads = {"s": (384, 6), "ti": (192, 3)}[twin]
    assert (hpvit.model.backbone.bottom_up.embed_dim, hpvit.model.backbone.bottom_up.num_heads) == (width, heads)
    assert (vitdet.model.backbone.net.embed_dim, vitdet.model.backbone.net.num_heads) == (width, heads)
    for cfg in (hpvit, vitdet):
        cfg.model.pop("backbone")
    assert hpvit == vitdet


@pytest.mark.parametrize("timm_name, config", [("vit_small_patch16_224", "mask_rcnn_hpvit_s.py"),
                                               ("deit_tiny_patch16_224", "mask_rcnn_hpvit_ti.py")])
def test_a_small_timm_checkpoint_converts_without_a_config_and_trains(tmp_path, timm_name, config):
    src, dst = tmp_path / f"{timm_name}.pth", tmp_path / "init.pth"
    torch.save(timm.create_model(timm_name, pretrained=False).state_dict(), src)
    proc = subprocess.run([sys.executable, "-m", "hpvit_d2.convert", str(src), str(dst), "--strict"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"config: {config} (the shipped HPViT config whose ViT fits")
    # The load report is printed once (by the checkpointer, on stderr), not again on stdout.
    assert (proc.stdout + proc.stderr).count(f"Loaded {src} (DeiT/timm, converted into the backbone)") == 1
    assert "left at initialisation" not in proc.stdout

    # One training iteration of the named config from the converted file (every tensor of it
    # loaded, as the training entry loads train.init_checkpoint), on a small CPU batch.
    cfg = model_zoo.get_config(config, ["train.device=cpu", "model.backbone.square_pad=256",
                                        "model.roi_heads.num_classes=4"])
    model = instantiate(cfg.model).train()
    checkpointer = HPViTCheckpointer(model)
    checkpointer.load(str(dst))
    assert sorted(checkpointer.report.loaded) == sorted(torch.load(dst)["model"])
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    image = torch.rand(3, 256, 256) * 255
    target = Instances((256, 256), gt_boxes=Boxes(torch.tensor([[32.0, 40.0, 150.0, 200.0]])),
                       gt_classes=torch.tensor([1]))
    mask = torch.zeros(1, 256, 256, dtype=torch.bool)
    mask[:, 40:200, 32:150] = True
    target.gt_masks = BitMasks(mask)
    before = model.backbone.bottom_up.blocks[0].attn.qkv.weight.detach().clone()
    with EventStorage():
        losses = model([{"image": image, "height": 256, "width": 256, "instances": target}])
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.backbone.bottom_up.blocks[0].attn.qkv.weight)
