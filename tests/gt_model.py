"""A model that returns each image's ground truth as its predictions, for evaluator tests."""

from typing import Dict, List

import numpy as np
import pycocotools.mask as mask_util
import torch
from torch import nn

from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.structures.masks import polygons_to_bitmask


def _mask(segmentation, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):
        return polygons_to_bitmask(segmentation, height, width)
    if isinstance(segmentation["counts"], list):
        segmentation = mask_util.frPyObjects(segmentation, height, width)
    return mask_util.decode(segmentation).astype(bool)


def _shift(mask: np.ndarray, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    if dx >= 0:
        out[:, dx:] = mask[:, : mask.shape[1] - dx]
    else:
        out[:, :dx] = mask[:, -dx:]
    return out


class GroundTruthModel(nn.Module):
    """
    ``forward(list of input dicts) -> [{"instances": Instances}]`` at each image's original size,
    found by ``file_name`` among ``dataset_dicts``; crowd regions are not predicted.

    Args:
        dataset_dicts: detectron2 dataset dicts with ``annotations`` (polygons or RLE).
        shift: move every box and mask right by this fraction of its box width.
        drop_first: leave out the first instance of every image.
        empty: predict nothing.
    """

    def __init__(
        self,
        dataset_dicts: List[Dict],
        shift: float = 0.0,
        drop_first: bool = False,
        empty: bool = False,
    ):
        super().__init__()
        self._by_file = {d["file_name"]: d for d in dataset_dicts}
        self.shift, self.drop_first, self.empty = shift, drop_first, empty

    def _instances(self, record: Dict) -> Instances:
        height, width = record["height"], record["width"]
        annotations = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
        if self.drop_first:
            annotations = annotations[1:]
        if self.empty:
            annotations = []
        boxes, masks = [], []
        for a in annotations:
            box = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
            mask = _mask(a["segmentation"], height, width)
            dx = int(round(self.shift * (box[2] - box[0])))
            boxes.append([box[0] + dx, box[1], min(box[2] + dx, width), box[3]])
            masks.append(_shift(mask, dx) if dx else mask)
        n = len(annotations)
        instances = Instances((height, width))
        instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(n, 4))
        instances.scores = torch.linspace(1.0, 0.5, n) if n else torch.zeros(0)
        instances.pred_classes = torch.tensor(
            [a["category_id"] for a in annotations], dtype=torch.int64
        )
        instances.pred_masks = (
            torch.from_numpy(np.stack(masks))
            if n
            else torch.zeros((0, height, width), dtype=torch.bool)
        )
        return instances

    def forward(self, inputs: List[Dict]) -> List[Dict]:
        return [{"instances": self._instances(self._by_file[x["file_name"]])} for x in inputs]


def evaluate_ground_truth(cfg, dataset_dicts: List[dict], **perturbation) -> dict:
    """Run ``cfg.dataloader.evaluator`` on ``cfg.dataloader.test`` with GroundTruthModel(**perturbation)."""
    from detectron2.config import instantiate
    from detectron2.evaluation import inference_on_dataset

    return inference_on_dataset(
        GroundTruthModel(dataset_dicts, **perturbation),
        instantiate(cfg.dataloader.test),
        instantiate(cfg.dataloader.evaluator),
    )


def eval_config(path: str, dataset: str, output_dir):
    """The LazyConfig at ``path`` (relative to the repo), evaluating ``dataset`` into ``output_dir``."""
    import os

    from detectron2.config import LazyConfig

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = LazyConfig.load(os.path.join(repo, path))
    cfg.dataloader.test.dataset.names = dataset
    cfg.dataloader.test.num_workers = 0
    cfg.train.output_dir = str(output_dir)
    return cfg
