"""
The commands as users meet them: one error style (one line on stderr naming the thing and the
fix, exit 2, no traceback), checked overrides, config names or paths everywhere, own COCO data
from the command line, demo.py at parity with detectron2's demo, the dataset browser, export,
quiet start-up. The wheel as the product: tests/test_wheel.py.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hpvit_d2.cli import browse, convert, demo, export, train
from hpvit_d2.cli.common import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "mask_rcnn_hpvit_tiny.py"
MINI = ["dataloader.train.dataset.names=hpvit_shapes_train_mini",
        "dataloader.test.dataset.names=hpvit_shapes_val_mini", "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command, argv, expected", [
    (train, ["--config-file", "configs/nope.py"], "config 'configs/nope.py': no such file"),
    (train, ["--config-file", TINY, "train.maxiter=2"],
     "train.maxiter: no such key; did you mean train.max_iter?"),
    (train, ["--config-file", TINY, "modle.roi_heads.num_classes=3"],
     "modle.roi_heads.num_classes: no such key; did you mean model.roi_heads.num_classes?"),
    (train, ["--config-file", TINY, "model.backbone.bottom_up.foo=1"],
     "hpvit_d2.modeling.hpvit.HPViT takes no argument 'foo'"),
    (train, ["--config-file", TINY, "train.device=cuda"], "device 'cuda': CUDA is not available"),
    (train, ["--config-file", TINY, "dataloader.train.dataset.names=shapes_train"],
     "Dataset 'shapes_train' is not registered"),
    (convert, ["x.pth", "y.pth", "--config", "nope.py"], "config 'nope.py': no such file"),
    (demo, ["--config-file", TINY, "--input", ROOT, "--output", "/tmp/x", "--opts",
            "train.device=cuda"], "device 'cuda': CUDA is not available"),
    (demo, ["--config-file", TINY, "--input", ROOT, "--output", "/tmp/x", "--opts",
            "modle.roi_heads.num_classes=3"], "did you mean model.roi_heads.num_classes?"),
    (browse, ["--config-file", "nope.py", "--output", "/tmp/x"], "no such file"),
    # an argument of a function that passes **kwargs on (detectron2's train loader -> DataLoader)
    (train, ["--config-file", TINY, "dataloader.train.total_batchsize=2"],
     "build_detection_train_loader takes no argument 'total_batchsize'; did you mean "
     "dataloader.train.total_batch_size?"),
    (browse, ["--config-file", TINY, "--output", "/tmp/x", "dataloader.train.total_batchsize=2"],
     "did you mean dataloader.train.total_batch_size?"),
])
@pytest.mark.skipif(torch.cuda.is_available(), reason="the device case expects no CUDA")
def test_bad_input_is_one_line_and_exit_2(command, argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    assert run(command.main, argv) == 2
    assert expected in error_line(capsys)


def test_new_keys_need_a_plus_and_constructor_arguments_are_checked(tmp_path):
    from hpvit_d2.model_zoo import ConfigError, get_config

    cfg = get_config(TINY, ["+train.my_note=hello", "model.backbone.bottom_up.use_act_checkpoint=False"])
    assert cfg.train.my_note == "hello" and cfg.model.backbone.bottom_up.use_act_checkpoint is False
    with pytest.raises(ConfigError, match=r"takes no argument 'stage_depth'; did you mean "
                                          r"model.backbone.bottom_up.stage_depths\?"):
        get_config(TINY, ["model.backbone.bottom_up.stage_depth=[4]"])
    # What detectron2's train loader passes on to torch's DataLoader is an argument too; what it
    # sets itself (batch_size, from total_batch_size) is not.
    cfg = get_config(TINY, ["dataloader.train.pin_memory=True", "dataloader.train.persistent_workers=True"])
    assert cfg.dataloader.train.pin_memory is True
    with pytest.raises(ConfigError, match=r"takes no argument 'batch_size'; did you mean "
                                          r"dataloader.train.total_batch_size\?"):
        get_config(TINY, ["dataloader.train.batch_size=2"])


def test_errors_in_a_fresh_process_have_no_traceback_and_no_warnings():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "projects", "HPViT", "train_net.py"),
                           "--config-file", TINY, "train.maxiter=2"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: train.maxiter: no such key; did you mean train.max_iter? (+train.maxiter=VALUE "
        "adds a new key on purpose)"]
    assert proc.stdout == ""
    helped = subprocess.run([sys.executable, os.path.join(ROOT, "projects", "HPViT", "convert.py"),
                             "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert helped.returncode == 0 and "Warning" not in helped.stderr + helped.stdout


def write_coco(root, category_ids=(3, 7), masks=True, size=64, num_images=6):
    """A small COCO dataset with non-contiguous category ids."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(num_images):
        pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        x, y, w, h = 8 + i, 10, 30, 24
        pixels[y:y + h, x:x + w] = 220
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": size, "height": size})
        anno = {"id": i + 1, "image_id": i + 1, "category_id": category_ids[i % 2], "iscrowd": 0,
                "bbox": [x, y, w, h], "area": w * h}
        if masks:
            anno["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        annotations.append(anno)
    categories = [{"id": c, "name": f"thing{c}"} for c in category_ids]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))
    return str(path), str(root / "images")


