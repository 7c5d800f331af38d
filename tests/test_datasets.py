"""
Dataset loading through hpvit_d2.data.build.get_dataset_dicts: detectron2's built-in COCO and
Cityscapes names reached through $DETECTRON2_DATASETS, and one clear error for each way a dataset
can be missing, incomplete or malformed.
"""

import json
import os
import subprocess
import sys
import uuid

import pytest
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances

from hpvit_d2.data.build import get_dataset_dicts
from hpvit_d2.data.datasets import (
    DatasetFormatError,
    DatasetNotFoundError,
    register_cityscapes_instances,
)
from tiny_cityscapes import frame_stem, write_tiny_cityscapes
from tiny_coco_seg import write_tiny_coco_seg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")


def _name(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _coco(tmp_path):
    json_file = write_tiny_coco_seg(str(tmp_path))
    name = _name("test_coco")
    register_coco_instances(name, {}, json_file, str(tmp_path / "images"))
    return name, json_file


def _cityscapes(tmp_path):
    root = write_tiny_cityscapes(str(tmp_path), splits=("val",))
    name = _name("test_cityscapes")
    gt_dir = os.path.join(root, "gtFine", "val")
    register_cityscapes_instances(name, os.path.join(root, "leftImg8bit", "val"), gt_dir)
    return name, os.path.join(gt_dir, "frankfurt")


# Runs in a fresh process, since detectron2 reads $DETECTRON2_DATASETS when it is imported: each
# COCO and Cityscapes config evaluates ground truth fed back as predictions on its built-in val
# name; the train names, absent from the root, must fail with the layout error.
_BUILTIN = """
import json, sys
sys.path.insert(0, sys.argv[2])
from detectron2.config import LazyConfig, instantiate
from detectron2.evaluation import inference_on_dataset
from gt_model import GroundTruthModel
from hpvit_d2.data.datasets import DatasetNotFoundError

out = {}
for path in ("configs/mask_rcnn_hpvit_b.py", "configs/cityscapes/mask_rcnn_vitdet_b.py"):
    cfg = LazyConfig.load(path)
    cfg.train.output_dir = sys.argv[1]
    cfg.dataloader.test.num_workers = 0
    dicts = instantiate(cfg.dataloader.test.dataset)
    results = inference_on_dataset(GroundTruthModel(dicts), instantiate(cfg.dataloader.test),
                                   instantiate(cfg.dataloader.evaluator))
    try:
        instantiate(cfg.dataloader.train.dataset)
        error = None
    except DatasetNotFoundError as e:
        error = str(e)
    out[path] = {"images": len(dicts), "error": error,
                 "results": {task: {"AP": m["AP"], "AP50": m["AP50"]} for task, m in results.items()}}
print("RESULT " + json.dumps(out))
"""


def test_builtin_names_follow_detectron2_datasets(tmp_path):
    root = tmp_path / "datasets"
    write_tiny_coco_seg(
        str(root / "coco"),
        json_name="annotations/instances_val2017.json",
        image_dir="val2017",
        all_coco_categories=True,
    )
    write_tiny_cityscapes(str(root / "cityscapes"), splits=("val",))
    env = dict(os.environ, DETECTRON2_DATASETS=str(root))
    proc = subprocess.run(
        [sys.executable, "-c", _BUILTIN, str(tmp_path / "output"), TESTS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    out = json.loads(line[len("RESULT ") :])

    coco = out["configs/mask_rcnn_hpvit_b.py"]
    assert coco["images"] == 4
    assert set(coco["results"]) == {"bbox", "segm"}
    cityscapes = out["configs/cityscapes/mask_rcnn_vitdet_b.py"]
    assert cityscapes["images"] == 3
    assert set(cityscapes["results"]) == {"bbox", "segm", "cityscapes"}
    for entry in (coco, cityscapes):
        for metrics in entry["results"].values():
            assert metrics["AP"] == pytest.approx(100.0) and metrics["AP50"] == pytest.approx(100.0)

    error = coco["error"]
    assert "'coco_2017_train'" in error and "DETECTRON2_DATASETS=" + str(root) in error
    assert str(root / "coco" / "annotations" / "instances_train2017.json") in error
    assert str(root / "coco" / "train2017") in error
    error = cityscapes["error"]
    assert "'cityscapes_fine_instance_seg_train'" in error and "DETECTRON2_DATASETS" in error
    assert str(root / "cityscapes" / "leftImg8bit" / "train") + " does not exist" in error
    assert "gtFine_instanceIds.png" in error and "export DETECTRON2_DATASETS=" in error


def test_unregistered_name():
    with pytest.raises(DatasetNotFoundError, match="'no_such_dataset' is not registered") as e:
        get_dataset_dicts("no_such_dataset")
    assert "--register-coco NAME JSON IMAGE_DIR" in str(e.value)


def test_coco_missing_image_directory(tmp_path):
    name, json_file = _coco(tmp_path)
    os.rename(tmp_path / "images", tmp_path / "moved")
    with pytest.raises(DatasetNotFoundError) as e:
        get_dataset_dicts(name)
    message = str(e.value)
    assert f"Dataset '{name}'" in message
    assert f"image directory {tmp_path / 'images'} does not exist" in message
    assert json_file in message and "Register" in message


def test_coco_missing_annotation_file(tmp_path):
    name, json_file = _coco(tmp_path)
    os.remove(json_file)
    with pytest.raises(DatasetNotFoundError, match=f"annotation file {json_file} does not exist"):
        get_dataset_dicts(name)


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda text, data: text[:-10], "not valid JSON"),
        (lambda text, data: json.dumps(data["images"]), "top level is a JSON list"),
        (
            lambda text, data: json.dumps({k: v for k, v in data.items() if k != "categories"}),
            "key 'categories' is missing",
        ),
        (
            lambda text, data: json.dumps(
                {**data, "annotations": [{**data["annotations"][0], "category_id": 7}]}
            ),
            "annotation id 1 has category_id 7, which is not in 'categories'",
        ),
    ],
)
def test_coco_malformed_annotation_file(tmp_path, edit, problem):
    name, json_file = _coco(tmp_path)
    with open(json_file) as f:
        text = f.read()
    with open(json_file, "w") as f:
        f.write(edit(text, json.loads(text)))
    with pytest.raises(DatasetFormatError) as e:
        get_dataset_dicts(name)
    assert f"annotation file {json_file} is malformed" in str(e.value)
    assert problem in str(e.value)


