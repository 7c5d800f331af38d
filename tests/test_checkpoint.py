"""Plain-ViT checkpoint reuse: every source format converts, loads and lands where it should;
reading is safe; the converter refuses what cannot fill its target."""
import os
import pickle
import subprocess
import sys

import pytest
import timm
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import FPN, ViT

from hpvit_d2.checkpoint import (CheckpointError, HPViTCheckpointer, IncompatibleCheckpointError,
                                 convert_plain_vit, load_checkpoint_file)
from hpvit_d2.cli.convert import main as convert_main
from hpvit_d2.modeling import HPViT
from hpvit_d2.modeling.position import resize_rel_pos

WIDTH, DEPTH, HEADS = 192, 12, 3  # timm's vit_tiny / deit_tiny


def target_hpvit(**kw):
    args = dict(img_size=128, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, window_size=4,
                window_block_indexes=tuple(range(6)), stage_depths=(2, 2, 6, 2), use_rel_pos=True)
    args.update(kw)
    return HPViT(**args)


def assert_blocks_equal(model, source, prefix=""):
    for name, value in model.state_dict().items():
        if name.startswith("blocks.") and "rel_pos" not in name:
            torch.testing.assert_close(value, torch.as_tensor(source[prefix + name]), msg=name)
    torch.testing.assert_close(model.patch_embed.proj.weight,
                               torch.as_tensor(source[prefix + "patch_embed.proj.weight"]))


def mae_checkpoint():
    """An MAE-style {'model': ...} dict: timm encoder keys plus decoder and mask token."""
    encoder = timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()
    encoder = {k: v for k, v in encoder.items() if not k.startswith("head.")}
    encoder["mask_token"] = torch.randn(1, 1, 128)
    encoder["decoder_embed.weight"] = torch.randn(128, WIDTH)
    encoder["decoder_pos_embed"] = torch.randn(1, 197, 128)
    encoder["decoder_blocks.0.norm1.weight"] = torch.randn(128)
    encoder["decoder_pred.weight"] = torch.randn(768, 128)
    return {"model": encoder}


def test_mae_lands_and_reports_new_layers():
    ckpt = mae_checkpoint()
    model = target_hpvit()
    state, report = convert_plain_vit(ckpt, model)
    assert report.source_format == "MAE"
    model.load_state_dict(state, strict=False)
    assert_blocks_equal(model, ckpt["model"])
    torch.testing.assert_close(model.pos_embed, ckpt["model"]["pos_embed"])
    assert {"mask_token", "cls_token", "norm.weight", "decoder_embed.weight"} <= set(report.unused)
    # Only the pooling layers and the rel-pos tables (MAE has none) stay at initialisation.
    assert all(k.startswith("pools.") or "rel_pos" in k for k in report.missing)
    assert {k for k in report.missing if k.startswith("pools.")} == {
        n for n in model.state_dict() if n.startswith("pools.")}
    assert report.missing_pretrained == []


def test_deit_distilled_and_larger_grid_resize_position_embedding():
    deit = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False).state_dict()
    assert deit["pos_embed"].shape == (1, 198, WIDTH)
    model = target_hpvit()
    state, report = convert_plain_vit(deit, model)
    assert report.source_format == "DeiT/timm"
    assert report.resized["pos_embed"] == ((1, 198, WIDTH), (1, 197, WIDTH))
    # Class slot kept, distillation slot dropped, grid unchanged.
    torch.testing.assert_close(state["pos_embed"][:, 0], deit["pos_embed"][:, 0])
    torch.testing.assert_close(state["pos_embed"][:, 1:], deit["pos_embed"][:, 2:])
    assert "dist_token" in report.unused and "head_dist.weight" in report.unused

    vit384 = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=384).state_dict()
    state, report = convert_plain_vit(vit384, model)
    assert report.resized["pos_embed"] == ((1, 577, WIDTH), (1, 197, WIDTH))
    model.load_state_dict(state, strict=False)
    assert_blocks_equal(model, vit384)


