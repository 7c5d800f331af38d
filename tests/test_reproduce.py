"""`make reproduce` at smoke size: every stage runs for real (transformers' ViTMAE pre-training,
the converter in a subprocess, four fine-tunes through the training entry, COCOEvaluator), and
the outputs are what the README promises."""
import json

import numpy as np
from PIL import Image

from hpvit_d2.cli.reproduce import run_reproduce
from hpvit_d2.mae_pretrain import MAESettings, pretrain_mae


def test_reproduce_pipeline_at_smoke_size(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    out = tmp_path / "reproduce"
    records = run_reproduce(["--smoke", "--output-dir", str(out)])
    printed = capsys.readouterr().out
    # The pre-training and the public converter ran as commands, as a user would run them.
    assert "mae (1 thread(s)): python -m hpvit_d2.cli.pretrain_mae --images" in printed
    assert "python -m hpvit_d2.convert" in printed and "--strict" in printed
    assert "[mae] step 4/4" in (out / "mae.log").read_text()

    saved = json.loads((out / "results.json").read_text())
    assert saved == records and len(saved) == 4
    assert {(r["backbone"], r["init"]) for r in saved} == {
        ("hpvit", "mae"), ("hpvit", "scratch"), ("vitdet", "mae"), ("vitdet", "scratch")}
    for record in saved:
        assert record["seed"] == 0 and record["iterations"] == 2
        for key in ("bbox/AP", "segm/AP", "bbox/AP50", "bbox/APs"):
            assert isinstance(record[key], float)
    # The MAE runs started from the converted checkpoint, the scratch runs from nothing.
    for backbone in ("hpvit", "vitdet"):
        log = (out / f"{backbone}_mae_seed0.log").read_text()
        assert "converted into the backbone" not in log  # a converted file is the model's own keys
        assert f"init_mask_rcnn_{backbone}_tiny.pth" in log and "detector checkpoint" in log
        assert "No checkpoint found" in (out / f"{backbone}_scratch_seed0.log").read_text()
    assert (out / "mae" / "config.json").is_file() and (out / "mae" / "model.safetensors").is_file()
    report = (out / "results.md").read_text()
    assert "MAE pre-training helps HPViT by" in report and "vs ViTDet from the same MAE" in report
    with Image.open(out / "curves.png") as image:
        assert image.format == "PNG" and image.width > 500


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
    from hpvit_d2.cli.pretrain_mae import main

    (tmp_path / "empty").mkdir()
    assert run(main, ["--images", str(tmp_path / "empty"), "--output", str(tmp_path / "mae")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --images ") and "no .jpg/.png images" in err and "\n" not in err
    assert not (tmp_path / "mae").exists()


def test_pretrain_command_takes_every_setting_as_a_flag(tmp_path):
    from hpvit_d2.cli.pretrain_mae import parse_args, settings_argv

    settings = MAESettings(width=32, depth=1, mask_ratio=0.6, norm_pix_loss=False, max_crop_scale=0.5)
    args = parse_args(["--images", "x", "--output", "y", *settings_argv(settings)])
    assert MAESettings(**{k: getattr(args, k) for k in settings.__dict__ if k != "num_images"}) == settings
