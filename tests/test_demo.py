"""`make demo` end to end on a micro budget: both tiny models train through the project's
training entry (real subprocesses), are evaluated with COCOEvaluator, and every output is written."""
import json

import pytest
from PIL import Image

from hpvit_lab import demo_run
from hpvit_d2.overrides import ConfigError


def test_demo_runs_end_to_end_on_a_micro_budget(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    out = tmp_path / "demo"
    rows = demo_run.run_demo([
        "--iters", "2", "--output-dir", str(out),
        "--train-dataset", "hpvit_shapes_train_mini", "--val-dataset", "hpvit_shapes_val_mini",
        "--num-vis", "2", "--latency-images", "2",
    ])
    printed = capsys.readouterr().out
    assert "[demo" in printed and "HPViT-tiny" in printed  # progress and table are printed

    table = (out / "comparison.md").read_text()
    header = table.splitlines()[0]
    for title, _, _ in demo_run.COLUMNS:
        assert f" {title} " in header
    assert table in printed or table.split("\n\n")[0] in printed
    lines = [l for l in table.splitlines() if l.startswith("| ")]
    assert [l.split("|")[1].strip() for l in lines[1:]] == ["HPViT-tiny", "ViTDet-tiny"]
    assert all(l.count("|") == len(demo_run.COLUMNS) + 1 for l in lines)

    assert [r["model"] for r in rows] == ["HPViT-tiny", "ViTDet-tiny"]
    for slug, row in zip(("hpvit_tiny", "vitdet_tiny"), rows):
        saved = json.loads((out / f"{slug}.json").read_text())
        assert saved["model"] == row["model"] and saved["iterations"] == 2
        for key in ("bbox/AP", "segm/AP", "bbox/APs", "bbox/APm", "bbox/APl"):
            assert isinstance(saved[key], float)
        assert 0 <= saved["bbox/AP"] <= 100
        assert saved["params_m"] > 1 and saved["gflops"] > 0 and saved["latency_ms"] > 0
        assert (out / slug / "model_final.pth").is_file()
        metrics = (out / slug / "metrics.json").read_text().splitlines()
        assert any("total_loss" in json.loads(l) for l in metrics)
        assert "Starting training from iteration 0" in (out / f"{slug}.log").read_text()
    # same backbone width and depth: HPViT adds only the pooling convolutions and the FPN
    assert rows[0]["params_m"] == pytest.approx(rows[1]["params_m"], rel=0.2)
    # the 1/4 stage makes HPViT the more expensive model
    assert rows[0]["gflops"] > rows[1]["gflops"]

    pngs = ["training_curves.png", "predictions_0.png", "predictions_1.png"]
    for name in pngs:
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200


def test_bad_iteration_budget_is_named(monkeypatch, capsys):
    monkeypatch.setenv("DEMO_ITERS", "ten")
    with pytest.raises(SystemExit):
        demo_run.parse_args([])
    assert "DEMO_ITERS" in capsys.readouterr().err
    monkeypatch.setenv("DEMO_ITERS", "7")
    assert demo_run.parse_args([]).iters == 7
    assert demo_run.parse_args(["--iters", "3"]).iters == 3


def test_unknown_dataset_is_named(tmp_path):
    with pytest.raises(ConfigError, match="hpvit_shapes_train_mini"):
        demo_run.run_demo(["--iters", "1", "--output-dir", str(tmp_path),
                       "--train-dataset", "coco_2017_train"])
