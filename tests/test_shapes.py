"""The embedded shapes dataset: determinism, valid COCO annotations, registration (explicit,
idempotent), regeneration of incomplete or outdated copies, concurrent generation, and
COCOEvaluator on it."""
import json
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, BoxMode, Instances

from hpvit_d2.data import register_all_shapes, shapes
from hpvit_d2.data.shapes import SHAPE_CLASSES, generate_shapes_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLIT_NAMES = ("hpvit_shapes_train", "hpvit_shapes_val", "hpvit_shapes_test",
               "hpvit_shapes_train_mini", "hpvit_shapes_val_mini")
# Their semantic versions (same images, label maps: hpvit_d2.data.shapes_semseg).
SEM_SEG_SPLIT_NAMES = tuple(n.replace("hpvit_shapes_", "hpvit_shapes_sem_seg_") for n in SPLIT_NAMES)


def _files(json_path):
    """{relative path: bytes} of a generated split (json, manifest and images)."""
    split_dir = os.path.dirname(json_path)
    out = {}
    for dirpath, _, names in os.walk(split_dir):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, split_dir)] = f.read()
    return out


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = generate_shapes_dataset(str(tmp_path / "a"), "train", 6, seed=3)
    b = generate_shapes_dataset(str(tmp_path / "b"), "train", 6, seed=3)
    c = generate_shapes_dataset(str(tmp_path / "c"), "train", 6, seed=4)
    files_a, files_b = _files(a), _files(b)
    assert len(files_a) == 6 + 2  # images + instances.json + manifest.json
    assert files_a == files_b
    with open(a) as fa, open(b) as fb:
        assert json.load(fa) == json.load(fb)
    files_c = _files(c)
    assert all(files_a[k] != files_c[k] for k in files_a if k.endswith(".jpg"))


def test_annotations_are_valid_coco(tmp_path):
    size = 256
    path = generate_shapes_dataset(str(tmp_path), "val", 24, image_size=size, seed=1)
    coco = COCO(path)
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPE_CLASSES)
    assert len(coco.getImgIds()) == 24
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= 24 * 3
    assert {a["category_id"] for a in anns} == {1, 2, 3, 4}
    areas = []
    for ann in anns:
        img = coco.loadImgs(ann["image_id"])[0]
        assert (img["width"], img["height"]) == (size, size)
        assert len(ann["segmentation"]) == 1
        poly = np.asarray(ann["segmentation"][0]).reshape(-1, 2)
        assert len(poly) >= 3
        assert poly.min() >= 0 and poly[:, 0].max() <= size and poly[:, 1].max() <= size
        rle = mask_util.frPyObjects(ann["segmentation"], size, size)
        mask_area = float(mask_util.area(mask_util.merge(rle)))
        assert mask_area > 0 and ann["area"] > 0
        assert abs(mask_area - ann["area"]) <= 0.1 * ann["area"] + 30
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0
        np.testing.assert_allclose([x, y, x + w, y + h],
                                   [*poly.min(0), *poly.max(0)], atol=1e-3)
        # pixels of the mask match the box the annotation declares (to a pixel)
        m = coco.annToMask(ann)
        ys, xs = np.nonzero(m)
        assert xs.min() >= np.floor(x) - 1 and xs.max() <= np.ceil(x + w) + 1
        assert ys.min() >= np.floor(y) - 1 and ys.max() <= np.ceil(y + h) + 1
        areas.append(ann["area"])
    areas = np.asarray(areas)
    # small, medium and large objects in COCO's sense
    assert (areas < 32 ** 2).sum() > 0
    assert ((areas >= 32 ** 2) & (areas < 96 ** 2)).sum() > 0
    assert (areas >= 96 ** 2).sum() > 0


def test_registered_splits_follow_hpvit_data(tmp_path, monkeypatch):
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path))
    for name in SPLIT_NAMES:
        assert name in DatasetCatalog.list()
        assert MetadataCatalog.get(name).thing_classes == list(SHAPE_CLASSES)
        assert MetadataCatalog.get(name).evaluator_type == "coco"
    dicts = DatasetCatalog.get("hpvit_shapes_train_mini")
    assert len(dicts) == shapes.SHAPES_SPLITS["hpvit_shapes_train_mini"].num_images
    for d in dicts:
        assert d["file_name"].startswith(str(tmp_path)) and os.path.isfile(d["file_name"])
        assert (d["height"], d["width"]) == (256, 256)
        assert d["annotations"]
        for ann in d["annotations"]:
            assert 0 <= ann["category_id"] < len(SHAPE_CLASSES)
            assert ann["bbox_mode"] == BoxMode.XYWH_ABS
    meta = MetadataCatalog.get("hpvit_shapes_val_mini")
    assert meta.json_file.startswith(str(tmp_path)) and os.path.isfile(meta.json_file)
    assert os.path.isdir(meta.image_root)


