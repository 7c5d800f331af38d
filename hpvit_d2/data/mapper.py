"""
``SafeDatasetMapper``: detectron2's ``DatasetMapper`` (same constructor, same output) whose image
file is read by :func:`hpvit_d2.data.images.read_image_checked`: unusual formats are converted
(and counted in ``mapper.counts``), a bad file raises ``BadImageError`` naming it, and an image
whose size differs from its dict's ``height``/``width`` raises ``ImageSizeMismatchError`` naming the
file, both sizes and what to fix (with the EXIF orientation when that explains it).

A semantic label map (``sem_seg_file_name``) is read by
:func:`hpvit_d2.data.labels.read_label_checked`: a file of another size than its image, or with
values that are neither classes nor the ignore value (``sem_seg_num_classes``,
``sem_seg_ignore_value``), raises ``BadLabelError`` naming it. That is where label contents are
checked, for training and evaluation alike (see ``hpvit_d2.data.labels`` for why not at load).

Its augmentations are wrapped by :func:`hpvit_d2.data.transforms.non_empty`: a resize never
makes an empty image (a 1x2000 image kept for evaluation is resized to 1x256, not 0x256).

Annotations with RLE masks (COCO's crowd format, also allowed for ordinary objects) are mapped
as bitmasks when the mapper's ``instance_mask_format`` is "polygon", image by image, and counted:
detectron2 alone stops in a loader worker on them.

The mapper checks nothing else: annotations are cleaned, and too small or empty training images
dropped, once at load time by ``hpvit_d2.data.build.get_dataset_dicts``.
"""
import contextlib
import logging
import threading
from collections import Counter
from typing import Iterator, Optional, Tuple

import numpy as np
from detectron2.data import DatasetMapper
from detectron2.data import dataset_mapper as d2_dataset_mapper
from detectron2.data import detection_utils
from detectron2.data import transforms as T
from detectron2.utils.logger import log_every_n_seconds

from .images import (
    CONVERSION_LABELS,
    BadImageError,
    SIDE_SWAPPING_ORIENTATIONS,
    read_exif_orientation,
    read_image_checked,
)
from .labels import read_label_checked
from .transforms import non_empty

__all__ = ["ImageSizeMismatchError", "MAPPER_COUNT_LABELS", "SafeDatasetMapper"]

logger = logging.getLogger(__name__)

MAPPER_COUNT_LABELS = {
    "masks_as_bitmasks": "images with RLE masks mapped as bitmasks (instance_mask_format=polygon)",
}
"""What the mapper counts besides the reader's conversions (``CONVERSION_LABELS``)."""

# One mapper call at a time may swap detectron2's module attribute (threads share modules;
# data-loader workers are processes and each has its own lock).
_READER_LOCK = threading.RLock()


class _CheckedReaderUtils:
    """
    Stands in for ``detectron2.data.detection_utils`` inside ``DatasetMapper.__call__``: the image
    file ``image_file`` is read by ``read_image_checked``, the label map ``label_file`` (if any)
    by ``read_label_checked`` (against the image's size, ``num_classes`` and ``ignore_value``);
    every other attribute, and any other file, is detectron2's.

    Attributes:
        image_shape: (H, W) of the image file as read, None until it is read.
    """

    def __init__(self, image_file: str, counts: Counter, label_file: Optional[str] = None,
                 num_classes: Optional[int] = None, ignore_value: int = 255):
        self._image_file = image_file
        self._counts = counts
        self._label_file = label_file
        self._num_classes = num_classes
        self._ignore_value = ignore_value
        self.image_shape: Optional[Tuple[int, int]] = None

    def read_image(self, file_name: str, format: Optional[str] = None) -> np.ndarray:
        if file_name == self._label_file and file_name != self._image_file:
            label = read_label_checked(file_name, self.image_shape, self._num_classes,
                                       self._ignore_value)
            return label[:, :, None]  # (H, W, 1), as read_image(..., "L") returns
        if file_name != self._image_file:
            return detection_utils.read_image(file_name, format)
        image = read_image_checked(file_name, format, self._counts)
        self.image_shape = image.shape[:2]
        return image

    def __getattr__(self, name: str):
        return getattr(detection_utils, name)


@contextlib.contextmanager
def _checked_reading(image_file: str, counts: Counter,
                     **label_check) -> Iterator[_CheckedReaderUtils]:
    """Within the block, ``DatasetMapper.__call__`` reads ``image_file`` (and the label map of
    ``label_check``: label_file, num_classes, ignore_value) with the checked readers."""
    reader = _CheckedReaderUtils(image_file, counts, **label_check)
    with _READER_LOCK:
        original = d2_dataset_mapper.utils
        # __call__ reads through this module global, out of reach of overrides: swap, not copy.
        d2_dataset_mapper.utils = reader
        try:
            yield reader
        finally:
            d2_dataset_mapper.utils = original


class ImageSizeMismatchError(BadImageError, detection_utils.SizeMismatchError):
    """An image whose decoded size is not its dataset dict's; both a ``BadImageError`` (a user
    error, one line) and detectron2's ``SizeMismatchError``."""