def train_own_data(tmp_path, json_file, image_dir, *overrides):
    cmd = [sys.executable, os.path.join(ROOT, "projects", "HPViT", "train_net.py"),
           "--config-file", TINY, "--register-coco", "mine", json_file, image_dir,
           f"train.output_dir={tmp_path / 'run'}", "train.max_iter=1",
           "dataloader.train.dataset.names=mine", "dataloader.test.dataset.names=mine",
           "dataloader.train.num_workers=0", "dataloader.test.num_workers=0", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               HPVIT_DATA=str(tmp_path / "data"))
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_own_coco_data_from_the_command_line(tmp_path):
    json_file, image_dir = write_coco(tmp_path / "coco")
    refused = train_own_data(tmp_path, json_file, image_dir)
    assert refused.returncode == 2
    assert ("model.roi_heads.num_classes=4, but dataset 'mine' has 2 classes (thing3, thing7): add "
            "the override model.roi_heads.num_classes=2") in refused.stderr
    done = train_own_data(tmp_path, json_file, image_dir, "model.roi_heads.num_classes=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "thing3" in done.stdout and "thing7" in done.stdout  # per-class AP of the json's classes


def test_box_only_data_names_the_fix_and_trains_with_it(tmp_path):
    json_file, image_dir = write_coco(tmp_path / "boxes", masks=False)
    refused = train_own_data(tmp_path, json_file, image_dir, "model.roi_heads.num_classes=2")
    assert refused.returncode == 2 and "have no 'segmentation'" in refused.stderr
    fix = ["model.roi_heads.mask_in_features=null", "dataloader.train.mapper.use_instance_mask=False",
           "dataloader.evaluator.tasks=[bbox]"]
    assert " ".join(fix[:2]) in refused.stderr
    done = train_own_data(tmp_path, json_file, image_dir, "model.roi_heads.num_classes=2", *fix)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from detectron2.config import instantiate

    from hpvit_d2.model_zoo import get_config

    torch.manual_seed(0)
    model = instantiate(get_config(TINY).model)
    path = tmp_path_factory.mktemp("weights") / "model_final.pth"
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def test_demo_globs_and_predictions_json(tmp_path, weights, capsys):
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg", "c.png"):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(tmp_path / "in" / name)
    out = tmp_path / "vis"
    code = run(demo.main, ["--config-file", TINY, "--input", str(tmp_path / "in" / "*.jpg"),
                           "--output", str(out), "--weights", weights, "--confidence-threshold",
                           "0.0", "--opts", "model.roi_heads.box_predictor.test_score_thresh=0.0"])
    assert code == 0
    assert sorted(os.listdir(out)) == ["a.png", "b.png", "predictions.json"]
    predictions = json.loads((out / "predictions.json").read_text())
    assert {p["file_name"] for p in predictions} == {str(tmp_path / "in" / n) for n in ("a.jpg", "b.jpg")}
    assert {p["category_id"] for p in predictions} <= {1, 2, 3, 4}  # the json's ids, not 0..3
    assert all(len(p["bbox"]) == 4 and "counts" in p["segmentation"] for p in predictions)


def test_demo_video_input(tmp_path, weights):
    import cv2

    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5, (128, 96))
    for k in range(3):
        writer.write(np.full((96, 128, 3), 40 * k, np.uint8))
    writer.release()
    out = str(tmp_path / "out" / "clip_vis.mp4")
    assert run(demo.main, ["--config-file", TINY, "--video-input", video, "--output", out,
                           "--weights", weights]) == 0
    capture = cv2.VideoCapture(out)
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 3
    assert isinstance(json.loads(open(out[:-4] + ".json").read()), list)


@pytest.mark.parametrize("source, output", [("dataloader", "--output"), ("annotation", "--output-dir")])
def test_browse_draws_the_training_data(tmp_path, monkeypatch, source, output, capsys):
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    out = tmp_path / "browse"
    assert run(browse.main, ["--config-file", TINY, output, str(out), "--source", source,
                             "--num-images", "3", *MINI]) == 0
    deprecated = "note: --output-dir is deprecated; it is --output on every command"
    assert (deprecated in capsys.readouterr().err) == (output == "--output-dir")
    pngs = sorted(os.listdir(out))
    assert len(pngs) == 3
    with Image.open(out / pngs[0]) as image:
        assert image.size == (256, 256)


