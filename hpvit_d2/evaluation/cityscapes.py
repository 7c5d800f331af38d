"""
Official Cityscapes instance-segmentation AP (cityscapesscripts) through detectron2's
``CityscapesInstanceEvaluator``, fixed so that it runs beside ``COCOEvaluator`` in one
``DatasetEvaluators`` and inside a training job.
"""

import contextlib
import glob
import logging
import os
import shutil
from collections import OrderedDict
from importlib.metadata import PackageNotFoundError, version
from typing import List, Optional

import numpy as np
from detectron2.evaluation import CityscapesInstanceEvaluator as _D2CityscapesInstanceEvaluator
from detectron2.utils import comm
from packaging.version import Version

__all__ = ["CityscapesInstanceEvaluator", "ground_truth_file"]

logger = logging.getLogger(__name__)


def ground_truth_file(image_file: str, gt_dir: str, kind: str = "gtFine_instanceIds.png") -> str:
    """``.../leftImg8bit/{split}/{city}/X_leftImg8bit.png`` -> ``{gt_dir}/{city}/X_{kind}``."""
    city = os.path.basename(os.path.dirname(image_file))
    name = os.path.basename(image_file)
    suffix = "leftImg8bit.png"
    if not name.endswith(suffix):
        raise ValueError(f"{image_file}: a Cityscapes image name ends with '_{suffix}'.")
    return os.path.join(gt_dir, city, name[: -len(suffix)] + kind)


def _check_numpy() -> None:
    try:
        scripts = Version(version("cityscapesScripts"))
    except PackageNotFoundError as e:
        raise ImportError(
            "The official Cityscapes evaluation needs cityscapesscripts: pip install 'cityscapesscripts>=2.2'."
        ) from e
    if Version(np.__version__).major >= 2 and scripts <= Version("2.3.0"):
        raise RuntimeError(
            f"cityscapesscripts {scripts} fails on numpy {np.__version__} (np.in1d removed, JSON "
            "cache of numpy ints). Install numpy<2 (requirements.txt pins it): pip install 'numpy<2'."
        )


class KeptPredictionsMixin:
    """
    What both Cityscapes evaluators change in detectron2's: results under ``result_key``,
    prediction files kept in ``{output_dir}/{_prediction_subdir}`` when ``output_dir`` is given
    (else detectron2's temporary directory), and the names of the processed images remembered so
    that only those are scored. Put it before detectron2's evaluator in the bases.
    """

    _prediction_subdir = "cityscapes"

    def __init__(self, dataset_name: str, output_dir: Optional[str], result_key: str):
        _check_numpy()
        super().__init__(dataset_name)
        self._output_dir = output_dir
        self._result_key = result_key
        self._file_names: List[str] = []

    def reset(self):
        self._file_names = []
        if self._output_dir is None:
            super().reset()
            return
        self._working_dir = None
        self._temp_dir = os.path.join(self._output_dir, self._prediction_subdir)
        if comm.is_main_process():
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            os.makedirs(self._temp_dir)
        comm.synchronize()

    def process(self, inputs, outputs):
        super().process(inputs, outputs)
        self._file_names.extend(x["file_name"] for x in inputs)


class CityscapesInstanceEvaluator(KeptPredictionsMixin, _D2CityscapesInstanceEvaluator):
    """
    detectron2's evaluator (predictions written as the official txt + png files, scored by
    cityscapesscripts' ``evalInstanceLevelSemanticLabeling``), with these changes:

    - results under ``result_key`` (default ``"cityscapes"``) instead of ``"segm"``, which is
      ``COCOEvaluator``'s key: ``DatasetEvaluators`` refuses two evaluators with the same key;
    - only the images that were processed are scored (detectron2 globs every ground-truth file of
      ``gt_dir``, and cityscapesscripts ends the process with ``sys.exit`` on any image without a
      prediction); a warning says when that is fewer than the whole split;
    - cityscapesscripts' ``matches.json`` goes to the prediction directory, not the working
      directory of the process;
    - ``output_dir`` keeps the prediction files (``{output_dir}/cityscapes_instances``, the
      results format of the benchmark server) instead of a deleted temporary directory;
    - per-class AP (``AP-person``...; NaN for a class with no ground truth in the images scored)
      next to ``AP`` and ``AP50``, all in percent;
    - a clear error when numpy is too new for cityscapesscripts.

    Like detectron2's, it works in single-machine multi-process runs, not across machines.
    """

    _prediction_subdir = "cityscapes_instances"

    def __init__(
        self, dataset_name: str, output_dir: Optional[str] = None, result_key: str = "cityscapes"
    ):
        """
        Args:
            dataset_name: a registered Cityscapes instance dataset (metadata ``gt_dir`` and
                ``thing_classes``), e.g. ``cityscapes_fine_instance_seg_val``.
            output_dir: where to keep the prediction files; None: a temporary directory.
            result_key: the key of the results in the dict ``evaluate`` returns.
        """
        super().__init__(dataset_name, output_dir, result_key)

    def evaluate(self):
        """
        Returns:
            ``{result_key: {"AP": ..., "AP50": ..., "AP-{class}": ...}}`` in percent on the main
            process, None on the others, ``{}`` when no image was processed.
        """
        comm.synchronize()
        file_names = sorted(set(sum(comm.gather(self._file_names, dst=0), [])))
        if not comm.is_main_process():
            return None
        if not file_names:
            logger.warning(
                "CityscapesInstanceEvaluator: no image was processed; nothing to evaluate."
            )
            return {}
        import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as cs_eval

        gt_dir = os.path.abspath(self._metadata.gt_dir)  # cityscapesscripts runs in another cwd
        gt_files = [ground_truth_file(f, gt_dir) for f in file_names]
        missing = [f for f in gt_files if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(
                f"Cityscapes ground truth missing for {len(missing)} image(s), e.g. {missing[0]}: "
                f"every image of '{self._metadata.name}' needs its gtFine_instanceIds.png in {gt_dir}."
            )
        total = len(glob.glob(os.path.join(gt_dir, "*", "*_gtFine_instanceIds.png")))
        if len(gt_files) < total:
            logger.warning(
                f"Cityscapes AP on {len(gt_files)} of the {total} images in {gt_dir}: "
                "not the official number for the split."
            )

        args = cs_eval.args
        args.predictionPath = os.path.abspath(self._temp_dir)
        args.predictionWalk = None
        args.JSONOutput = False
        args.colorized = False
        args.gtInstancesFile = os.path.join(args.predictionPath, "gtInstances.json")
        logger.info(
            f"Evaluating {len(gt_files)} images with cityscapesscripts in {args.predictionPath} ..."
        )
        with contextlib.chdir(args.predictionPath):
            predictions = [cs_eval.getPrediction(gt, args) for gt in gt_files]
            averages = cs_eval.evaluateImgLists(predictions, gt_files, args)["averages"]

        metrics = OrderedDict(AP=100.0 * averages["allAp"], AP50=100.0 * averages["allAp50%"])
        for label, values in averages["classes"].items():
            metrics[f"AP-{label}"] = 100.0 * values["ap"]
        if self._working_dir is not None:
            self._working_dir.cleanup()
        return {self._result_key: metrics}
