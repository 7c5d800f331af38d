"""The semantic segmentation demo on a micro budget: both tiny UperNets train through the project's
entry (real subprocesses), are evaluated with SemSegEvaluator, and results.json / comparison.md
are written."""
import json


from hpvit_lab import demo_semseg
from hpvit_d2.cli.common import run


def test_demo_semseg_end_to_end_on_a_micro_budget(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    out = tmp_path / "demo"
    rows = demo_semseg.run_demo([
        "--iters", "2", "--output-dir", str(out), "--latency-images", "2",
        "--train-dataset", "hpvit_shapes_sem_seg_train_mini",
        "--val-dataset", "hpvit_shapes_sem_seg_val_mini",
    ])
    printed = capsys.readouterr().out
    table = (out / "comparison.md").read_text()
    assert table.split("\n\n")[0] in printed
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["HPViT-tiny", "ViT-tiny + SFP"]
    assert all(line.count("|") == len(demo_semseg.COLUMNS) + 1 for line in lines)
    results = json.loads((out / "results.json").read_text())
    assert results["train_wall_seconds"] > 0 and len(results["models"]) == 2
    for row, saved in zip(rows, results["models"]):
        assert saved["model"] == row["model"] and saved["iterations"] == 2
        assert 0 <= saved["sem_seg/mIoU"] <= 100
        assert {"sem_seg/fwIoU", "sem_seg/mACC", "sem_seg/pACC", "sem_seg/IoU-star"} <= set(saved)
        assert saved["params_m"] > 1 and saved["gflops"] > 0 and saved["latency_ms"] > 0
    assert rows[0]["gflops"] > rows[1]["gflops"]  # the 1/4 stage costs


def test_unknown_dataset_is_one_line(tmp_path, capsys):
    code = run(demo_semseg.main, ["--train-dataset", "hpvit_shapes_train", "--output-dir",
                                  str(tmp_path)])
    assert code == 2 and "not a shapes semantic dataset" in capsys.readouterr().err
