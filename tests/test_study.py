"""The lab's one study harness (make reproduce, make demo-semseg, make demo-classify) at smoke
size: a sha256-checked MAE directory converted by the public converter (or read by hpvit-classify),
every run a real subprocess of the project's commands, evaluated on the task's test split, and the
records, claims and report the docs promise."""
import json
import shutil

import numpy as np
import pytest

from hpvit_d2.cli.common import run
from hpvit_lab import study
from hpvit_lab.mae import pretrain_mae
from hpvit_lab.pretrain import mae_settings
from hpvit_lab.shipped import write_sums
from hpvit_lab.tasks import TASKS


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A two-step MAE of the tiny trunk, with its SHA256SUMS, as the shipped one is laid out."""
    directory = tmp_path_factory.mktemp("mae") / "mae_tiny"
    images = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    pretrain_mae(images, str(directory), mae_settings(steps=2, batch_size=2, image_size=32))
    write_sums(directory)
    return directory


def _records_by(records, key="arm"):
    out = {}
    for r in records:
        out.setdefault(r[key], []).append(r)
    return out


def test_detection_study_at_smoke_size(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    out = tmp_path / "reproduce"
    argv = ["detection", "--smoke", "--seeds", "0", "1", "--output-dir", str(out),
            "--checkpoint", str(checkpoint), "--bootstrap-reps", "5"]
    records = study.run_study(argv)
    printed = capsys.readouterr().out
    assert printed.count("python -m hpvit_d2.convert") == 2 and "--strict" in printed

    saved = json.loads((out / "results.json").read_text())
    assert saved == records and len(saved) == 6
    assert {arm: sorted(r["seed"] for r in rs) for arm, rs in _records_by(saved).items()} == {
        "hpvit/mae": [0, 1], "hpvit/scratch": [0, 1], "vitdet/mae": [0, 1]}
    for r in saved:  # the fields the issue names
        assert r["backbone"] in ("hpvit", "vitdet") and r["init"] in ("mae", "scratch")
        assert r["pool"] == ("avg" if r["backbone"] == "hpvit" else None)
        assert isinstance(r["bbox/AP"], float) and isinstance(r["segm/AP"], float)
        assert r["test_dataset"] == "hpvit_shapes_val_mini"  # the smoke run's stand-in
        assert r["config_file"] == f"configs/mask_rcnn_{r['backbone']}_tiny.py"
        assert r["weights"].endswith("model_final.pth") and (tmp_path / r["weights"]).is_file()
        assert r["iterations"] == 2
    # The MAE arms started from the converted checkpoint (named by its sha256), scratch from nothing.
    log = (out / "hpvit_mae_seed1.log").read_text()
    assert "init_mask_rcnn_hpvit_tiny_" in log
    assert "No checkpoint found" in (out / "hpvit_scratch_seed1.log").read_text()

    claims = json.loads((out / "claims.json").read_text())
    judged = claims["claims"]
    assert set(judged) == {"mae_helps_hpvit", "hpvit_beats_vitdet"}  # the --full ones need ViTDet/scratch
    by = {(r["arm"], r["seed"]): r["bbox/AP"] for r in saved}
    assert judged["mae_helps_hpvit"]["differences"] == pytest.approx(
        [by["hpvit/mae", s] - by["hpvit/scratch", s] for s in (0, 1)])
    assert all(c["verdict"] is None for c in judged.values())  # a smoke run says none
    assert set(claims["evaluation_noise"]["arms"]) == {"hpvit/mae", "hpvit/scratch", "vitdet/mae"}
    assert claims["costs"]["hpvit"]["gflops"] > claims["costs"]["vitdet"]["gflops"]
    report = (out / "results.md").read_text()
    assert "no verdict (smoke run)" in report and "95% lower bound" in report
    assert "supported" not in report and "contradicted" not in report

    # Again: every run reused with the same numbers; the conversions are not run.
    again = study.run_study(argv)
    printed = capsys.readouterr().out
    assert printed.count(": reused (") == 6 and printed.count(": not run (") == 2
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in again] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_a_changed_checkpoint_is_refused_in_one_line(checkpoint, tmp_path, capsys):
    changed = tmp_path / "changed"
    shutil.copytree(checkpoint, changed)
    with open(changed / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    code = run(study.main, ["detection", "--smoke", "--output-dir", str(tmp_path / "out"),
                            "--checkpoint", str(changed)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "model.safetensors: sha256" in err and "make pretrain" in err
    assert not (tmp_path / "out" / "results.json").exists()
    assert run(study.main, ["segmentation"]) == 2
    assert "TASK is one of detection, semseg, classify" in capsys.readouterr().err


def test_semseg_study_at_smoke_size(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    out = tmp_path / "semseg"
    records = study.run_study(["semseg", "--smoke", "--seeds", "0", "--output-dir", str(out),
                               "--checkpoint", str(checkpoint), "--bootstrap-reps", "3"])
    assert {r["arm"] for r in records} == set(TASKS["semseg"].arms)
    for r in records:
        assert r["model"] in ("hpvit", "plain") and 0 <= r["mIoU"] <= 100
        assert isinstance(r["collapsed"], bool)
        assert r["collapsed"] == (r["predicted_shape_pixels"] == 0)
        assert r["test_dataset"] == "hpvit_shapes_sem_seg_val_mini"
    report = (out / "results.md").read_text()
    assert "no verdict (smoke run)" in report and "collapsed" in report


def test_classify_study_at_smoke_size(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    out = tmp_path / "classify"
    records = study.run_study(["classify", "--smoke", "--seeds", "0", "--output-dir", str(out),
                               "--checkpoint", str(checkpoint)])
    assert {(r["model"], r["init"]) for r in records} == {
        ("hpvit", "mae"), ("plain", "mae"), ("hpvit", "scratch")}
    for r in records:
        assert 0 <= r["top1"] <= 100 and r["test_images"] == 16  # 4 classes x 4 test images
        assert r["test_dataset"].endswith("/test") and r["weights"].endswith("last.pth")
    # The MAE arms loaded the checkpoint directory completely (--strict), scratch nothing.
    log = (out / "hpvit_mae_seed0.log").read_text()
    assert "Hugging Face ViTMAE" in log and "--strict" not in log
    assert "Hugging Face ViTMAE" not in (out / "hpvit_scratch_seed0.log").read_text()
    claims = json.loads((out / "claims.json").read_text())
    assert claims["evaluation_noise"]["how"].startswith("binomial")


def test_classify_tuning_at_smoke_size_scores_every_point_on_val(checkpoint, tmp_path, monkeypatch,
                                                                 capsys):
    """hpvit_lab.tune on the timm task: each (arm, point) trains and is scored on the tree's val/
    (top-1), tabled with the arm's choice in bold; a smoke run writes no recipe, and a rerun
    reuses the finished runs."""
    from hpvit_lab import tune

    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    recipes = study.RECIPES_FILE.read_text()
    argv = ["classify", "--smoke", "--arms", "plain/mae", "hpvit/scratch", "--points", "0", "2",
            "--output-dir", str(tmp_path / "tune"), "--checkpoint", str(checkpoint)]
    assert run(tune.main, argv) == 0
    scores = json.loads((tmp_path / "tune" / "scores.json").read_text())
    assert set(scores) == {"plain/mae", "hpvit/scratch"}
    assert all(set(points) == {"0", "2"} and all(0 <= v <= 100 for v in points.values())
               for points in scores.values())
    table = (tmp_path / "tune" / "tuning.md").read_text()
    assert "top-1 on the val split (the ImageFolder val/)" in table and table.count("**") == 4
    assert study.RECIPES_FILE.read_text() == recipes  # smoke: no recipe written
    capsys.readouterr()
    assert run(tune.main, argv) == 0
    assert capsys.readouterr().out.count(": reused (") == 4


def test_each_task_starts_from_the_mae_pretrained_at_its_resolution():
    """Classification (64 px) defaults to mae_tiny_shapes64, pre-trained at 64 px; detection and
    segmentation to mae_tiny_shapes (256 px), in the study and in the tuning."""
    from pathlib import Path

    from hpvit_lab import tune
    from hpvit_lab.pretrain import mae_settings

    for name, expected in (("classify", "mae_tiny_shapes64"), ("detection", "mae_tiny_shapes"),
                           ("semseg", "mae_tiny_shapes")):
        assert Path(study.parse_args(TASKS[name], [], "p", "").checkpoint).name == expected
        assert Path(tune.parse_args([name]).checkpoint).name == expected
    assert mae_settings("mae_tiny_shapes64").image_size == int(TASKS["classify"].splits["image_size"])