def test_cityscapes_incomplete_tree(tmp_path):
    name, city_dir = _cityscapes(tmp_path)
    missing = os.path.join(city_dir, frame_stem("frankfurt", 1) + "_gtFine_instanceIds.png")
    os.remove(missing)
    with pytest.raises(DatasetNotFoundError) as e:
        get_dataset_dicts(name)
    message = str(e.value)
    assert f"Dataset '{name}' is missing or incomplete" in message
    assert f"{missing} does not exist" in message
    assert "{city}_{seq}_{frame}_gtFine_polygons.json" in message


def test_cityscapes_missing_gt_directory(tmp_path):
    name, city_dir = _cityscapes(tmp_path)
    gt_dir = os.path.dirname(city_dir)
    os.rename(gt_dir, gt_dir + "_moved")
    with pytest.raises(DatasetNotFoundError, match=f"annotation directory {gt_dir} does not exist"):
        get_dataset_dicts(name)


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda data: '{"imgHeight": 160,', "not valid JSON"),
        (
            lambda data: {
                **data,
                "objects": data["objects"]
                + [{"label": "spaceship", "polygon": [[0, 0], [9, 0], [9, 9]]}],
            },
            "label 'spaceship' is not a Cityscapes label",
        ),
        (
            lambda data: {
                **data,
                "objects": data["objects"] + [{"label": "car", "polygon": [[0, 0], [9, 9]]}],
            },
            "polygon must be a list of at least 3 [x, y] points",
        ),
    ],
)
def test_cityscapes_malformed_polygons(tmp_path, edit, problem):
    name, city_dir = _cityscapes(tmp_path)
    path = os.path.join(city_dir, frame_stem("frankfurt", 2) + "_gtFine_polygons.json")
    with open(path) as f:
        edited = edit(json.load(f))
    with open(path, "w") as f:
        f.write(edited if isinstance(edited, str) else json.dumps(edited))
    with pytest.raises(DatasetFormatError) as e:
        get_dataset_dicts(name)
    assert f"annotation file {path} is malformed" in str(e.value)
    assert problem in str(e.value)


def test_corrupt_image_is_named_by_the_mapper(tmp_path):
    from detectron2.config import LazyConfig, instantiate

    name, _ = _coco(tmp_path)
    broken = tmp_path / "images" / "000000000101.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    cfg = LazyConfig.load(os.path.join(REPO, "configs/mask_rcnn_hpvit_b.py"))
    mapper = instantiate(cfg.dataloader.test.mapper)
    record = next(
        d for d in get_dataset_dicts(name, filter_empty=False) if d["file_name"] == str(broken)
    )
    with pytest.raises(ValueError, match=str(broken)):
        mapper(record)
    assert name in DatasetCatalog.list()


