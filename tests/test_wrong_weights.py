"""No wrong weights in silence: inference loads strictly and names the cause; the converter refuses
sources that cannot fill its target; the report counts every part left at initialisation;
written files respect the umask."""
import os
import stat
import subprocess
import sys

import pytest
import timm
import torch
from detectron2.config import instantiate

from hpvit_d2 import model_zoo
from hpvit_d2.checkpoint import CheckpointError, HPViTCheckpointer
from hpvit_d2.cli.convert import main as convert_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def hpvit_tiny_detector(tmp_path_factory):
    """A trained-detector-like file of the HPViT-tiny config (its own keys)."""
    torch.manual_seed(0)
    model = instantiate(model_zoo.get_config("mask_rcnn_hpvit_tiny.py").model)
    path = tmp_path_factory.mktemp("ckpt") / "hpvit_tiny_final.pth"
    torch.save({"model": model.state_dict(), "iteration": 239}, path)
    return path


def test_detector_of_another_backbone_is_refused_for_inference(hpvit_tiny_detector):
    with pytest.raises(CheckpointError, match=r"HPViT detector checkpoint \(keys backbone.bottom_up\.\*\); "
                                              r"the config builds ViTDet"):
        model_zoo.get("mask_rcnn_vitdet_tiny.py", weights=str(hpvit_tiny_detector), strict=True)
    # Its own config loads it completely.
    model = model_zoo.get("mask_rcnn_hpvit_tiny.py", weights=str(hpvit_tiny_detector))
    saved = torch.load(hpvit_tiny_detector)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert len(model.state_dict()) == len(saved)


def test_demo_refuses_the_pairing_in_one_line(tmp_path, hpvit_tiny_detector):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "projects", "HPViT", "demo.py"), "--config-file",
         "mask_rcnn_vitdet_tiny.py", "--input", str(tmp_path / "a.png"), "--output",
         str(tmp_path / "vis"), "--weights", str(hpvit_tiny_detector)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the config builds ViTDet" in errors[0]
    assert not (tmp_path / "vis" / "a.png").exists()


def test_num_classes_mismatch_names_the_cause(tmp_path, hpvit_tiny_detector):
    with pytest.raises(CheckpointError, match=r"num_classes differs \(checkpoint 4 classes, config 3\)"):
        model_zoo.get("mask_rcnn_hpvit_tiny.py", weights=str(hpvit_tiny_detector),
                      overrides=["model.roi_heads.num_classes=3"])


def test_report_counts_every_part_left_at_initialisation(tmp_path):
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, embed_dim=128,
                            depth=6, num_heads=4)
    path = tmp_path / "plain.pth"
    torch.save({"model": vit.state_dict()}, path)
    model = instantiate(model_zoo.get_config("mask_rcnn_hpvit_tiny.py").model)
    checkpointer = HPViTCheckpointer(model, require="nothing")
    checkpointer.load(str(path))
    report = checkpointer.report
    total = len(model.state_dict())
    assert len(report.loaded) + len(report.left_at_init) == total
    parts = report.parts_left_at_init()
    trunk = model_zoo.get_config("mask_rcnn_hpvit_tiny.py").model.backbone.bottom_up
    pools = 6 if trunk.pool_type == "conv" else 0  # three pooling convs (weight, bias) or none
    assert parts["backbone.bottom_up"] == pools + 2 * trunk.depth  # + two rel-pos tables a block
    assert parts["roi_heads"] > 0 and parts["proposal_generator"] > 0
    assert sum(v for k, v in parts.items() if k.startswith("backbone.fpn")) > 0
    assert f"left at initialisation: {len(report.left_at_init)} tensors" in report.summary()
    with pytest.raises(CheckpointError, match="plain ViT checkpoint"):
        HPViTCheckpointer(instantiate(model_zoo.get_config("mask_rcnn_hpvit_tiny.py").model),
                          require="everything").load(str(path))


@pytest.mark.parametrize("width, depth, fits", [
    (256, 12, "no shipped config fits; override an HPViT-B config's ViT: "
              "model.backbone.bottom_up.embed_dim=256 model.backbone.bottom_up.num_heads=4 "),
    (384, 12, "configs that fit: mask_rcnn_hpvit_s.py, mask_rcnn_vitdet_s.py"),
    (128, 6, "configs that fit: mask_rcnn_hpvit_tiny.py, mask_rcnn_vitdet_tiny.py"),
])
def test_converter_refuses_a_vit_of_another_size(tmp_path, width, depth, fits):
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, embed_dim=width, depth=depth,
                            num_heads=4)
    src, dst = tmp_path / "vit.pth", tmp_path / "out.pth"
    torch.save(vit.state_dict(), src)
    proc = subprocess.run([sys.executable, "-m", "hpvit_d2.convert", str(src), str(dst),
                           "--config", "mask_rcnn_hpvit_b.py"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and not dst.exists(), proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"the checkpoint's ViT (width {width}, depth {depth}, patch 16) cannot fill the " \
           "model's (width 768, depth 12, patch 16)" in proc.stderr
    assert fits in proc.stderr
    if "override" in fits:  # the suggested overrides are ones the converter takes, and they fit
        suggested = [w for w in proc.stderr.split("config's ViT: ")[1].split() if "=" in w]
        proc = subprocess.run([sys.executable, "-m", "hpvit_d2.convert", str(src), str(dst),
                               "--config-file", "mask_rcnn_hpvit_b.py", *suggested],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and dst.exists(), proc.stderr[-2000:]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o007, 0o660)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        model = torch.nn.Linear(3, 3)
        HPViTCheckpointer(model, str(tmp_path)).save("model_0000001", iteration=1)
        vit = timm.create_model("vit_base_patch16_224", pretrained=False, embed_dim=128, depth=6,
                                num_heads=4)
        torch.save(vit.state_dict(), tmp_path / "vit.pth")
        assert convert_main([str(tmp_path / "vit.pth"), str(tmp_path / "init.pth"), "--config",
                             "mask_rcnn_hpvit_tiny.py"]) == 0
    finally:
        os.umask(previous)
    for name in ("model_0000001.pth", "last_checkpoint", "init.pth"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
