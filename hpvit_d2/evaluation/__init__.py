"""Evaluation wiring: detectron2's evaluators, with the fixes Cityscapes needs (see cityscapes.py,
cityscapes_semseg.py)."""

from .cityscapes import CityscapesInstanceEvaluator
from .cityscapes_semseg import CityscapesSemSegEvaluator

__all__ = ["CityscapesInstanceEvaluator", "CityscapesSemSegEvaluator"]
