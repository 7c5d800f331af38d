"""`make reproduce` at smoke size: every stage runs for real (transformers' ViTMAE pre-training,
the converter in a subprocess, four fine-tunes through the training entry, COCOEvaluator), and
the outputs are what the README promises."""
import json

import numpy as np
from PIL import Image

import pytest

from hpvit_lab.reproduce import claims_table, config_pool, mae_settings, run_reproduce, verdict
from hpvit_lab.mae import MAESettings, pretrain_mae


def test_reproduce_pipeline_at_smoke_size(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    out = tmp_path / "reproduce"
    # Two seeds keep the suite short; that a smoke run never says a verdict even at three seeds is
    # checked on the same claims table in test_claims_table_pairs_seeds_and_says_why_there_is_no_verdict.
    argv = ["--smoke", "--seeds", "0", "1", "--output-dir", str(out)]
    records = run_reproduce(argv)
    printed = capsys.readouterr().out
    # The pre-training and the public converter ran as commands, as a user would run them.
    assert "mae (1 thread(s)): python -m hpvit_lab.pretrain_mae --images" in printed
    assert "python -m hpvit_d2.convert" in printed and "--strict" in printed
    assert "[mae] step 4/4" in (out / "mae.log").read_text()

    saved = json.loads((out / "results.json").read_text())
    assert saved == records and len(saved) == 8
    for backbone in ("hpvit", "vitdet"):
        for init in ("mae", "scratch"):
            assert sorted(r["seed"] for r in saved if (r["backbone"], r["init"]) == (backbone, init)) == [0, 1]
    for record in saved:
        assert record["iterations"] == 2 and record["seconds"] > 0
        assert record["pool"] == (config_pool() if record["backbone"] == "hpvit" else None)
        for key in ("bbox/AP", "segm/AP", "bbox/AP50", "bbox/APs"):
            assert isinstance(record[key], float)
    # The MAE runs started from the converted checkpoint, the scratch runs from nothing.
    for backbone in ("hpvit", "vitdet"):
        pool = f"_{config_pool()}" if backbone == "hpvit" else ""
        log = (out / f"{backbone}{pool}_mae_seed1.log").read_text()
        assert "converted into the backbone" not in log  # a converted file is the model's own keys
        assert f"init_mask_rcnn_{backbone}_tiny.pth" in log and "detector checkpoint" in log
        assert "No checkpoint found" in (out / f"{backbone}{pool}_scratch_seed1.log").read_text()
    assert (out / "mae" / "config.json").is_file() and (out / "mae" / "model.safetensors").is_file()
    # A smoke run gives the paired differences but never a verdict.
    report = (out / "results.md").read_text()
    assert report.count("no verdict (smoke run)") == 3
    assert "shown" not in report and "separable" not in report and "opposite" not in report
    claims = json.loads((out / "claims.json").read_text())
    gain = {int(s): d for s, d in claims["mae_helps_hpvit"]["box_ap_per_seed"].items()}
    by = {(r["backbone"], r["init"], r["seed"]): r["bbox/AP"] for r in saved}
    assert gain == {s: by["hpvit", "mae", s] - by["hpvit", "scratch", s] for s in (0, 1)}
    assert claims["mae_helps_hpvit"]["verdict"] is None
    with Image.open(out / "curves.png") as image:
        assert image.format == "PNG" and image.width > 500

    # Run again: every fine-tune finished with the same command is reused, with the same numbers,
    # and what only they need (the pre-training, both conversions) is not run again.
    steps = ("mae", "convert_hpvit", "convert_vitdet")
    logs = {name: (out / f"{name}.log").stat().st_mtime_ns for name in steps}
    again = run_reproduce(argv)
    printed = capsys.readouterr().out
    assert printed.count(": reused (") == 8 and "training HPViT-tiny" not in printed
    assert printed.count(": not run (only reused runs need it;") == 3
    assert {name: (out / f"{name}.log").stat().st_mtime_ns for name in steps} == logs
    assert "on one thread, reused)" in (out / "results.md").read_text()  # the MAE, as reused
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in again] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def _records(values):
    """Synthetic results: {(backbone, init): [box AP of seeds 0, 1, 2]}."""
    return [{"backbone": b, "pool": config_pool() if b == "hpvit" else None, "init": i, "seed": s,
             "bbox/AP": ap, "segm/AP": ap / 2}
            for (b, i), aps in values.items() for s, ap in enumerate(aps)]


