"""
COCO end to end: a tiny COCO dataset on disk, the test loader and evaluator of the COCO configs,
and detectron2's inference_on_dataset with the ground truth fed back as predictions.
"""

import logging
import math
import os
import uuid

import pytest
from detectron2.config import LazyConfig, instantiate
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator, inference_on_dataset

from gt_model import GroundTruthModel, eval_config, evaluate_ground_truth
from hpvit_d2.data.build import get_dataset_dicts
from tiny_coco_seg import write_tiny_coco_seg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ["configs/mask_rcnn_hpvit_b.py", "configs/mask_rcnn_vitdet_b.py"]


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    json_file = write_tiny_coco_seg(str(root))
    name = f"test_coco_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, json_file, str(root / "images"))
    return name


@pytest.mark.parametrize("path", CONFIGS)
def test_configs_use_checked_loading_and_coco_evaluator(path):
    cfg = LazyConfig.load(os.path.join(REPO, path))
    for split, name in (("train", "coco_2017_train"), ("test", "coco_2017_val")):
        assert cfg.dataloader[split].dataset._target_ is get_dataset_dicts
        assert cfg.dataloader[split].dataset.names == name
    assert cfg.dataloader.test.dataset.filter_empty is False
    assert cfg.dataloader.evaluator._target_ is COCOEvaluator
    assert tuple(cfg.dataloader.evaluator.tasks) == ("bbox", "segm")


def test_tiny_coco_loads_every_case(coco):
    dicts = get_dataset_dicts(coco, filter_empty=False)
    assert len(dicts) == 4
    annotations = [a for d in dicts for a in d["annotations"]]
    assert sum(1 for d in dicts if not d["annotations"]) == 1
    assert sum(a["iscrowd"] for a in annotations) == 1
    assert any(isinstance(a["segmentation"], dict) for a in annotations)
    assert any(
        isinstance(a["segmentation"], list) and len(a["segmentation"]) == 2 for a in annotations
    )
    assert len(get_dataset_dicts(coco)) == 3  # filter_empty drops the image with no objects


@pytest.mark.parametrize("path", CONFIGS)
def test_coco_ap_from_ground_truth(coco, path, tmp_path):
    cfg = eval_config(path, coco, tmp_path)
    dicts = get_dataset_dicts(coco, filter_empty=False)

    def evaluate(**perturbation):
        return evaluate_ground_truth(cfg, dicts, **perturbation)

    exact = evaluate()
    for task in ("bbox", "segm"):
        assert exact[task]["AP"] == pytest.approx(100.0)
        assert exact[task]["AP50"] == pytest.approx(100.0)

    perturbed = evaluate(shift=0.25, drop_first=True)
    for task in ("bbox", "segm"):
        assert perturbed[task]["AP"] < exact[task]["AP"]
        assert perturbed[task]["AP50"] < exact[task]["AP50"]

    # No predictions at all: detectron2's COCOEvaluator warns and reports NaN (not 0).
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    coco_logger = logging.getLogger("detectron2.evaluation.coco_evaluation")
    coco_logger.addHandler(handler)
    try:
        empty = evaluate(empty=True)
    finally:
        coco_logger.removeHandler(handler)
    for task in ("bbox", "segm"):
        assert all(math.isnan(v) for v in empty[task].values())
    assert any("No predictions from the model" in r.getMessage() for r in records)
