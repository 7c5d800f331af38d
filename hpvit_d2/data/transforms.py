"""
Augmentations that never make an empty image.

detectron2's resizes round the new size to whole pixels: ``ResizeShortestEdge(256, max_size=256)``
turns a 1x2000 image into 0x256 and PIL fails with ``height and width must be > 0``. Training
never sees such an image (it is below ``MIN_IMAGE_SIZE``, dropped at load), but evaluation keeps
every image and the demo takes any file. :func:`non_empty` wraps augmentations so that a resize
keeps at least one pixel per side (1x2000 -> 1x256); boxes and masks follow the transform as
usual, and the model's output is scaled back to the original size. Used by ``SafeDatasetMapper``
(training and evaluation), ``LazyPredictor`` (demo) and the export sample: one policy.
"""
import copy
import inspect
from typing import List, Sequence

from detectron2.data import transforms as T
from fvcore.transforms.transform import Transform, TransformList

__all__ = ["NonEmptyAugmentation", "non_empty"]


def _non_empty_transform(transform: Transform) -> Transform:
    """``transform`` with any resize to a side of 0 pixels changed to 1 pixel."""
    if isinstance(transform, TransformList):
        return TransformList([_non_empty_transform(t) for t in transform.transforms])
    if isinstance(transform, T.ResizeTransform) and min(transform.new_h, transform.new_w) < 1:
        return T.ResizeTransform(transform.h, transform.w, max(1, int(transform.new_h)),
                                 max(1, int(transform.new_w)), transform.interp)
    return transform


class NonEmptyAugmentation(T.Augmentation):
    """An augmentation whose resizes keep at least one pixel per side; otherwise the same."""

    def __init__(self, augmentation: T.Augmentation):
        super().__init__()
        self.augmentation = augmentation
        names = getattr(augmentation, "input_args", None)
        if names is None:  # detectron2 reads them from get_transform's signature
            names = tuple(inspect.signature(augmentation.get_transform).parameters)
        self.input_args = tuple(names)

    def get_transform(self, *args) -> Transform:
        return _non_empty_transform(self.augmentation.get_transform(*args))

    def __repr__(self) -> str:
        return repr(self.augmentation)

    __str__ = __repr__  # Augmentation binds __str__ to its own __repr__


def _non_empty_augmentation(augmentation):
    """One augmentation made non-empty. Those that override ``__call__`` (``RandomApply``,
    ``AugmentationList``) do not go through ``get_transform``: the ones they hold are wrapped
    instead, in a copy."""
    if isinstance(augmentation, NonEmptyAugmentation) or not isinstance(augmentation, T.Augmentation):
        return augmentation
    if type(augmentation).__call__ is T.Augmentation.__call__:
        return NonEmptyAugmentation(augmentation)
    augmentation = copy.copy(augmentation)
    if isinstance(getattr(augmentation, "aug", None), T.Augmentation):  # RandomApply
        augmentation.aug = _non_empty_augmentation(augmentation.aug)
    if isinstance(getattr(augmentation, "augs", None), (list, tuple)):  # AugmentationList
        augmentation.augs = non_empty(augmentation.augs)
    return augmentation


def non_empty(augmentations: Sequence) -> List:
    """``augmentations`` (Augmentation or Transform objects) with every Augmentation wrapped in
    :class:`NonEmptyAugmentation` (idempotent), also inside ``RandomApply`` and
    ``AugmentationList``."""
    return [_non_empty_augmentation(a) for a in augmentations]
