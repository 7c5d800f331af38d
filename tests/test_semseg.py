"""
Semantic segmentation data and evaluation: the shapes label maps, bad label files named where they
are read, missing ADE20K / Cityscapes trees explained, the evaluators of the configs scoring the
ground truth 100, and the stock tool (and the project's entry) training and evaluating the
ADE20K and Cityscapes configs on tiny trees in a tmp $DETECTRON2_DATASETS.
"""
import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import inference_on_dataset
from PIL import Image

from gt_model import eval_config
from hpvit_d2.cli.common import user_errors
from hpvit_d2.data import shapes
from hpvit_d2.data.build import get_dataset_dicts
from hpvit_d2.data.datasets import DatasetNotFoundError
from hpvit_d2.data.labels import BadLabelError
from hpvit_d2.data.mapper import SafeDatasetMapper
from hpvit_d2.data.shapes_semseg import SEM_SEG_CLASSES, generate_shapes_labels
from tiny_cityscapes import write_tiny_cityscapes
from tiny_semseg import add_label_train_ids, write_tiny_ade20k

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# instances.json of the shapes split ("val", 4 images, seed 1) as generated before the label
# maps existed: adding them must not change a byte of the detection data.
VAL_MINI_JSON_SHA256 = "7ac0b4ee9d8ba7388763c906164751cf9ad1fa86fde1019a7316528139a2a1a1"


def _tree(directory):
    out = {}
    for dirpath, _, names in os.walk(directory):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                out[os.path.relpath(os.path.join(dirpath, name), directory)] = f.read()
    return out


# ---------------------------------------------------------------------------------------------
# The shapes label maps
# ---------------------------------------------------------------------------------------------


def test_shapes_label_maps_are_the_drawn_shapes_and_leave_the_detection_files_alone(
        tmp_path, monkeypatch):
    json_file = shapes.generate_shapes_dataset(str(tmp_path / "a"), "val", 4, seed=1)
    with open(json_file, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == VAL_MINI_JSON_SHA256
    before = _tree(os.path.dirname(json_file))
    label_dir = generate_shapes_labels(json_file)
    assert _tree(os.path.dirname(json_file)) == before  # nothing added or changed there
    assert generate_shapes_labels(json_file) == label_dir  # complete: not written again

    # Redraw each image, recording the masks the generator painted: labels equal them exactly.
    painted = []
    rasterise = shapes._object_mask
    monkeypatch.setattr(shapes, "_object_mask",
                        lambda verts, size: painted.append(rasterise(verts, size)) or painted[-1])
    for i in range(4):
        painted.clear()
        _, objects = shapes._draw_image(np.random.default_rng([1, i]), 256)
        expected = np.zeros((256, 256), np.uint8)
        for (x0, y0, x1, y1, inside), obj in zip(painted, objects):
            expected[y0:y1, x0:x1][inside] = obj["category"] + 1
        label = np.asarray(Image.open(os.path.join(label_dir, f"val_{i:05d}.png")))
        assert label.dtype == np.uint8 and np.array_equal(label, expected), i
        assert set(np.unique(label)) <= set(range(len(SEM_SEG_CLASSES)))

    # Deterministic: another root gives the same bytes.
    other = generate_shapes_labels(shapes.generate_shapes_dataset(str(tmp_path / "b"), "val", 4,
                                                                  seed=1))
    assert _tree(other) == _tree(label_dir)


def test_registered_sem_seg_splits_load_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path))
    name = "hpvit_shapes_sem_seg_val_mini"
    meta = MetadataCatalog.get(name)
    assert meta.stuff_classes == ["background", "circle", "rectangle", "triangle", "star"]
    assert meta.ignore_label == 255 and meta.evaluator_type == "sem_seg"
    dicts = get_dataset_dicts(name, filter_empty=False)
    assert len(dicts) == 4 and meta.sem_seg_root.startswith(str(tmp_path))
    mapper = SafeDatasetMapper(is_train=False, augmentations=[], image_format="RGB",
                               sem_seg_num_classes=5)
    mapped = mapper(dicts[0])
    assert mapped["image"].shape == (3, 256, 256) and mapped["sem_seg"].shape == (256, 256)
    assert (mapped["width"], mapped["height"]) == (256, 256)  # what the train loader groups by
    assert int(mapped["sem_seg"].max()) < 5


