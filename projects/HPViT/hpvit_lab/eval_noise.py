"""
Evaluation noise: how much a metric moves when the test images are drawn again. Bootstrap
standard errors over test images, for one run and for the paired difference of two runs on the
same resampled images.

- COCO box / mask AP (:class:`CocoResampler`): pycocotools' per-image matching is run once
  (``COCOeval.evaluate``); each bootstrap sample only re-accumulates the matches of its images,
  repeated as drawn.
- Semantic segmentation (:func:`semseg_confusions`): per-image confusion matrices from
  detectron2's ``sem_seg_predictions.json`` and the label maps; mIoU over the chosen classes is
  recomputed from the summed matrices of each sample.
- Classification top-1: the binomial standard error ``sqrt(p (1 - p) / n)``, the limit of the
  bootstrap over images (:func:`binomial_se`).
"""
import contextlib
import copy
import io
import json
import math
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["CocoResampler", "binomial_se", "bootstrap_se", "miou", "semseg_confusions"]

DEFAULT_REPS = 200


def bootstrap_se(statistic: Callable[[np.ndarray], float], num_items: int,
                 reps: int = DEFAULT_REPS, seed: int = 0) -> float:
    """Standard deviation of ``statistic(indices)`` over ``reps`` resamples (with replacement) of
    ``num_items`` item indices."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, num_items, num_items)) for _ in range(reps)]
    return float(np.std(values, ddof=1))


class CocoResampler:
    """
    AP (percent, IoU .50:.95, all areas, 100 detections: COCO's headline number, as detectron2's
    COCOEvaluator reports it) of one result file on any multiset of the ground truth's images.

    Args:
        gt_json: the COCO ground-truth file of the test split.
        results_json: detection results in COCO's format (detectron2 writes
            ``inference/coco_instances_results.json``).
        iou_type: "bbox" or "segm".
    """

    def __init__(self, gt_json: str, results_json: str, iou_type: str = "bbox"):
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(gt_json)
            with open(results_json) as f:
                results = json.load(f)
            if iou_type == "bbox":
                results = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
            dt = gt.loadRes(results) if results else COCO()
            self._eval = COCOeval(gt, dt, iou_type)
            self._eval.evaluate()
        self.img_ids = list(self._eval._paramsEval.imgIds)

    @property
    def num_images(self) -> int:
        return len(self.img_ids)

    def ap(self, positions: Optional[Sequence[int]] = None) -> float:
        """AP on the images at ``positions`` of ``img_ids`` (repeats count again); all images
        when None."""
        evaluated = self._eval
        params = evaluated._paramsEval
        positions = list(range(self.num_images)) if positions is None else list(positions)
        n_img, n_area = len(params.imgIds), len(params.areaRng)
        clone = copy.copy(evaluated)
        clone.evalImgs = [evaluated.evalImgs[(k * n_area + a) * n_img + i]
                          for k in range(len(params.catIds)) for a in range(n_area)
                          for i in positions]
        resampled = copy.copy(params)
        resampled.imgIds = [self.img_ids[i] for i in positions]
        clone.params = clone._paramsEval = resampled
        with contextlib.redirect_stdout(io.StringIO()):
            clone.accumulate()
        # precision: [iou thresholds, recall points, categories, areas, max detections]
        precision = clone.eval["precision"][:, :, :, 0, -1]
        valid = precision[precision > -1]
        return float(100 * valid.mean()) if valid.size else 0.0


def semseg_confusions(predictions_json: str, label_files: Dict[str, str], num_classes: int,
                      ignore_value: int = 255) -> Dict[str, np.ndarray]:
    """
    Per-image (num_classes, num_classes) confusion matrices [ground truth, prediction] of
    detectron2's ``sem_seg_predictions.json`` (one RLE per image and predicted class) against
    the label maps (``label_files``: image file name -> label map file).
    """
    from PIL import Image
    from pycocotools import mask as mask_util

    with open(predictions_json) as f:
        entries = json.load(f)
    by_image: Dict[str, list] = {}
    for entry in entries:
        by_image.setdefault(entry["file_name"], []).append(entry)
    out = {}
    for file_name, label_file in label_files.items():
        gt = np.asarray(Image.open(label_file), dtype=np.int64)
        pred = np.zeros_like(gt)
        for entry in by_image.get(file_name, []):
            rle = dict(entry["segmentation"])
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode()
            pred[mask_util.decode(rle).astype(bool)] = entry["category_id"]
        keep = gt != ignore_value
        out[file_name] = np.bincount(num_classes * gt[keep] + pred[keep],
                                     minlength=num_classes ** 2).reshape(num_classes, num_classes)
    return out


def miou(confusion: np.ndarray, classes: Sequence[int]) -> float:
    """Mean IoU (percent) over ``classes`` of a [ground truth, prediction] confusion matrix, each
    class counted where it occurs in the ground truth or the prediction (as SemSegEvaluator)."""
    ious: List[float] = []
    for c in classes:
        tp = confusion[c, c]
        union = confusion[c, :].sum() + confusion[:, c].sum() - tp
        if union > 0:
            ious.append(tp / union)
    return float(100 * np.mean(ious)) if ious else 0.0


def binomial_se(top1_percent: float, num_images: int) -> float:
    """Standard error (points) of a top-1 accuracy measured on ``num_images`` images."""
    p = top1_percent / 100
    return 100 * math.sqrt(max(p * (1 - p), 0.0) / max(num_images, 1))