def vitdet_state(img_size=224):
    vit = ViT(img_size=img_size, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, window_size=7,
              window_block_indexes=(0, 1, 3, 4, 6, 7, 9, 10), use_rel_pos=True,
              rel_pos_zero_init=False)
    state = {"backbone.net." + k: v for k, v in vit.state_dict().items()}
    state["roi_heads.box_predictor.cls_score.weight"] = torch.randn(81, 1024)
    return state


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_vitdet_checkpoint_files_resize_rel_pos(tmp_path, suffix):
    state = vitdet_state()
    path = tmp_path / f"vitdet{suffix}"
    if suffix == ".pkl":
        with open(path, "wb") as f:
            pickle.dump({"model": {k: v.numpy() for k, v in state.items()},
                         "__author__": "test"}, f)
    else:
        torch.save({"model": state, "iteration": 5}, path)
    model = target_hpvit(window_size=7)
    checkpointer = HPViTCheckpointer(model, require="backbone")
    checkpointer.load(str(path))
    report = checkpointer.report.conversion
    assert report.source_format == "ViTDet (detectron2)"
    assert "roi_heads.box_predictor.cls_score.weight" in report.unused
    assert_blocks_equal(model, state, prefix="backbone.net.")
    # Window blocks (7x7) keep their tables; global blocks (224/16=14 -> 128/16=8, 128/32=4) resize.
    torch.testing.assert_close(model.blocks[0].attn.rel_pos_h, state["backbone.net.blocks.0.attn.rel_pos_h"])
    src = state["backbone.net.blocks.11.attn.rel_pos_w"]
    assert report.resized["blocks.11.attn.rel_pos_w"] == ((27, 64), (7, 64))
    torch.testing.assert_close(model.blocks[11].attn.rel_pos_w, resize_rel_pos(src, 7))
    assert report.missing == [k for k in model.state_dict() if k.startswith("pools.")]


def test_bare_plain_state_dict_round_trip():
    plain = HPViT(img_size=224, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, patch_stride=16,
                  stage_depths=(DEPTH,), out_features=("scale4",), rel_pos_zero_init=False,
                  use_rel_pos=True,
                  window_size=7, window_block_indexes=(0, 1))
    state, report = convert_plain_vit(plain.state_dict(), ViT(img_size=224, embed_dim=WIDTH,
                                      depth=DEPTH, num_heads=HEADS, use_rel_pos=True,
                                      window_size=7, window_block_indexes=(0, 1)))
    assert report.source_format == "bare ViT state dict"
    assert report.missing == [] and report.unused == [] and report.resized == {}
    for k, v in state.items():
        assert torch.equal(v, plain.state_dict()[k])


def test_resize_rel_pos_matches_detectron2_runtime_interpolation():
    from detectron2.modeling.backbone.utils import get_rel_pos

    table = torch.randn(27, 16)
    ours = resize_rel_pos(table, 15)
    runtime = get_rel_pos(8, 8, table)  # detectron2 resizes to 2*8-1=15 before gathering
    torch.testing.assert_close(get_rel_pos(8, 8, ours), runtime)


def test_not_a_vit_checkpoint_is_an_error(tmp_path):
    with pytest.raises(IncompatibleCheckpointError, match="patch_embed.proj.weight"):
        convert_plain_vit({"model": {"conv1.weight": torch.zeros(3)}}, target_hpvit())
    path = tmp_path / "resnet.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(3)}}, path)
    with pytest.raises(CheckpointError, match=f"{path}: not a ViT checkpoint"):
        HPViTCheckpointer(target_hpvit()).load(str(path))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    with open(path, "wb") as f:
        pickle.dump({"model": {"patch_embed.proj.weight": _Payload(marker)}}, f)
    with pytest.raises(CheckpointError, match=str(path)) as error:
        load_checkpoint_file(str(path))
    if suffix != ".pkl":  # .pkl: the project's own unpickler names the refused class
        assert "refused: it holds objects other than tensors" in str(error.value)
    assert "weights_only" not in str(error.value)  # never torch's advice to turn the check off
    with pytest.raises(CheckpointError, match=str(path)):  # through the checkpointer too
        HPViTCheckpointer(target_hpvit()).load(str(path))
    assert not marker.exists()