# ---------------------------------------------------------------------------------------------
# Bad label files: named where they are read
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def sample(tmp_path):
    image = tmp_path / "img.jpg"
    Image.fromarray(np.full((32, 40, 3), 128, np.uint8)).save(image)

    def make(label, mode=None):
        path = tmp_path / "label.png"
        Image.fromarray(label, mode=mode).save(path)
        return {"file_name": str(image), "sem_seg_file_name": str(path)}

    return make


def _mapper(is_train=True):
    return SafeDatasetMapper(is_train=is_train, augmentations=[], image_format="RGB",
                             sem_seg_num_classes=5, sem_seg_ignore_value=255)


def test_good_label_with_ignore_value_passes(sample):
    label = np.zeros((32, 40), np.uint8)
    label[:8] = 255
    label[8:, :10] = 4
    mapped = _mapper()(sample(label))
    assert torch.equal(mapped["sem_seg"], torch.as_tensor(label, dtype=torch.long))


def test_label_of_another_size_is_named(sample):
    d = sample(np.zeros((40, 32), np.uint8))
    for is_train in (True, False):
        with pytest.raises(BadLabelError, match=r"label file '.*label\.png' is 32x40 .* its image "
                                                r"is 40x32"):
            _mapper(is_train)(d)


def test_label_values_outside_the_classes_are_named(sample):
    label = np.zeros((32, 40), np.uint8)
    label[0, :3] = 7
    label[1, 0] = 254
    with pytest.raises(BadLabelError, match=r"label\.png' has values 7 \(3 px\), 254 \(1 px\) "
                                            r"that are neither classes \(0\.\.4\) nor the ignore "
                                            r"value 255"):
        _mapper()(sample(label))
    assert issubclass(BadLabelError, user_errors())  # one line and exit 2 from the commands


def test_colour_label_is_refused_and_palette_indices_are_kept(sample):
    with pytest.raises(BadLabelError, match="is a RGB image; a label map must be single-channel"):
        _mapper()(sample(np.zeros((32, 40, 3), np.uint8)))
    indices = np.zeros((32, 40), np.uint8)
    indices[:, 20:] = 3
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette([0, 0, 0, 10, 10, 10, 20, 20, 20, 250, 0, 0] + [0] * 756)
    d = sample(indices)
    palette.save(d["sem_seg_file_name"])
    # the indices, as SemSegEvaluator reads them (detectron2's mapper would give luminance 75)
    assert _mapper()(d)["sem_seg"].unique().tolist() == [0, 3]


# ---------------------------------------------------------------------------------------------
# Built-in trees: missing files explained; the configs' evaluators score ground truth 100
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def datasets_dir(tmp_path, monkeypatch):
    """A directory where detectron2's built-in names look (``./datasets`` from this process's
    working directory: conftest unsets $DETECTRON2_DATASETS before detectron2 is imported)."""
    assert not os.path.isabs(MetadataCatalog.get("ade20k_sem_seg_val").image_root)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "datasets"


