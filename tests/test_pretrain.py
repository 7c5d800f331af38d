"""The lab's MAE pre-training (transformers' ViTMAE), the make pretrain command that writes the
shipped checkpoint, and the shipped checkpoint itself: its sha256 and its strict conversion into
both tiny detectors."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from hpvit_lab.mae import MAESettings, mae_param_groups, pretrain_mae
from hpvit_lab.pretrain import mae_settings
from hpvit_lab.shipped import SHIPPED_MAE, sha256_of, shipped_checkpoint, verify_checkpoint


def test_the_miniature_keeps_the_papers_proportions():
    from hpvit_d2.model_zoo import get_config

    hpvit = get_config("mask_rcnn_hpvit_tiny.py").model.backbone.bottom_up
    vitdet = get_config("mask_rcnn_vitdet_tiny.py").model.backbone.net
    # At least half of the pre-trained blocks stay at 1/16, as in HPViT-B's (2, 2, 6, 2).
    assert sum(hpvit.stage_depths) == hpvit.depth and 2 * hpvit.stage_depths[2] >= hpvit.depth
    assert (vitdet.embed_dim, vitdet.depth, vitdet.num_heads) == (hpvit.embed_dim, hpvit.depth, hpvit.num_heads)
    # The semantic configs and the MAE use the same trunk.
    semseg = get_config("semseg_hpvit_tiny.py").model.backbone
    assert (semseg.stage_depths, semseg.depth, semseg.pool_type) == (hpvit.stage_depths, hpvit.depth, hpvit.pool_type)
    settings = mae_settings()
    assert (settings.width, settings.depth, settings.heads) == (hpvit.embed_dim, hpvit.depth, hpvit.num_heads)
    # MAE's lightweight decoder: per token at most 30% of the encoder (MAE's ViT-B: 29.6%).
    assert settings.decoder_cost_ratio() <= 0.30
    assert MAESettings(width=768, depth=12, decoder_width=512, decoder_depth=8).decoder_cost_ratio() == \
        pytest.approx(0.296, abs=1e-3)


def test_replayed_wall_time_follows_lanes_and_needs():
    from hpvit_lab.runs import CommandJob, replay_wall

    def job(name, needs=()):
        return CommandJob(name, ["true"], None, needs=needs)

    lanes = [[job("mae"), job("b", ("mae",))], [job("a"), job("c", ("mae",))]]
    durations = {"mae": 10.0, "a": 3.0, "b": 5.0, "c": 1.0}
    assert replay_wall(lanes, durations) == 15.0  # b after mae in lane 0; c waits for mae: 11


def test_mae_pretraining_is_reused_when_settings_match(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    settings = MAESettings(width=32, depth=1, heads=2, image_size=32, decoder_width=32,
                           decoder_depth=1, decoder_heads=2, steps=2, batch_size=2)
    first = pretrain_mae(images, str(tmp_path / "mae"), settings)
    assert not first["cached"] and len(first["losses"]) == 2
    again = pretrain_mae(images, str(tmp_path / "mae"), settings)
    assert again["cached"] and again["losses"] == first["losses"]
    other = pretrain_mae(images, str(tmp_path / "mae"), MAESettings(**{**settings.__dict__, "steps": 3}))
    assert not other["cached"] and len(other["losses"]) == 3


def test_pretrain_command_names_a_folder_without_images(tmp_path, capsys):
    from hpvit_d2.cli.common import run
    from hpvit_lab.pretrain_mae import main

    (tmp_path / "empty").mkdir()
    assert run(main, ["--images", str(tmp_path / "empty"), "--output", str(tmp_path / "mae")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --images ") and "no .jpg/.png images" in err and "\n" not in err
    assert not (tmp_path / "mae").exists()


def test_pretrain_command_takes_every_setting_as_a_flag(tmp_path):
    from hpvit_lab.pretrain_mae import parse_args, settings_argv

    settings = MAESettings(width=32, depth=1, mask_ratio=0.6, norm_pix_loss=False, max_crop_scale=0.5)
    args = parse_args(["--images", "x", "--output", "y", *settings_argv(settings)])
    assert MAESettings(**{k: getattr(args, k) for k in settings.__dict__ if k != "num_images"}) == settings



def test_mae_parameter_groups_decay_only_weight_matrices():
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    model = ViTMAEForPreTraining(ViTMAEConfig(hidden_size=32, num_hidden_layers=1,
                                              num_attention_heads=2, intermediate_size=64,
                                              image_size=32, patch_size=16, decoder_hidden_size=32,
                                              decoder_num_hidden_layers=1,
                                              decoder_num_attention_heads=2,
                                              decoder_intermediate_size=64))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = mae_param_groups(model, 0.05)
    undecayed = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert {"vit.embeddings.cls_token", "decoder.mask_token"} <= undecayed
    assert all(n.endswith(".bias") or "norm" in n or "token" in n for n in undecayed)
    assert decayed and all(n.endswith(".weight") and "norm" not in n for n in decayed)
    everything = mae_param_groups(model, 0.05, decay_only_matrices=False)
    assert len(everything) == 1 and everything[0]["weight_decay"] == 0.05


@pytest.mark.parametrize("name, image_size", [("mae_tiny_shapes", 256), ("mae_tiny_shapes64", 64)])
def test_the_shipped_checkpoints_match_their_sums_and_recipes(name, image_size):
    directory = shipped_checkpoint(name)
    sums = verify_checkpoint(directory)
    assert sums["model.safetensors"] == sha256_of(directory / "model.safetensors")
    recipe = json.loads((directory / "recipe.json").read_text())
    assert recipe["sha256"] == sums and recipe["command"].startswith("python -m hpvit_lab.pretrain")
    if name != "mae_tiny_shapes":
        assert f"--checkpoint {name}" in recipe["command"]
    settings = recipe["settings"]
    trunk = mae_settings(name)
    assert (settings["width"], settings["depth"], settings["heads"], settings["patch_size"]) == \
        (trunk.width, trunk.depth, trunk.heads, trunk.patch_size)
    # pre-trained at the resolution its miniatures fine-tune at, with the recipe in the code
    assert settings["image_size"] == image_size == trunk.image_size
    assert (settings["steps"], settings["lr"], settings["batch_size"]) == \
        (trunk.steps, trunk.lr, trunk.batch_size)
    assert settings["decay_only_matrices"]
    losses = [piece["mean_loss"] for piece in recipe["loss_summary"]]
    assert len(losses) == 10 and losses[-1] < losses[0]
    assert (directory / "model.safetensors").stat().st_size < 10 * 2 ** 20  # a few MB


@pytest.mark.parametrize("kwargs", [dict(patch_stride=16, stage_depths=(6,)),
                                    dict(stage_depths=(1, 1, 3, 1), pool_type="avg")])
def test_the_classification_checkpoint_loads_strictly_into_both_classifiers(kwargs):
    """The classification study's two models at 64 px take every encoder weight of
    mae_tiny_shapes64 (what hpvit-classify --pretrained DIR --strict does)."""
    import timm

    from hpvit_d2 import timm_models  # noqa: F401
    from hpvit_d2.checkpoint import HPViTCheckpointer

    trunk = mae_settings("mae_tiny_shapes64")
    model = timm.create_model("hpvit_tiny_patch16_224", num_classes=4, img_size=64,
                              embed_dim=trunk.width, depth=trunk.depth, num_heads=trunk.heads,
                              **kwargs)
    before = model.blocks[5].mlp.fc2.weight.detach().clone()
    HPViTCheckpointer(model, require="backbone").load(str(shipped_checkpoint("mae_tiny_shapes64")))
    assert not torch.equal(before, model.blocks[5].mlp.fc2.weight)
    logits = model(torch.zeros(2, 3, 64, 64))
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()


@pytest.mark.parametrize("config", ["mask_rcnn_hpvit_tiny.py", "mask_rcnn_vitdet_tiny.py"])
def test_the_shipped_checkpoint_converts_strictly_into_both_tiny_detectors(config, tmp_path):
    out = tmp_path / "init.pth"
    proc = subprocess.run([sys.executable, "-m", "hpvit_d2.convert", str(SHIPPED_MAE), str(out),
                           "--config-file", config, "--strict"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = torch.load(out, map_location="cpu", weights_only=True)
    weights = state.get("model", state)
    blocks = [k for k in weights if ".blocks.5.mlp.fc2.weight" in k]
    assert len(blocks) == 1 and torch.isfinite(weights[blocks[0]]).all()


def test_make_pretrain_writes_a_checkpoint_with_its_sums(tmp_path, monkeypatch):
    from hpvit_d2.cli.common import run
    from hpvit_lab.pretrain import main

    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    out = tmp_path / "mae"
    assert run(main, ["--smoke", "--output", str(out), "--work-dir", str(tmp_path / "work")]) == 0
    assert verify_checkpoint(out) == {name: sha256_of(out / name)
                                      for name in ("config.json", "model.safetensors")}
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["settings"]["steps"] == 3 and len(recipe["loss_summary"]) == 3


def test_make_pretrain_makes_the_classification_checkpoint_from_its_own_images(tmp_path, monkeypatch):
    from hpvit_d2.cli.common import run
    from hpvit_lab.pretrain import UNLABELLED_SPLIT_64, main

    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    out = tmp_path / "mae64"
    assert run(main, ["--smoke", "--checkpoint", "mae_tiny_shapes64", "--output", str(out),
                      "--work-dir", str(tmp_path / "work")]) == 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["settings"]["image_size"] == 64 and recipe["settings"]["num_images"] == 16
    assert recipe["unlabelled_split"]["seed"] == UNLABELLED_SPLIT_64["seed"] != 0  # not the study's
    trees = list((tmp_path / "data").glob("shapes-v*/classification-*-s64-seed98"))
    assert len(trees) == 1 and len(list((trees[0] / "train").rglob("*.png"))) == 16


def test_make_pretrain_refuses_a_sweep_of_the_classification_checkpoint(capsys):
    from hpvit_lab.pretrain import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--checkpoint", "mae_tiny_shapes64", "--sweep-lr", "1e-3"])
    assert "--sweep-lr: the proxy fine-tunes a detector" in capsys.readouterr().err