def test_a_claim_is_shown_only_when_the_mean_clears_it_and_every_seed_agrees():
    assert verdict([4.0, 3.5, 5.0], 3.0) == "shown"
    assert verdict([9.0, 3.5, -0.5], 3.0).startswith("not separable from noise")  # mean 4, a seed < 0
    assert verdict([1.0, 2.0, 0.5], 3.0).startswith("not shown")  # all positive, mean below +3
    assert verdict([-1.0, -4.0, -0.2], 3.0).startswith("the opposite")
    assert verdict([0.1, 0.2, 0.3], 0.0) == "shown"
    assert verdict([0.0, 0.2, 0.3], 0.0).startswith("not separable")  # a tie is no agreement
    # One seed, two seeds or a smoke run: the numbers, never a verdict.
    assert verdict([10.0], 3.0) is None and verdict([10.0, 9.0], 3.0) is None
    assert verdict([10.0, 9.0, 8.0], 3.0, smoke=True) is None


def test_claims_table_pairs_seeds_and_says_why_there_is_no_verdict():
    records = _records({("hpvit", "mae"): [20.0, 18.0, 21.0], ("hpvit", "scratch"): [15.0, 16.0, 14.0],
                        ("vitdet", "mae"): [19.0, 19.0, 22.0], ("vitdet", "scratch"): [10.0, 11.0, 12.0]})
    lines, outcome = claims_table(records, smoke=False)
    assert outcome["mae_helps_hpvit"]["box_ap_per_seed"] == {0: 5.0, 1: 2.0, 2: 7.0}
    assert outcome["mae_helps_hpvit"]["verdict"] == "shown"  # mean +4.7, every seed > 0
    assert outcome["hpvit_beats_vitdet"]["box_ap_per_seed"] == {0: 1.0, 1: -1.0, 2: -1.0}
    assert outcome["hpvit_beats_vitdet"]["verdict"].startswith("not separable")
    assert "s0 +5.0, s1 +2.0, s2 +7.0" in "\n".join(lines) and "+4.7 (+2.0 to +7.0)" in "\n".join(lines)
    one_seed = [r for r in records if r["seed"] == 0]
    lines, outcome = claims_table(one_seed, smoke=False)
    assert all(o["verdict"] is None for o in outcome.values())
    assert "no verdict (1 seed(s); a verdict needs at least 3)" in "\n".join(lines)
    assert "shown" not in "\n".join(lines)
    # A smoke run: the paired differences of three seeds, never a verdict.
    lines, outcome = claims_table(records, smoke=True)
    assert all(o["verdict"] is None for o in outcome.values())
    assert "\n".join(lines).count("no verdict (smoke run)") == 3
    assert not any(word in "\n".join(lines) for word in ("shown", "separable", "opposite"))


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
    settings = mae_settings(1200, 3000)
    assert (settings.width, settings.depth, settings.heads) == (hpvit.embed_dim, hpvit.depth, hpvit.num_heads)
    # MAE's lightweight decoder: per token at most 30% of the encoder (MAE's ViT-B: 29.6%).
    assert settings.decoder_cost_ratio() <= 0.30
    assert MAESettings(width=768, depth=12, decoder_width=512, decoder_depth=8).decoder_cost_ratio() == \
        pytest.approx(0.296, abs=1e-3)


def test_a_longer_fine_tune_at_a_smaller_batch_reaches_every_run(tmp_path):
    from pathlib import Path

    from hpvit_lab.reproduce import parse_args, plan
    from hpvit_lab.runs import TrainRun

    args = parse_args(["--iters", "480", "--batch-size", "2", "--output-dir", str(tmp_path)])
    lanes, records = plan(args, tmp_path, Path(tmp_path / "images"))
    runs = [job for lane in lanes for job in lane if isinstance(job, TrainRun)]
    assert len(runs) == len(records) == 12
    for run in runs:
        assert run.iters == 480 and "dataloader.train.total_batch_size=2" in run.command()
    assert {r["batch_size"] for r in records} == {2}
    default, _ = plan(parse_args(["--output-dir", str(tmp_path)]), tmp_path, Path(tmp_path))
    assert not any("total_batch_size" in arg for lane in default for job in lane
                   if isinstance(job, TrainRun) for arg in job.command())
    with pytest.raises(SystemExit):
        parse_args(["--batch-size", "0"])


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