def test_browse_draws_a_semantic_segmentation_configs_label_maps(tmp_path, monkeypatch):
    """Before: KeyError 'instances' traceback on semseg_hpvit_tiny.py (its samples hold sem_seg)."""
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    out = tmp_path / "browse"
    assert run(browse.main, ["--config-file", "semseg_hpvit_tiny.py", "--output", str(out),
                             "--num-images", "2", "dataloader.train.num_workers=0",
                             "dataloader.train.dataset.names=hpvit_shapes_sem_seg_train_mini"]) == 0
    pngs = sorted(os.listdir(out))
    assert len(pngs) == 2
    with Image.open(out / pngs[0]) as image:
        drawn = np.asarray(image.convert("RGB"))
    assert all(112 <= side <= 128 for side in drawn.shape[:2])  # the 128 crop of a 112-144 resize
    assert len(np.unique(drawn.reshape(-1, 3), axis=0)) > 10  # image and overlay, not blank


@pytest.mark.parametrize("content", [None, b"not an image"])
def test_export_names_a_missing_or_unreadable_sample_image(tmp_path, weights, content, capsys):
    """Before: `image file ... does not exist: check the image root the dataset was registered
    with`, words about a dataset the command does not have."""
    sample = tmp_path / "sample.png"
    if content is not None:
        sample.write_bytes(content)
    assert run(export.main, ["--config-file", TINY, "--weights", weights, "--sample-image",
                             str(sample), "--output", str(tmp_path / "out")]) == 2
    (line,) = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    expected = "no such file" if content is None else "not a readable image"
    assert line.startswith(f"error: --sample-image {sample}: {expected}") and "dataset" not in line


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_reproduces_the_eager_model(tmp_path, weights, fmt):
    import onnxruntime

    from hpvit_d2.model_zoo import get

    sample = tmp_path / "sample.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(sample)
    out = tmp_path / fmt
    opts = ["model.roi_heads.box_predictor.test_score_thresh=0.0"]
    assert run(export.main, ["--config-file", TINY, "--weights", weights, "--format", fmt,
                             "--sample-image", str(sample), "--output", str(out), "--opts", *opts]) == 0
    report = json.loads((out / "export_report.json").read_text())
    assert report["passed"] and report["input_size"] == [171, 256]
    # Load the exported file here and compare with the eager model ourselves.
    model = get(TINY, weights=weights, overrides=opts)
    image = export._sample_input(model_zoo_config(opts), str(sample))
    if fmt == "torchscript":
        assert report["instances_exported"] == report["instances_eager"] > 0
        loaded = torch.jit.load(str(out / "model.ts"))
        with torch.no_grad():
            boxes = loaded(image)[0]
            expected = model.inference([{"image": image}], do_postprocess=False)[0].pred_boxes.tensor
        torch.testing.assert_close(boxes, expected, atol=1e-4, rtol=0)
    else:
        session = onnxruntime.InferenceSession(str(out / "backbone.onnx"))
        x = model.preprocess_image([{"image": image}]).tensor
        got = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            expected = model.backbone(x)
        for value, name in zip(got, report["outputs"]):
            np.testing.assert_allclose(value, expected[name].numpy(), atol=1e-4)


def model_zoo_config(opts):
    from hpvit_d2.model_zoo import get_config

    return get_config(TINY, opts)


def test_own_config_outside_the_repository(tmp_path):
    """The README's pattern: a config file anywhere, built on a shipped one by name."""
    from detectron2.config import instantiate

    from hpvit_d2.model_zoo import get_config

    path = tmp_path / "my_config.py"
    path.write_text(
        "from hpvit_d2.model_zoo import get_config\n\n"
        "_base = get_config('mask_rcnn_hpvit_tiny.py')\n"
        "model, dataloader, optimizer, lr_multiplier, train = (\n"
        "    _base.model, _base.dataloader, _base.optimizer, _base.lr_multiplier, _base.train)\n"
        "model.roi_heads.num_classes = 3\n")
    cfg = get_config(str(path), ["train.max_iter=7"])
    assert set(cfg) == {"model", "dataloader", "optimizer", "lr_multiplier", "train"}
    assert cfg.train.max_iter == 7
    assert instantiate(cfg.model).roi_heads.box_predictor.cls_score.out_features == 4


@pytest.mark.parametrize("absent", ["onnxruntime", "onnx"])
def test_an_onnx_export_without_the_extra_names_it_and_exits_3(tmp_path, weights, absent, capsys,
                                                               monkeypatch):
    """Python's own way to make a module absent (None in sys.modules: its import fails); the wheel
    without the extra, for real: tests/test_wheel.py."""
    monkeypatch.setitem(sys.modules, absent, None)
    out = tmp_path / "out"
    assert run(export.main, ["--config-file", TINY, "--weights", weights, "--format", "onnx",
                             "--sample-image", str(tmp_path / "any.png"), "--output", str(out)]) == 3
    line = error_line(capsys)
    assert line == (f"error: --format onnx needs {absent}, not installed: pip install "
                    "'hpvit_d2[onnx]' (make setup installs it in a checkout)")
    assert not out.exists()  # refused before any work
    setup = open(os.path.join(ROOT, "setup.py")).read()
    assert '"onnx": ["onnx>=' in setup and '"onnxruntime>=' in setup  # the extra it names
