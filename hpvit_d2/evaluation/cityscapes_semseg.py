"""
Official Cityscapes semantic segmentation IoU (cityscapesscripts) through detectron2's
``CityscapesSemSegEvaluator``, fixed as the instance evaluator is (see ``cityscapes.py``).
"""
import contextlib
import glob
import logging
import os
from collections import OrderedDict
from typing import Optional

from detectron2.evaluation import CityscapesSemSegEvaluator as _D2CityscapesSemSegEvaluator
from detectron2.utils import comm

from .cityscapes import KeptPredictionsMixin, ground_truth_file

__all__ = ["CityscapesSemSegEvaluator"]

logger = logging.getLogger(__name__)

_GT_LABELS = "gtFine_labelIds.png"
_GT_INSTANCES = "gtFine_instanceIds.png"  # read for the instance-level iIoU


class CityscapesSemSegEvaluator(KeptPredictionsMixin, _D2CityscapesSemSegEvaluator):
    """
    detectron2's evaluator (predictions, in train ids, written as label-id PNGs and scored by
    cityscapesscripts' ``evalPixelLevelSemanticLabeling``), with these changes:

    - results under ``result_key`` (default ``"cityscapes_sem_seg"``) instead of ``"sem_seg"``,
      which is ``SemSegEvaluator``'s key: ``DatasetEvaluators`` refuses two evaluators with the
      same key, and both run on the same predictions in the Cityscapes configs;
    - only the images that were processed are scored (detectron2 globs every ground-truth file of
      ``gt_dir``, and cityscapesscripts ends the process with ``sys.exit`` on any image without a
      prediction); a warning says when that is fewer than the whole split;
    - ``output_dir`` keeps the prediction PNGs (``{output_dir}/cityscapes_sem_seg``, the format
      of the benchmark server) instead of a deleted temporary directory;
    - cityscapesscripts runs quietly (no confusion matrix on stdout, no JSON written next to the
      dataset), and per-class IoU (``IoU-road``...) comes with the averages, all in percent;
    - missing ``gtFine_labelIds.png`` / ``gtFine_instanceIds.png`` are named; numpy >= 2 is
      refused with the fix (cityscapesscripts 2.3.0 fails on it).

    Like detectron2's, it works in single-machine multi-process runs, not across machines.
    """

    _prediction_subdir = "cityscapes_sem_seg"

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None,
                 result_key: str = "cityscapes_sem_seg"):
        """
        Args:
            dataset_name: a registered Cityscapes semantic dataset (metadata ``gt_dir``), e.g.
                ``cityscapes_fine_sem_seg_val``.
            output_dir: where to keep the prediction files; None: a temporary directory.
            result_key: the key of the results in the dict ``evaluate`` returns.
        """
        super().__init__(dataset_name, output_dir, result_key)

    def evaluate(self):
        """
        Returns:
            ``{result_key: {"IoU", "iIoU", "IoU_sup", "iIoU_sup", "IoU-{class}"...}}`` in percent
            on the main process (``_sup``: the 7 categories), None on the others, ``{}`` when no
            image was processed.
        """
        comm.synchronize()
        file_names = sorted(set(sum(comm.gather(self._file_names, dst=0), [])))
        if not comm.is_main_process():
            return None
        if not file_names:
            logger.warning("CityscapesSemSegEvaluator: no image was processed; nothing to evaluate.")
            return {}
        import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs_eval

        gt_dir = os.path.abspath(self._metadata.gt_dir)  # cityscapesscripts runs in another cwd
        gt_files = [ground_truth_file(f, gt_dir, _GT_LABELS) for f in file_names]
        missing = [f for g in gt_files for f in (g, g.replace(_GT_LABELS, _GT_INSTANCES))
                   if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(
                f"Cityscapes ground truth missing for {len(missing)} file(s), e.g. {missing[0]}: "
                f"the official evaluation of '{self._metadata.name}' reads {_GT_LABELS} and "
                f"{_GT_INSTANCES} of every image in {gt_dir}.")
        total = len(glob.glob(os.path.join(gt_dir, "*", f"*_{_GT_LABELS}")))
        if len(gt_files) < total:
            logger.warning(f"Cityscapes IoU on {len(gt_files)} of the {total} images in {gt_dir}: "
                           "not the official number for the split.")

        args = cs_eval.args
        args.predictionPath = os.path.abspath(self._temp_dir)
        args.predictionWalk = None
        args.JSONOutput = False
        args.colorized = False
        args.quiet = True
        logger.info(f"Evaluating {len(gt_files)} images with cityscapesscripts in "
                    f"{args.predictionPath} ...")
        with contextlib.chdir(args.predictionPath):
            predictions = [cs_eval.getPrediction(args, gt) for gt in gt_files]
            results = cs_eval.evaluateImgLists(predictions, gt_files, args)
        metrics = OrderedDict(
            IoU=100.0 * results["averageScoreClasses"],
            iIoU=100.0 * results["averageScoreInstClasses"],
            IoU_sup=100.0 * results["averageScoreCategories"],
            iIoU_sup=100.0 * results["averageScoreInstCategories"],
        )
        for name, score in results["classScores"].items():
            metrics[f"IoU-{name}"] = 100.0 * score
        if self._working_dir is not None:
            self._working_dir.cleanup()
        return {self._result_key: metrics}