def write_tiny_config(directory):
    """A LazyConfig whose model is an FPN over a tiny HPViT (backbone prefix 'bottom_up.')."""
    config = directory / "tiny_cfg.py"
    config.write_text(
        "from detectron2.config import LazyCall as L\n"
        "from detectron2.modeling import FPN\n"
        "from hpvit_d2.modeling import HPViT\n"
        f"model = L(FPN)(bottom_up=L(HPViT)(img_size=128, embed_dim={WIDTH}, depth={DEPTH}, "
        f"num_heads={HEADS}, window_size=4, window_block_indexes=(0, 1, 2, 3, 4, 5)), "
        "in_features=('scale2', 'scale3', 'scale4', 'scale5'), out_channels=32)\n"
    )
    return config


def test_cli_writes_file_detectron2_checkpointer_loads(tmp_path, capsys):
    src = tmp_path / "mae.pth"
    ckpt = mae_checkpoint()
    torch.save(ckpt, src)
    config = write_tiny_config(tmp_path)
    dst = tmp_path / "out" / "hpvit_init.pth"
    assert convert_main([str(src), str(dst), "--config", str(config)]) == 0
    printed = capsys.readouterr().err  # the load report: logged once, on stderr
    assert printed.count("(MAE, converted into the backbone)") == 1
    assert "bottom_up.pools.0.conv.{bias, weight}" in printed and "bottom_up 6" in printed

    detector = FPN(bottom_up=target_hpvit(), in_features=["scale2", "scale3", "scale4", "scale5"],
                   out_channels=32)
    DetectionCheckpointer(detector).load(str(dst))
    assert_blocks_equal(detector.bottom_up, ckpt["model"])
    assert not [p for p in os.listdir(dst.parent) if p.startswith(".tmp")]


def test_cli_strict_refuses_missing_block_weight(tmp_path, capsys):
    ckpt = mae_checkpoint()
    del ckpt["model"]["blocks.3.mlp.fc1.weight"]
    src = tmp_path / "mae.pth"
    torch.save(ckpt, src)
    dst = tmp_path / "out.pth"
    config = str(write_tiny_config(tmp_path))
    with pytest.raises(CheckpointError, match="1 pre-trained backbone weights missing"):
        convert_main([str(src), str(dst), "--config", config, "--strict"])
    assert not dst.exists()
    # Without --strict it converts and reports the missing weight.
    assert convert_main([str(src), str(dst), "--config", config]) == 0
    assert "bottom_up.blocks.3.mlp.fc1.weight" in capsys.readouterr().err


def test_cli_unreadable_file_one_line_no_traceback(tmp_path):
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint at all")
    proc = subprocess.run([sys.executable, "-m", "hpvit_d2.convert", str(bad), str(tmp_path / "o.pth")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if not line.lstrip().startswith(("warnings.", "/"))]
    assert len(err) == 1 and err[0].startswith("error: ") and str(bad) in err[0]
    assert "Traceback" not in proc.stderr
    # It says what the file is, not torch's advice to load it with the safety check off.
    assert "not a checkpoint" in err[0] and "b'not a ch'" in err[0] and "weights_only" not in err[0]
    missing = subprocess.run([sys.executable, "-m", "hpvit_d2.convert", str(tmp_path / "nope.pth"),
                              str(tmp_path / "o.pth")], capture_output=True, text=True)
    assert missing.returncode == 2 and "no such file" in missing.stderr
