"""
Inference: hpvit_d2.model_zoo (configs by name, weights by path or URL), hpvit_d2.predictor
(LazyPredictor, one BGR image in, Instances in image coordinates out) and projects/HPViT/demo.py.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.structures import Boxes, Instances

from hpvit_d2 import model_zoo
from hpvit_d2.checkpoint import CheckpointError
from hpvit_d2.predictor import LazyPredictor

REPO = Path(__file__).resolve().parent.parent
TINY = "mask_rcnn_hpvit_tiny.py"
DEMO = REPO / "projects" / "HPViT" / "demo.py"


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    """Generated data and downloads stay in the test's tmp dir."""
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny HPViT Mask R-CNN and a checkpoint of it ({"model": state_dict}), as training writes."""
    torch.manual_seed(1)
    model = model_zoo.get(TINY)
    path = tmp_path_factory.mktemp("ckpt") / "model_final.pth"
    torch.save({"model": model.state_dict(), "iteration": 299}, path)
    return model, str(path)


def _equal_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- model_zoo ----------------------------------------------------------------------------------


def test_get_config_by_name_or_path():
    by_name = model_zoo.get_config(TINY, overrides=["train.max_iter=7"])
    by_path = model_zoo.get_config(str(REPO / "configs" / TINY))
    assert by_name.train.max_iter == 7 and by_path.train.max_iter not in (7, None)
    assert by_name.model.backbone.bottom_up.embed_dim == by_path.model.backbone.bottom_up.embed_dim
    assert model_zoo.get_config_file("cityscapes/mask_rcnn_hpvit_b.py").endswith(
        os.path.join("configs", "cityscapes", "mask_rcnn_hpvit_b.py"))
    with pytest.raises(FileNotFoundError, match=r"mask_rcnn_nope\.py.*mask_rcnn_hpvit_b\.py"):
        model_zoo.get_config("mask_rcnn_nope.py")


def test_get_loads_weights_in_eval_mode_and_prints_report(trained, capsys):
    reference, path = trained
    fresh = model_zoo.get(TINY)
    assert not fresh.training and not _equal_state(fresh, reference)
    loaded = model_zoo.get(TINY, weights=path)
    assert not loaded.training and _equal_state(loaded, reference)
    n = len(reference.state_dict())
    assert f"Loaded {path} (HPViT detector checkpoint): {n}/{n} model tensors" in capsys.readouterr().out


def test_get_strict_refuses_a_checkpoint_missing_weights(trained, tmp_path, capsys):
    reference, _ = trained
    state = reference.state_dict()
    del state["roi_heads.box_predictor.cls_score.weight"]
    path = tmp_path / "partial.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=r"partial\.pth: strict loading refused: 1 model "
                                              r"tensors.*missing roi_heads.box_predictor.cls_score"):
        model_zoo.get(TINY, weights=str(path))  # strict is the default
    model = model_zoo.get(TINY, weights=str(path), strict=False)
    report = capsys.readouterr().out
    assert "left at initialisation: 1 tensors, by part: roi_heads 1" in report
    assert "roi_heads.box_predictor.cls_score.weight" in report
    torch.testing.assert_close(model.roi_heads.box_predictor.cls_score.bias,
                               reference.roi_heads.box_predictor.cls_score.bias)


def test_get_bad_weights_path_and_unreachable_url(tmp_path):
    missing = str(tmp_path / "no_such_model.pth")
    with pytest.raises(CheckpointError, match="no_such_model.pth: no such file"):
        model_zoo.get(TINY, weights=missing)
    url = "http://127.0.0.1:9/hpvit/model_final.pth"  # the discard port: connection refused
    with pytest.raises(CheckpointError, match=r"127\.0\.0\.1:9/hpvit/model_final\.pth.*download"):
        model_zoo.get(TINY, weights=url)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        model_zoo.get(TINY, weights=str(tmp_path / "garbage.pth"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_get_on_cuda_without_cuda_names_the_device():
    with pytest.raises(model_zoo.ConfigError, match="device 'cuda': CUDA is not available"):
        model_zoo.get(TINY, device="cuda")


# ---- LazyPredictor ------------------------------------------------------------------------------


def test_predictor_returns_instances_in_original_image_coordinates(trained):
    _, path = trained
    no_threshold = ["model.roi_heads.box_predictor.test_score_thresh=0.0"]
    model = model_zoo.get(TINY, weights=path, overrides=no_threshold)
    cfg = model_zoo.get_config(TINY)
    # resize at test time so the model sees another size than the caller's image
    cfg.dataloader.test.mapper.augmentations = [
        L(T.ResizeShortestEdge)(short_edge_length=128, max_size=256)]
    predictor = LazyPredictor(cfg, model=model)
    assert predictor.input_format == "RGB"
    assert predictor.metadata.thing_classes == ["circle", "rectangle", "triangle", "star"]

    bgr = np.random.default_rng(0).integers(0, 256, (150, 230, 3), dtype=np.uint8)
    instances = predictor(bgr)
    assert isinstance(instances, Instances) and instances.image_size == (150, 230)
    assert len(instances) > 0 and instances.pred_masks.shape[1:] == (150, 230)
    boxes = instances.pred_boxes.tensor
    assert (boxes[:, 0::2] <= 230).all() and (boxes[:, 1::2] <= 150).all() and (boxes >= 0).all()

    # the same model on the resized RGB image, in resized coordinates, scaled back by hand
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    resized = T.ResizeShortestEdge(128, 256).get_transform(rgb).apply_image(rgb)
    assert resized.shape[:2] == (128, 196)
    with torch.no_grad():
        raw = model([{"image": torch.as_tensor(resized.transpose(2, 0, 1).astype("float32"))}])
    raw = raw[0]["instances"]
    expected = Boxes(raw.pred_boxes.tensor * torch.tensor([230 / 196, 150 / 128] * 2))
    expected.clip((150, 230))
    torch.testing.assert_close(instances.scores, raw.scores)
    torch.testing.assert_close(boxes, expected.tensor, rtol=0, atol=1e-3)


def test_predictor_tunes_its_own_model_not_the_callers(trained):
    """On the CPU the predictor runs a tuned copy of a model it is given: the caller's modules
    keep their classes and mode, and the allocator is not touched; optimize=False runs the
    caller's model itself. Both predict the same to float rounding."""
    from hpvit_d2 import cpu_memory

    model, _ = trained
    cfg = model_zoo.get_config(TINY)
    classes = [type(m) for m in model.modules()]
    allocator = cpu_memory.retained()
    model.train()
    tuned = LazyPredictor(cfg, model=model)
    assert tuned.model is not model and _equal_state(tuned.model, model)
    assert all(b.inplace for b in tuned.model.backbone.bottom_up.blocks)
    assert [type(m) for m in model.modules()] == classes and model.training
    assert not any(b.inplace for b in model.backbone.bottom_up.blocks)
    assert cpu_memory.retained() == allocator
    model.eval()
    plain = LazyPredictor(cfg, model=model, optimize=False)
    assert plain.model is model and [type(m) for m in model.modules()] == classes
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        a, b = tuned.model.backbone(x), plain.model.backbone(x)
    for name in b:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-4)


