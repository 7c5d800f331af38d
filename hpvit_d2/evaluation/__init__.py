"""Evaluation wiring: detectron2's evaluators, with the fixes Cityscapes needs (see cityscapes.py)."""

from .cityscapes import CityscapesInstanceEvaluator

__all__ = ["CityscapesInstanceEvaluator"]
