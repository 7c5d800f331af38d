"""Evaluation noise: the bootstrap's resampled AP is pycocotools' AP of the resampled images, and
the semantic-segmentation confusions give SemSegEvaluator's IoUs."""
import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hpvit_lab.eval_noise import CocoResampler, binomial_se, miou, semseg_confusions


def _coco(images):
    """GT and results for ``images``: a list of [(box, detection box or None, score)]."""
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    results = []
    for i, objects in enumerate(images, start=1):
        gt["images"].append({"id": i, "width": 100, "height": 100, "file_name": f"{i}.jpg"})
        for box, found, score, cat in objects:
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i, "bbox": box,
                                      "category_id": cat, "area": box[2] * box[3], "iscrowd": 0})
            if found is not None:
                results.append({"image_id": i, "bbox": found, "score": score, "category_id": cat})
    return gt, results


IMAGES = [
    [([10, 10, 30, 30], [11, 10, 30, 29], 0.9, 1), ([50, 50, 20, 20], None, 0.0, 2)],
    [([5, 5, 60, 40], [20, 15, 50, 40], 0.6, 1)],
    [([30, 30, 10, 10], [31, 31, 10, 10], 0.8, 2), ([60, 10, 30, 50], [60, 12, 30, 50], 0.3, 1)],
]


def _pycocotools_ap(images, tmp_path, name):
    gt, results = _coco(images)
    (tmp_path / f"{name}_gt.json").write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / f"{name}_gt.json"))
        evaluation = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return 100 * evaluation.stats[0]


def test_resampled_ap_is_pycocotools_ap_of_the_resampled_images(tmp_path):
    gt, results = _coco(IMAGES)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    resampler = CocoResampler(str(tmp_path / "gt.json"), str(tmp_path / "dt.json"), "bbox")
    assert resampler.num_images == 3
    assert resampler.ap() == pytest.approx(_pycocotools_ap(IMAGES, tmp_path, "all"))
    # Image 1 drawn twice, image 2 not at all: the same as a data set that holds image 1 twice.
    drawn = [IMAGES[0], IMAGES[0], IMAGES[2]]
    assert resampler.ap([0, 0, 2]) == pytest.approx(_pycocotools_ap(drawn, tmp_path, "drawn"))
    assert resampler.ap([1]) != pytest.approx(resampler.ap([2]))


def test_semseg_confusions_and_miou(tmp_path):
    label = np.zeros((8, 8), np.uint8)
    label[:4, :4] = 1
    label[6:, 6:] = 255  # ignored
    Image.fromarray(label).save(tmp_path / "a.png")
    prediction = np.zeros((8, 8), np.uint8)
    prediction[:4, :2] = 1  # half of class 1 found
    rle = mask_util.encode(np.asfortranarray((prediction == 1).astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    background = mask_util.encode(np.asfortranarray((prediction == 0).astype(np.uint8)))
    background["counts"] = background["counts"].decode()
    (tmp_path / "pred.json").write_text(json.dumps([
        {"file_name": "a.jpg", "category_id": 1, "segmentation": rle},
        {"file_name": "a.jpg", "category_id": 0, "segmentation": background}]))
    confusion = semseg_confusions(str(tmp_path / "pred.json"), {"a.jpg": str(tmp_path / "a.png")}, 2)
    matrix = confusion["a.jpg"]
    assert matrix.sum() == 64 - 4 and matrix[1, 1] == 8 and matrix[1, 0] == 8 and matrix[0, 1] == 0
    assert miou(matrix, [1]) == pytest.approx(50.0)
    assert miou(matrix, [0, 1]) == pytest.approx((44 / 52 * 100 + 50.0) / 2)


def test_binomial_se():
    assert binomial_se(90.0, 2000) == pytest.approx(100 * (0.9 * 0.1 / 2000) ** 0.5)
    assert binomial_se(100.0, 10) == 0.0
