"""
Nothing lost, round four (issue 33; docs/reliability.md): each numbered case of the issue on the
real tiny config as a user meets it (the commands in real processes, or their ``main`` in this
one when nothing is trained), and a rerun that reuses a directory (issue 34, item 5).
"""
import os
import shutil
import subprocess

import pytest
import torch
from detectron2.config import instantiate

from hpvit_d2 import model_zoo
from hpvit_d2.checkpoint import CheckpointError, HPViTCheckpointer, load_checkpoint_file
from hpvit_d2.cli.common import run as run_command
from hpvit_d2.cli.convert import main as convert_main
from test_engine import env, train_cmd  # noqa: F401  (env is a fixture)
from test_operations import one_error_line

TINY = "mask_rcnn_hpvit_tiny.py"


@pytest.fixture(scope="module")
def tiny_state():
    """The tiny HPViT detector's state dict (random initialisation)."""
    return instantiate(model_zoo.get_config(TINY).model).state_dict()


def test_case01_float64_overflow_refused_on_every_loading_path(tmp_path, tiny_state, capsys):
    state = {k: v.double() if v.is_floating_point() else v for k, v in tiny_state.items()}
    state["roi_heads.box_predictor.cls_score.weight"][0, 0] = 1e300  # finite in float64 only
    path = tmp_path / "model_final.pth"
    torch.save({"model": state, "iteration": 239}, path)
    expected = (r"NaN or Inf in 1 of its \d+ tensors, e\.g\. roi_heads\.box_predictor\.cls_score"
                r"\.weight \(float64 values beyond the model's float32 range\)")
    with pytest.raises(CheckpointError, match=expected):  # inference: model_zoo, demo, eval-only
        model_zoo.get(TINY, weights=str(path))
    model = instantiate(model_zoo.get_config(TINY).model)
    with pytest.raises(CheckpointError, match=expected):  # training's train.init_checkpoint
        HPViTCheckpointer(model, require="architecture").load(str(path))
    assert torch.isfinite(model.roi_heads.box_predictor.cls_score.weight).all()
    assert run_command(convert_main, [str(path), str(tmp_path / "init.pth"), "--config-file",
                                      TINY, "--allow-partial"]) == 2
    assert "float64 values beyond the model's float32 range" in one_error_line(
        capsys.readouterr().err)
    assert not (tmp_path / "init.pth").exists()