def test_missing_ade20k_tree_and_label_files_are_explained(datasets_dir):
    with pytest.raises(DatasetNotFoundError) as e:
        get_dataset_dicts("ade20k_sem_seg_val", filter_empty=False)
    message = str(e.value)
    for part in ("'ade20k_sem_seg_val'", "ADEChallengeData2016/images/validation",
                 "annotations_detectron2/validation/*.png", "prepare_ade20k_sem_seg.py",
                 "DETECTRON2_DATASETS is unset"):
        assert part in message, message
    write_tiny_ade20k(str(datasets_dir))
    missing = (datasets_dir / "ADEChallengeData2016" / "annotations_detectron2" / "validation"
               / "ADE_val_00000002.png")
    os.remove(missing)
    with pytest.raises(DatasetNotFoundError, match=f"{missing} does not exist"):
        get_dataset_dicts("ade20k_sem_seg_val", filter_empty=False)


def test_missing_cityscapes_train_ids_are_explained(datasets_dir):
    write_tiny_cityscapes(str(datasets_dir / "cityscapes"), splits=("val",))
    with pytest.raises(DatasetNotFoundError, match="(?s)gtFine_labelTrainIds.png does not exist.*"
                                                   "csCreateTrainIdLabelImgs"):
        get_dataset_dicts("cityscapes_fine_sem_seg_val", filter_empty=False)


class GroundTruthSemSeg(torch.nn.Module):
    """Returns each image's label map as one-hot logits (num_classes, height, width)."""

    def __init__(self, dataset_name: str, num_classes: int):
        super().__init__()
        self.files = {d["file_name"]: d["sem_seg_file_name"]
                      for d in DatasetCatalog.get(dataset_name)}
        self.num_classes = num_classes

    def forward(self, inputs):
        outs = []
        for x in inputs:
            label = torch.as_tensor(np.asarray(Image.open(self.files[x["file_name"]])),
                                    dtype=torch.long)
            label[label >= self.num_classes] = 0  # ignored pixels: any class
            outs.append({"sem_seg": torch.nn.functional.one_hot(label, self.num_classes)
                         .permute(2, 0, 1).float()})
        return outs


@pytest.mark.usefixtures("one_thread")
def test_ade20k_and_cityscapes_evaluators_score_ground_truth_100(datasets_dir, tmp_path):
    write_tiny_ade20k(str(datasets_dir))
    cfg = eval_config("configs/ade20k/upernet_hpvit_b.py", "ade20k_sem_seg_val", tmp_path / "ade")
    results = inference_on_dataset(GroundTruthSemSeg("ade20k_sem_seg_val", 150),
                                   instantiate(cfg.dataloader.test),
                                   instantiate(cfg.dataloader.evaluator))
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)
    assert results["sem_seg"]["pACC"] == pytest.approx(100.0)

    write_tiny_cityscapes(str(datasets_dir / "cityscapes"), splits=("val",))
    add_label_train_ids(str(datasets_dir / "cityscapes"))
    cfg = eval_config("configs/cityscapes/upernet_vit_b.py", "cityscapes_fine_sem_seg_val",
                      tmp_path / "cs")
    results = inference_on_dataset(GroundTruthSemSeg("cityscapes_fine_sem_seg_val", 19),
                                   instantiate(cfg.dataloader.test),
                                   instantiate(cfg.dataloader.evaluator))
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)
    official = results["cityscapes_sem_seg"]
    assert official["IoU"] == pytest.approx(100.0) and official["IoU_sup"] == pytest.approx(100.0)
    assert official["IoU-car"] == pytest.approx(100.0)
    assert len(os.listdir(tmp_path / "cs" / "inference" / "cityscapes_sem_seg")) == 3


# ---------------------------------------------------------------------------------------------
# The stock tool and the project's entry, on tiny trees
# ---------------------------------------------------------------------------------------------

