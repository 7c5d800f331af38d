"""`make demo` end to end on a micro budget: both tiny models train through the project's
training entry (real subprocesses), are evaluated with COCOEvaluator, and every output is written.
The README's inference snippet then runs verbatim on what it wrote (output/demo/hpvit_tiny/
model_final.pth, the step the README names), in a fresh process, and prints no third-party warning."""
import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import logging_as_before
from hpvit_lab import demo_run
from hpvit_d2.overrides import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``make demo`` (hpvit_lab.demo_run) at two iterations of the mini splits, writing where the
    README says, ``output/demo`` under a fresh directory: (that directory, rows, what it printed)."""
    cwd = tmp_path_factory.mktemp("user")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch, logging_as_before(), \
            contextlib.redirect_stdout(printed):
        monkeypatch.setenv("HPVIT_DATA", str(cwd / "data"))
        rows = demo_run.run_demo([
            "--iters", "2", "--output-dir", str(cwd / "output" / "demo"),
            "--train-dataset", "hpvit_shapes_train_mini", "--val-dataset", "hpvit_shapes_val_mini",
            "--num-vis", "2", "--latency-images", "2",
        ])
    return cwd, rows, printed.getvalue()


def test_demo_runs_end_to_end_on_a_micro_budget(demo):
    cwd, rows, printed = demo
    out = cwd / "output" / "demo"
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


def _section_code(title: str, language: str):
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_the_inference_snippet_runs_verbatim_after_make_demo_and_is_quiet(demo):
    (snippet,) = _section_code("Inference on your image", "python")
    assert 'weights="output/demo/hpvit_tiny/model_final.pth"' in snippet and '"photo.jpg"' in snippet
    # The step it names: make demo wrote output/demo/hpvit_tiny from the user's directory.
    cwd, _, _ = demo
    assert (cwd / "output/demo/hpvit_tiny/model_final.pth").is_file()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (180, 240, 3), dtype=np.uint8)).save(
        cwd / "photo.jpg")
    env = dict(os.environ, HPVIT_DATA=str(cwd / "data"), OMP_NUM_THREADS="1")
    env.pop("PYTHONWARNINGS", None)  # as a user's shell has it

    proc = subprocess.run([sys.executable, "-c", snippet + "\nprint('instances:', len(instances))"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^instances: \d+$", proc.stdout, re.M)
    noise = [line for line in proc.stderr.splitlines()
             if "Warning" in line or re.match(r"^[WE]\d{4} ", line)]
    assert noise == [], "\n".join(noise)


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