def test_register_all_shapes_is_idempotent():
    registered = DatasetCatalog.list()
    metadata = {name: MetadataCatalog.get(name) for name in SPLIT_NAMES}
    register_all_shapes()
    register_all_shapes()
    assert DatasetCatalog.list() == registered
    assert all(MetadataCatalog.get(name) is metadata[name] for name in SPLIT_NAMES)
    # a split removed from the catalogs comes back, with the same metadata, on the next call
    name = "hpvit_shapes_val_mini"
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    try:
        register_all_shapes()
        assert sorted(DatasetCatalog.list()) == sorted(registered)
        again = MetadataCatalog.get(name)
        for key in ("thing_classes", "thing_dataset_id_to_contiguous_id", "thing_colors",
                    "evaluator_type"):
            assert again.get(key) == metadata[name].get(key)
    finally:
        register_all_shapes()


_IMPORTS = """
import importlib.util, json, sys
from detectron2.data import DatasetCatalog

def shapes_names():
    return sorted(n for n in DatasetCatalog.list() if n.startswith("hpvit_shapes"))

spec = importlib.util.spec_from_file_location("standalone_shapes", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
generator_only = shapes_names()
import hpvit_d2.data.shapes  # what configs do
print("RESULT " + json.dumps([generator_only, shapes_names()]))
"""


def test_shapes_module_registers_nothing_importing_it_through_the_package_does():
    """shapes.py is the generator only; ``import hpvit_d2.data.shapes`` (as configs do) still
    registers the splits, through the package."""
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORTS, os.path.join(REPO, "hpvit_d2", "data", "shapes.py")],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    generator_only, through_package = json.loads(line[len("RESULT "):])
    assert generator_only == []
    assert through_package == sorted(SPLIT_NAMES + SEM_SEG_SPLIT_NAMES)


def test_coco_evaluator_scores_ground_truth_100(tmp_path, monkeypatch):
    monkeypatch.setenv("HPVIT_DATA", str(tmp_path / "data"))
    name = "hpvit_shapes_val_mini"
    evaluator = COCOEvaluator(name, tasks=("bbox", "segm"), output_dir=str(tmp_path / "eval"))
    evaluator.reset()
    for d in DatasetCatalog.get(name):
        inst = Instances((d["height"], d["width"]))
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                 for a in d["annotations"]]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.scores = torch.ones(len(boxes))
        inst.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]])
        masks = [mask_util.decode(mask_util.merge(
            mask_util.frPyObjects(a["segmentation"], d["height"], d["width"])))
            for a in d["annotations"]]
        inst.pred_masks = torch.as_tensor(np.stack(masks)).bool()
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP"] == pytest.approx(100.0)


def test_incomplete_or_outdated_split_is_regenerated(tmp_path, monkeypatch):
    path = generate_shapes_dataset(str(tmp_path), "train", 4, seed=0)
    reference = _files(path)
    split_dir = os.path.dirname(path)
    image = os.path.join(split_dir, "images", "train_00002.jpg")

    with open(image, "r+b") as f:  # truncated image
        f.truncate(100)
    assert generate_shapes_dataset(str(tmp_path), "train", 4, seed=0) == path
    assert _files(path) == reference

    os.remove(os.path.join(split_dir, "manifest.json"))  # interrupted before the manifest
    generate_shapes_dataset(str(tmp_path), "train", 4, seed=0)
    assert _files(path) == reference

    manifest = os.path.join(split_dir, "manifest.json")  # older generator version
    with open(manifest) as f:
        old = json.load(f)
    old["version"] = shapes.SHAPES_VERSION - 1
    with open(manifest, "w") as f:
        json.dump(old, f)
    generate_shapes_dataset(str(tmp_path), "train", 4, seed=0)
    assert _files(path) == reference
    # nothing but the split itself is left in its parent (no temporary or stale directories)
    assert os.listdir(os.path.dirname(split_dir)) == [os.path.basename(split_dir)]


def _generate(root):
    return generate_shapes_dataset(root, "val", 12, seed=5)


def test_concurrent_generation_is_safe(tmp_path):
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        paths = pool.map(_generate, [str(tmp_path / "shared")] * 3)
    assert len(set(paths)) == 1
    reference = _files(_generate(str(tmp_path / "alone")))
    assert _files(paths[0]) == reference
    assert len(os.listdir(os.path.dirname(os.path.dirname(paths[0])))) == 1


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        generate_shapes_dataset(str(tmp_path), "train", 0)
    with pytest.raises(ValueError, match="image_size"):
        generate_shapes_dataset(str(tmp_path), "train", 2, image_size=16)
    with pytest.raises(KeyError, match="hpvit_shapes_test"):
        shapes.ensure_shapes_split("hpvit_shapes_holdout")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="HPVIT_DATA"):
        generate_shapes_dataset(str(blocker), "train", 2)
