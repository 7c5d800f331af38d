"""Semantic segmentation inference: model_zoo.get with weights, LazyPredictor returning scores at
the image's size, the demo drawing label maps with Visualizer.draw_sem_seg."""
import os

import numpy as np
import pytest
import torch
from detectron2.modeling import SemanticSegmentor
from PIL import Image

from hpvit_d2 import model_zoo
from hpvit_d2.cli import demo
from hpvit_d2.cli.common import run
from hpvit_d2.predictor import LazyPredictor

TINY = "semseg_hpvit_tiny.py"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(1)
    model = model_zoo.get(TINY)
    path = tmp_path_factory.mktemp("ckpt") / "model_final.pth"
    torch.save({"model": model.state_dict(), "iteration": 199}, path)
    return model, str(path)


def test_predictor_returns_scores_at_the_image_size(trained):
    _, weights = trained
    model = model_zoo.get(TINY, weights=weights)
    assert isinstance(model, SemanticSegmentor) and not model.training
    cfg = model_zoo.get_config(TINY)
    predictor = LazyPredictor(cfg, model=model)
    assert predictor.task == "sem_seg"
    assert predictor.metadata.stuff_classes[0] == "background"
    for h, w in ((100, 150), (97, 61)):
        image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
        scores = predictor(image)
        assert scores.dtype == torch.float32 and scores.shape == (5, h, w)
        assert scores.device.type == "cpu"
    # a detection checkpoint is refused for a semantic config (strict by default)
    detector = model_zoo.get("mask_rcnn_hpvit_tiny.py")
    det_path = os.path.join(os.path.dirname(weights), "det.pth")
    torch.save({"model": detector.state_dict()}, det_path)
    with pytest.raises(Exception, match="det.pth"):
        model_zoo.get(TINY, weights=det_path)


def test_demo_draws_label_maps(trained, tmp_path, capsys):
    _, weights = trained
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(
        inputs / "wide.png")
    out = tmp_path / "vis"
    code = run(demo.main, ["--config-file", TINY, "--input", str(inputs), "--output", str(out),
                           "--weights", weights])
    assert code == 0
    drawn = np.asarray(Image.open(out / "wide.png").convert("RGB"))
    assert drawn.shape == (80, 120, 3)
    assert not np.array_equal(drawn, np.asarray(Image.open(inputs / "wide.png")))
    assert "classes " in capsys.readouterr().err
