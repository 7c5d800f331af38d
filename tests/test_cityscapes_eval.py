"""
Cityscapes end to end: a tiny Cityscapes tree on disk, the test loader and the evaluators of the
Cityscapes configs (official cityscapesscripts AP + COCO-style AP), and detectron2's
inference_on_dataset with the ground truth fed back as predictions.
"""

import json
import math
import os
import subprocess
import sys
import uuid

import pytest
from detectron2.config import LazyConfig, instantiate
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators, inference_on_dataset

from gt_model import GroundTruthModel, eval_config, evaluate_ground_truth
from hpvit_d2.data.build import get_dataset_dicts
from hpvit_d2.data.datasets import register_cityscapes_instances
from hpvit_d2.evaluation import CityscapesInstanceEvaluator
from tiny_cityscapes import write_tiny_cityscapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ["configs/cityscapes/mask_rcnn_hpvit_b.py", "configs/cityscapes/mask_rcnn_vitdet_b.py"]


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cityscapes"))
    write_tiny_cityscapes(root, splits=("val",))
    name = f"test_cityscapes_{uuid.uuid4().hex[:8]}"
    register_cityscapes_instances(
        name, os.path.join(root, "leftImg8bit", "val"), os.path.join(root, "gtFine", "val")
    )
    return name, root


def test_configs_train_and_evaluate_cityscapes():
    """(That the two differ only in the backbone: tests/test_fair_baselines.py.)"""
    hpvit, vitdet = (LazyConfig.load(os.path.join(REPO, p)) for p in CONFIGS)
    for cfg in (hpvit, vitdet):
        assert cfg.model.roi_heads.num_classes == 8
        assert cfg.dataloader.train.dataset.names == "cityscapes_fine_instance_seg_train"
        assert cfg.dataloader.test.dataset.names == "cityscapes_fine_instance_seg_val"
        assert cfg.dataloader.test.dataset._target_ is get_dataset_dicts
        assert cfg.dataloader.evaluator._target_ is DatasetEvaluators
        targets = [e._target_ for e in cfg.dataloader.evaluator.evaluators]
        assert targets == [COCOEvaluator, CityscapesInstanceEvaluator]
        assert cfg.model.backbone.square_pad == 0  # 2048x1024 images, no square padding


@pytest.mark.parametrize("path", CONFIGS)
def test_cityscapes_ap_from_ground_truth(cityscapes, path, tmp_path):
    name, _ = cityscapes
    cfg = eval_config(path, name, tmp_path)
    dicts = get_dataset_dicts(name, filter_empty=False)
    assert len(dicts) == 3 and sum(a["iscrowd"] for d in dicts for a in d["annotations"]) == 1

    def evaluate(**perturbation):
        return evaluate_ground_truth(cfg, dicts, **perturbation)

    exact = evaluate()
    for task in ("bbox", "segm", "cityscapes"):
        assert exact[task]["AP"] == pytest.approx(100.0), task
        assert exact[task]["AP50"] == pytest.approx(100.0), task
    assert math.isnan(exact["cityscapes"]["AP-bus"])  # no bus in the tree

    perturbed = evaluate(shift=0.25, drop_first=True)
    for task in ("bbox", "segm", "cityscapes"):
        assert perturbed[task]["AP"] < exact[task]["AP"], task
        assert perturbed[task]["AP50"] < exact[task]["AP50"], task

    empty = evaluate(empty=True)
    assert empty["cityscapes"]["AP"] == 0.0 and empty["cityscapes"]["AP50"] == 0.0
    for task in ("bbox", "segm"):  # COCOEvaluator: NaN (with a warning) when nothing is predicted
        assert all(math.isnan(v) for v in empty[task].values())


# Runs cityscapesscripts' own command-line evaluation (main()) on a prediction directory. Its
# ground-truth cache and result file are moved to the temporary directory, not the package's.
_OFFICIAL = """
import sys
import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as cs
cs.args.gtInstancesFile = sys.argv[1]
cs.args.exportFile = sys.argv[2]
cs.args.colorized = False
sys.argv = sys.argv[:1]
cs.main()
"""


def test_official_metric_equals_cityscapesscripts(cityscapes, tmp_path):
    name, root = cityscapes
    dicts = get_dataset_dicts(name, filter_empty=False)
    loader = instantiate(eval_config(CONFIGS[0], name, tmp_path).dataloader.test)
    evaluator = CityscapesInstanceEvaluator(name, output_dir=str(tmp_path / "kept"))
    ours = inference_on_dataset(
        GroundTruthModel(dicts, shift=0.2, drop_first=True), loader, evaluator
    )
    ours = ours["cityscapes"]
    predictions = tmp_path / "kept" / "cityscapes_instances"
    assert len(list(predictions.glob("*_pred.txt"))) == 3

    result = tmp_path / "official.json"
    env = dict(os.environ, CITYSCAPES_DATASET=root, CITYSCAPES_RESULTS=str(predictions))
    subprocess.run(
        [sys.executable, "-c", _OFFICIAL, str(tmp_path / "gtInstances.json"), str(result)],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=120,
    )
    official = json.loads(result.read_text())["averages"]
    assert 0.0 < ours["AP"] < 100.0
    assert ours["AP"] == pytest.approx(100.0 * official["allAp"], abs=1e-9)
    assert ours["AP50"] == pytest.approx(100.0 * official["allAp50%"], abs=1e-9)
    for label, values in official["classes"].items():
        if math.isnan(values["ap"]):
            assert math.isnan(ours[f"AP-{label}"])
        else:
            assert ours[f"AP-{label}"] == pytest.approx(100.0 * values["ap"], abs=1e-9)
    assert not os.path.exists(os.path.join(os.getcwd(), "matches.json"))