def _size_mismatch_message(dataset_dict: dict, image_shape: Tuple[int, int]) -> str:
    """The error of an image read as (H, W) ``image_shape`` whose dict says another size."""
    file_name = dataset_dict["file_name"]
    got_h, got_w = image_shape
    want_w, want_h = dataset_dict.get("width"), dataset_dict.get("height")
    message = (f"image size mismatch: '{file_name}' (image_id {dataset_dict.get('image_id')}) "
               f"is {got_w}x{got_h} (width x height) as read, its dataset dict says "
               f"width={want_w}, height={want_h}. Fix them, or replace the file with the "
               "annotated image.")
    if (got_w, got_h) == (want_h, want_w):
        orientation = read_exif_orientation(file_name)
        if orientation in SIDE_SWAPPING_ORIENTATIONS:
            message += (f" Its EXIF orientation {orientation} turns it by 90 degrees when read: "
                        "annotate the upright image.")
    return message


class SafeDatasetMapper(DatasetMapper):
    """
    ``DatasetMapper`` that reads the image with ``read_image_checked`` and names the file on a
    size mismatch; for ordinary images its output equals ``DatasetMapper``'s.

    Attributes:
        counts (Counter): conversions done by this mapper instance (per data-loader worker), keys
            of ``hpvit_d2.data.images.CONVERSION_LABELS`` and ``MAPPER_COUNT_LABELS``.
    """

    def __init__(self, *args, sem_seg_num_classes: Optional[int] = None,
                 sem_seg_ignore_value: int = 255, **kwargs):
        """
        Args:
            args, kwargs: those of detectron2's ``DatasetMapper`` (or a yacs cfg and is_train).
            sem_seg_num_classes (int or None): classes of the semantic label maps; their values
                must be below it or ``sem_seg_ignore_value``. None: values are not checked
                (sizes still are). Configs: ``"${model.sem_seg_head.num_classes}"``.
            sem_seg_ignore_value (int): the label value that is not a class (255).
        """
        super().__init__(*args, **kwargs)
        # a resize keeps >= 1 px per side (a 1x2000 image kept for evaluation): data.transforms
        self.augmentations = T.AugmentationList(non_empty(self.augmentations.augs))
        self.counts: Counter = Counter()
        self.sem_seg_num_classes = sem_seg_num_classes
        self.sem_seg_ignore_value = sem_seg_ignore_value

    def _note(self, before: Counter, file_name: str) -> None:
        """Log the first conversion of each kind with its file, then counts now and then."""
        labels = {**CONVERSION_LABELS, **MAPPER_COUNT_LABELS}
        new = [k for k in labels if self.counts[k] > before[k]]
        for kind in new:
            if before[kind] == 0:
                logger.warning(f"SafeDatasetMapper: {labels[kind]} (first: "
                               f"'{file_name}'); further ones are counted.")
        if new:
            summary = ", ".join(f"{label}: {self.counts[k]}"
                                for k, label in labels.items() if self.counts[k])
            log_every_n_seconds(logging.INFO, f"SafeDatasetMapper so far: {summary}", n=60,
                                name=__name__)

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        """
        detectron2's, except that an image with RLE (or array) masks is mapped with
        ``instance_mask_format="bitmask"`` when the mapper's is "polygon" (the configs'): those
        masks cannot become polygons, and detectron2 alone fails on them in a loader worker. The
        mask loss takes either format per image; counted as ``masks_as_bitmasks``.
        """
        polygon = self.instance_mask_format == "polygon"
        if not (polygon and self.use_instance_mask and any(
                not isinstance(anno.get("segmentation", []), list)
                for anno in dataset_dict.get("annotations", ()) if not anno.get("iscrowd", 0))):
            return super()._transform_annotations(dataset_dict, transforms, image_shape)
        self.counts["masks_as_bitmasks"] += 1
        self.instance_mask_format = "bitmask"
        try:
            return super()._transform_annotations(dataset_dict, transforms, image_shape)
        finally:
            self.instance_mask_format = "polygon"

    def __call__(self, dataset_dict: dict) -> dict:
        """
        Args:
            dataset_dict: one detectron2 dataset dict (not modified).
        Returns:
            ``DatasetMapper``'s output: "image" a (C, H, W) uint8 tensor, "instances" in training,
            "sem_seg" a (H, W) int64 tensor when the dict has a ``sem_seg_file_name``.
        Raises:
            BadImageError: the image file cannot be read (names it).
            BadLabelError: the label map is unreadable, of another size, or out of range.
            ImageSizeMismatchError: the image is not of the dict's height x width (names the
                file; a detectron2 ``SizeMismatchError``).
        """
        file_name = dataset_dict["file_name"]
        before = Counter(self.counts)
        with _checked_reading(file_name, self.counts,
                              label_file=dataset_dict.get("sem_seg_file_name"),
                              num_classes=self.sem_seg_num_classes,
                              ignore_value=self.sem_seg_ignore_value) as reader:
            try:
                mapped = super().__call__(dataset_dict)
            except detection_utils.SizeMismatchError as e:
                if reader.image_shape is None:
                    raise
                raise ImageSizeMismatchError(
                    _size_mismatch_message(dataset_dict, reader.image_shape)) from e
        self._note(before, file_name)
        return mapped