_TINY_HEAD = ["model.sem_seg_head.channels=16", "model.sem_seg_head.aux_channels=16"]
_TINY_BACKBONE = {
    "hpvit": ["model.backbone.embed_dim=32", "model.backbone.num_heads=2"],
    "vit": ["model.backbone.net.embed_dim=32", "model.backbone.net.num_heads=2",
            "model.backbone.out_channels=16"],
}
_TINY_DATA = {
    "ade20k": ["dataloader.train.mapper.augmentations.0.short_edge_length=[64]",
               "dataloader.train.mapper.augmentations.0.max_size=128",
               "dataloader.train.mapper.augmentations.1.crop_size=[64,64]",
               "dataloader.test.mapper.augmentations.0.short_edge_length=64",
               "dataloader.test.mapper.augmentations.0.max_size=128"],
    "cityscapes": ["dataloader.train.mapper.augmentations.0.short_edge_length=[64]",
                   "dataloader.train.mapper.augmentations.0.max_size=128",
                   "dataloader.train.mapper.augmentations.1.crop_size=[64,128]",
                   "dataloader.test.mapper.augmentations.0.short_edge_length=64",
                   "dataloader.test.mapper.augmentations.0.max_size=128"],
}


def small(config: str, output_dir) -> list:
    """Overrides that make a B config CPU-sized: width 32, 16-channel head, 64-pixel images,
    batch 2, 2 iterations then evaluation, no init checkpoint (the MAE URL is offline here)."""
    dataset, name = config.split("/")
    backbone = "hpvit" if "hpvit" in name else "vit"
    return [*_TINY_BACKBONE[backbone], *_TINY_HEAD, *_TINY_DATA[dataset],
            "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
            "dataloader.test.num_workers=0", "train.device=cpu", "train.amp.enabled=False",
            "train.init_checkpoint=''", "train.max_iter=2", "train.eval_period=2",
            "train.log_period=1", f"train.output_dir={output_dir}"]


@pytest.fixture(scope="module")
def d2_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2_datasets")
    write_tiny_ade20k(str(root))
    write_tiny_cityscapes(str(root / "cityscapes"))
    add_label_train_ids(str(root / "cityscapes"))
    return root


def _run(cmd, datasets, tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets), HPVIT_DATA=str(tmp_path / "data"),
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONPATH=REPO)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _copypaste(log: str) -> dict:
    lines = re.findall(r"copypaste: (.*)", log)
    return {line[len("Task: "):]: dict(zip(lines[i + 1].split(","),
                                           map(float, lines[i + 2].split(","))))
            for i, line in enumerate(lines) if line.startswith("Task: ")}


@pytest.mark.parametrize("config", ["ade20k/upernet_hpvit_b.py", "ade20k/upernet_vit_b.py",
                                    "cityscapes/upernet_hpvit_b.py", "cityscapes/upernet_vit_b.py"])
def test_stock_tool_trains_and_reports_miou(config, d2_datasets, tmp_path):
    log = _run([sys.executable, "-m", "tools.lazyconfig_train_net", "--config-file",
                f"configs/{config}", *small(config, tmp_path / "out")], d2_datasets, tmp_path)
    assert re.search(r"iter: 1 .*loss_sem_seg: [0-9.]+ .*loss_sem_seg_aux: [0-9.]+", log), \
        log[-2000:]
    metrics = _copypaste(log)
    assert 0.0 <= metrics["sem_seg"]["mIoU"] <= 100.0 and set(metrics["sem_seg"]) == {
        "mIoU", "fwIoU", "mACC", "pACC"}
    if config.startswith("cityscapes"):
        assert 0.0 <= metrics["cityscapes_sem_seg"]["IoU"] <= 100.0
    assert (tmp_path / "out" / "model_final.pth").is_file()


def test_project_entry_trains_with_the_resumable_loader(d2_datasets, tmp_path):
    config = "ade20k/upernet_vit_b.py"
    out = tmp_path / "out"
    _run([sys.executable, os.path.join(REPO, "projects", "HPViT", "train_net.py"),
          "--config-file", f"configs/{config}", *small(config, out),
          "dataloader.train.total_batch_size=4"], d2_datasets, tmp_path)
    from hpvit_d2.engine.metrics import final_metrics

    assert "sem_seg/mIoU" in final_metrics(out / "metrics.json")
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
