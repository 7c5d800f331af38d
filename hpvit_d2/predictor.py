"""
One image in, the model's prediction out: detectron2's ``DefaultPredictor`` for LazyConfig models.

A detector (Mask R-CNN...) gives ``Instances``; a semantic segmentor (detectron2's
``SemanticSegmentor``, e.g. the UperNet configs) gives its (num_classes, H, W) scores, whose
``argmax(0)`` is the (H, W) label map. Both are in the input image's coordinates, on the CPU.

Pre-processing is read from the config, as the test data loader would apply it:
``dataloader.test.mapper.augmentations`` (e.g. ``ResizeShortestEdge``) and
``dataloader.test.mapper.image_format`` ("RGB" for this project's configs, or "BGR").
"""
import copy
import logging
import os
from contextlib import nullcontext
from typing import Optional, Union

import numpy as np
import torch
import torch.nn as nn
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import SemanticSegmentor
from detectron2.structures import Boxes, Instances

from .checkpoint.checkpointer import unwrap_parallel
from .data.images import read_image_checked
from .data.transforms import non_empty
from .model_zoo import build_model
from .modeling import HPViT, optimize_for_cpu_inference

__all__ = ["LazyPredictor"]

logger = logging.getLogger(__name__)

_FORMATS = ("RGB", "BGR")


def _select(cfg, dotted: str):
    """``cfg[a][b]...`` for ``dotted="a.b..."``, with a KeyError naming the missing config key."""
    node = cfg
    for part in dotted.split("."):
        if part not in node:
            raise KeyError(f"the config has no {dotted} (missing {part!r}): LazyPredictor reads "
                           "test-time pre-processing from dataloader.test.mapper")
        node = node[part]
    return node


def _test_dataset_name(cfg) -> Optional[str]:
    names = cfg.get("dataloader", {}).get("test", {}).get("dataset", {}).get("names")
    if isinstance(names, str):
        return names
    return names[0] if names else None


def _to_float32(instances: Union[Instances, torch.Tensor]) -> Union[Instances, torch.Tensor]:
    """Half-precision fields (from autocast) as float32, so callers see one dtype."""
    if isinstance(instances, torch.Tensor):
        return instances.float()
    for name, value in instances.get_fields().items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            instances.set(name, value.float())
        elif isinstance(value, Boxes):
            instances.set(name, Boxes(value.tensor.float()))
    return instances