def test_predictor_builds_from_config_with_init_checkpoint(trained, capsys):
    reference, path = trained
    cfg = model_zoo.get_config(TINY, overrides=[f"train.init_checkpoint={path}"])
    predictor = LazyPredictor(cfg)
    assert _equal_state(predictor.model, reference) and not predictor.model.training
    assert predictor.device == torch.device("cpu") and not predictor.amp
    assert f"Loaded {path} (HPViT detector checkpoint)" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"original_image.*\(H, W, 3\) uint8.*\(64, 64\)"):
        predictor(np.zeros((64, 64), np.uint8))
    del cfg.dataloader.test.mapper.augmentations
    with pytest.raises(KeyError, match="dataloader.test.mapper.augmentations"):
        LazyPredictor(cfg, model=reference)


# ---- demo.py ------------------------------------------------------------------------------------


def _write_images(folder: Path):
    """Two readable images (one non-square), one corrupt file, one non-image file."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"wide.png": (96, 160), "square.jpg": (128, 128)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    return sizes


def test_demo_skips_unreadable_input_and_exits_nonzero(trained, tmp_path):
    _, weights = trained
    sizes = _write_images(tmp_path / "in")
    out = tmp_path / "vis"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, str(DEMO), "--config-file", TINY, "--input", str(tmp_path / "in"),
         "--output", str(out), "--weights", weights, "--confidence-threshold", "0.0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "skipping" in proc.stderr and "broken.jpg" in proc.stderr
    assert "1 input(s) failed" in proc.stderr
    assert sorted(os.listdir(out)) == ["predictions.json", "square.png", "wide.png"]
    written = json.loads((out / "predictions.json").read_text())
    assert {Path(p["file_name"]).name for p in written} == set(sizes)  # the input files
    for name, (h, w) in sizes.items():
        drawn = np.asarray(Image.open(out / (Path(name).stem + ".png")).convert("RGB"))
        assert drawn.shape == (h, w, 3)
        original = np.asarray(Image.open(tmp_path / "in" / name).convert("RGB"))
        assert not np.array_equal(drawn, original)  # instances were drawn over the image


def test_demo_all_inputs_readable_exits_zero(trained, tmp_path, capsys):
    _, weights = trained
    _write_images(tmp_path / "in")
    (tmp_path / "in" / "broken.jpg").unlink()
    from hpvit_d2.cli import demo
    from hpvit_d2.cli.common import run

    out = tmp_path / "vis"
    code = run(demo.main, ["--config-file", TINY, "--input", str(tmp_path / "in" / "wide.png"),
                           str(tmp_path / "in"), "--output", str(out), "--weights", weights])
    assert code == 0
    # wide.png is given twice (file and directory): two outputs, neither overwritten
    assert sorted(os.listdir(out)) == ["predictions.json", "square.png", "wide.png", "wide_1.png"]
    # --no-cpu-tuning: the model as built, the same drawings' names
    plain = tmp_path / "vis_plain"
    assert run(demo.main, ["--config-file", TINY, "--input", str(tmp_path / "in"), "--output",
                           str(plain), "--weights", weights, "--no-cpu-tuning"]) == 0
    assert sorted(os.listdir(plain)) == ["predictions.json", "square.png", "wide.png"]
    assert not demo.argument_parser().parse_args(
        ["--config-file", TINY, "--input", "x", "--output", "y", "--no-cpu-tuning"]).cpu_tuning
    code = run(demo.main, ["--config-file", TINY, "--input", str(tmp_path / "in"),
                           "--output", str(out), "--weights", str(tmp_path / "missing.pth")])
    assert code == 2 and "missing.pth" in capsys.readouterr().err