def _edit_json(json_file, edit):
    with open(json_file) as f:
        data = json.load(f)
    edit(data)
    with open(json_file, "w") as f:
        json.dump(data, f)


@pytest.mark.parametrize("key", ["annotations", "images", "categories"])
def test_coco_missing_top_level_key_is_one_error(tmp_path, key):
    """detectron2's COCO loader reads a missing 'annotations' or 'images' as empty lists (then a
    bare IndexError); each missing key is one error line naming the json and the key."""
    name, json_file = _coco(tmp_path)
    _edit_json(json_file, lambda data: data.pop(key))
    with pytest.raises(DatasetFormatError) as e:
        get_dataset_dicts(name)
    message = str(e.value)
    assert f"Dataset '{name}': annotation file {json_file} is malformed" in message
    assert f"key '{key}' is missing" in message and "\n" not in message


def test_coco_without_annotations_key_loads_for_inference_only(tmp_path):
    """An image-info json (no 'annotations', like COCO's test-dev) loads for evaluation, which
    detectron2's COCOEvaluator supports; training or a mask requirement rejects it."""
    name, json_file = _coco(tmp_path)
    _edit_json(json_file, lambda data: data.pop("annotations"))
    dicts = get_dataset_dicts(name, filter_empty=False)
    assert len(dicts) == 4 and not any(d["annotations"] for d in dicts)
    with pytest.raises(DatasetFormatError, match="key 'annotations' is missing"):
        get_dataset_dicts(name, filter_empty=False, require_masks=True)


def test_every_image_filtered_out_is_named(tmp_path):
    name, json_file = _coco(tmp_path)
    _edit_json(json_file, lambda data: data.update(annotations=[]))
    with pytest.raises(DatasetFormatError, match=f"^no annotations: dataset '{name}' \\("):
        get_dataset_dicts(name)  # an empty annotation list: named at load, one line
    assert len(get_dataset_dicts(name, filter_empty=False)) == 4  # evaluation takes it
    _edit_json(json_file, lambda data: data.update(annotations=[
        dict(id=1, image_id=data["images"][0]["id"], category_id=data["categories"][0]["id"],
             bbox=[1, 1, 0, 0], area=0, iscrowd=0)]))
    with pytest.raises(DatasetFormatError, match=f"No images left in {name} after filtering"):
        get_dataset_dicts(name)  # every annotation dropped (a zero-area box)


def _coco_without_some_masks(tmp_path):
    """tiny_coco_seg with the masks of annotations 3 and 6 (and of crowd annotation 5) removed."""
    name, json_file = _coco(tmp_path)

    def drop_masks(data):
        for ann in data["annotations"]:
            if ann["id"] in (3, 5, 6):
                del ann["segmentation"]

    _edit_json(json_file, drop_masks)
    return name, json_file


def test_annotations_without_masks_rejected_when_required(tmp_path):
    name, json_file = _coco_without_some_masks(tmp_path)
    assert len(get_dataset_dicts(name)) == 3  # a box-only model trains on it
    with pytest.raises(DatasetFormatError) as e:
        get_dataset_dicts(name, require_masks=True)
    message = str(e.value)
    assert f"Dataset '{name}' ({json_file})" in message
    assert "2 of 6 non-crowd annotations have no 'segmentation'" in message
    assert "first: annotation id 3" in message and "000000000101.jpg" in message
    assert "model.roi_heads.mask_in_features=null" in message and "MODEL.MASK_ON False" in message
    assert "\n" not in message


def test_require_masks_from_a_config_interpolation(tmp_path):
    """Configs pass require_masks="${..mapper.use_instance_mask}": the resolved bool works; a
    value that is not a bool is refused rather than read as true."""
    from detectron2.config import LazyCall as L
    from detectron2.config import instantiate
    from omegaconf import OmegaConf

    from hpvit_d2.data.mapper import SafeDatasetMapper

    name, _ = _coco_without_some_masks(tmp_path)
    train = OmegaConf.create()
    train.dataset = L(get_dataset_dicts)(names=name, require_masks="${..mapper.use_instance_mask}")
    train.mapper = L(SafeDatasetMapper)(is_train=True, augmentations=[], image_format="RGB",
                                        use_instance_mask=True)
    with pytest.raises(DatasetFormatError, match="2 of 6 non-crowd annotations"):
        instantiate(train.dataset)
    train.mapper.use_instance_mask = False
    assert len(instantiate(train.dataset)) == 3
    with pytest.raises(TypeError, match="require_masks must be a bool"):
        get_dataset_dicts(name, require_masks="false")