class LazyPredictor:
    """
    Run a LazyConfig detector or semantic segmentor on single images (BGR uint8 arrays, as
    ``cv2.imread`` returns, or image files).

    ``LazyPredictor(cfg)`` builds ``cfg.model`` on ``cfg.train.device`` and loads
    ``cfg.train.init_checkpoint`` strictly (printing the load report); ``LazyPredictor(cfg, model=m)``
    runs a model you already have, on its own device. Inference runs under
    ``torch.inference_mode``; on CUDA, with ``amp`` (default: ``cfg.train.amp.enabled``), under
    autocast in ``amp_dtype``. It changes no process-wide state.

    Attributes:
        model (nn.Module): the detector or segmentor it runs, in eval mode: the one it built, a
            CPU-tuned copy of yours, or yours.
        task (str): "sem_seg" for a ``SemanticSegmentor`` (calls return scores), else
            "instances" (calls return ``Instances``).
        metadata (Metadata or None): metadata of the config's test dataset (class names).
        augmentations (list[Augmentation]): test-time transforms from the config.
        input_format (str): "RGB" or "BGR", the channel order the model expects.
    """

    def __init__(self, cfg, model: Optional[nn.Module] = None, amp: Optional[bool] = None,
                 amp_dtype: torch.dtype = torch.float16, strict: bool = True,
                 optimize: bool = True):
        """
        Args:
            cfg: a LazyConfig (``omegaconf.DictConfig``) with ``dataloader.test.mapper``.
            model (nn.Module or None): the detector; None builds it from ``cfg`` and loads
                ``cfg.train.init_checkpoint``, strictly unless ``strict=False`` (see
                ``hpvit_d2.model_zoo.build_model``).
            amp (bool or None): mixed precision on CUDA; None takes ``cfg.train.amp.enabled``.
            amp_dtype (torch.dtype): autocast dtype, torch.float16 or torch.bfloat16.
            optimize (bool): on the CPU, run an HPViT model through
                ``hpvit_d2.modeling.optimize_for_cpu_inference`` (blocks banded in place, one
                projection kernel for all; the same predictions to float rounding). It tunes the
                predictor's own model: the one it builds, or a copy of ``model``, which stays as
                it is. False runs ``model`` itself (set to eval mode), with no copy. The allocator
                is not touched (``hpvit_d2.cpu_memory.retain_freed_cpu_memory`` is the caller's
                call: it changes the whole process).
        """
        self.cfg = cfg
        self.augmentations = T.AugmentationList(  # resizes keep >= 1 px: data.transforms
            non_empty(instantiate(_select(cfg, "dataloader.test.mapper.augmentations")))
        )
        self.input_format = _select(cfg, "dataloader.test.mapper.image_format")
        if self.input_format not in _FORMATS:
            raise ValueError(f"dataloader.test.mapper.image_format={self.input_format!r}: "
                             f"LazyPredictor supports {_FORMATS}")
        train = cfg.get("train", {})
        owned = model is None
        if owned:
            model = build_model(cfg, weights=train.get("init_checkpoint") or None,
                                device=train.get("device", "cpu"), strict=strict)
        tune = (optimize and next(model.parameters()).device.type == "cpu"
                and any(isinstance(m, HPViT) for m in model.modules()))
        if tune and not owned:
            model = copy.deepcopy(model)
        self.model = model.eval()
        if tune:
            optimize_for_cpu_inference(model)
        self.task = "sem_seg" if isinstance(unwrap_parallel(model), SemanticSegmentor) else "instances"
        model_format = getattr(model, "input_format", self.input_format)
        if model_format != self.input_format:
            logger.warning("dataloader.test.mapper.image_format=%s but model.input_format=%s: "
                           "images are fed as %s", self.input_format, model_format,
                           self.input_format)
        name = _test_dataset_name(cfg)
        self.metadata = MetadataCatalog.get(name) if name else None
        if amp is None:
            amp = bool(train.get("amp", {}).get("enabled", False))
        if amp_dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"amp_dtype={amp_dtype}: use torch.float16 or torch.bfloat16")
        self.amp = amp
        self.amp_dtype = amp_dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _autocast(self):
        if self.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return nullcontext()

    def __call__(self, original_image: Union[np.ndarray, str, os.PathLike]
                 ) -> Union[Instances, torch.Tensor]:
        """
        Args:
            original_image (np.ndarray or path): (H, W, 3) uint8, BGR channel order; or an image
                file, read by the project's reader (``hpvit_d2.data.images.read_image_checked``,
                as training, evaluation and the demo read files: 16-bit and alpha converted,
                EXIF orientation applied, float images and images above the pixel cap refused
                with ``BadImageError``).
        Returns:
            On the CPU, in the coordinates of ``original_image`` (H, W):

            - a detector: ``Instances`` (image_size (H, W)): ``pred_boxes`` (N, 4) XYXY,
              ``scores`` (N,), ``pred_classes`` (N,) and, for Mask R-CNN, ``pred_masks``
              (N, H, W) bool;
            - a semantic segmentor (``self.task == "sem_seg"``): float32 scores
              (num_classes, H, W), the model's ``sem_seg`` output; ``.argmax(0)`` is the (H, W)
              label map (class indices of ``self.metadata.stuff_classes``).
        """
        if isinstance(original_image, (str, os.PathLike)):
            original_image = read_image_checked(os.fspath(original_image), format="BGR")
        if not (isinstance(original_image, np.ndarray) and original_image.ndim == 3
                and original_image.shape[2] == 3 and original_image.dtype == np.uint8):
            desc = (f"{original_image.dtype} array of shape {original_image.shape}"
                    if isinstance(original_image, np.ndarray) else type(original_image).__name__)
            raise ValueError(f"original_image: expected an (H, W, 3) uint8 BGR array, got {desc}")
        height, width = original_image.shape[:2]
        image = original_image[:, :, ::-1] if self.input_format == "RGB" else original_image
        aug_input = T.AugInput(np.ascontiguousarray(image))
        self.augmentations(aug_input)
        tensor = torch.as_tensor(aug_input.image.astype("float32").transpose(2, 0, 1))
        inputs = {"image": tensor.to(self.device), "height": height, "width": width}
        with torch.inference_mode(), self._autocast():
            outputs = self.model([inputs])[0]
        key = "instances" if "instances" in outputs else "sem_seg"
        return _to_float32(outputs[key].to("cpu"))
