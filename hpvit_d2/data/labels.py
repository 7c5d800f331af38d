"""
Reading semantic segmentation label maps, checked: the one place a label file is decoded and
judged, called by ``SafeDatasetMapper`` for every image it maps (training and evaluation alike).

Policy (one place, per image, where the file is read anyway): checking every label file when a
dataset is loaded would decode 20k files for ADE20K before training starts. At load,
``hpvit_d2.data`` only checks that each image has its label file (``datasets.check_dataset`` for
the built-in layouts, ``sanitize`` for any dataset); the content is checked here, when the mapper
reads it, and a bad file stops the run with a :class:`BadLabelError` naming it:

- a file that cannot be decoded, or is not single-channel (RGB colour-coded labels: save class
  indices instead);
- a size other than its image's (as the image is decoded, EXIF orientation applied);
- a value that is neither a class (``0 .. num_classes - 1``) nor the ignore value.

Values are read as stored, as detectron2's ``SemSegEvaluator`` reads the ground truth: a palette
(``P``) PNG gives its indices (detectron2's mapper alone converts it to luminance with
``read_image(..., "L")``, so training and evaluation would see different labels), 16-bit PNGs
their 16-bit values. EXIF orientation is not applied to label maps (the evaluator does not either).
"""
from typing import Optional, Tuple

import numpy as np
from detectron2.utils.file_io import PathManager
from PIL import Image

from .annotations import BadAnnotationError

__all__ = ["BadLabelError", "LABEL_MODES", "check_label_map", "read_label_checked",
           "read_label_map"]

LABEL_MODES = ("L", "P", "I;16", "I;16L", "I;16B", "I;16N", "I")
"""PIL modes of a single-channel map of integer class indices."""


class BadLabelError(BadAnnotationError):
    """A semantic label file that cannot be trained or evaluated on; the message names it."""


def read_label_map(file_name: str) -> np.ndarray:
    """
    The (H, W) integer label map stored in ``file_name``, values as stored.

    Raises:
        BadLabelError: missing, undecodable, or not a single-channel integer image.
    """
    try:
        with PathManager.open(file_name, "rb") as f, Image.open(f) as image:
            image.load()
            mode = image.mode
            label = np.array(image) if mode in LABEL_MODES else None
    except FileNotFoundError:
        raise BadLabelError(f"label file '{file_name}' does not exist: check the label directory "
                            "the dataset was registered with") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadLabelError(f"cannot decode label file '{file_name}' ({type(e).__name__}: {e}): "
                            "re-export it as a PNG of class indices") from None
    if label is None:
        raise BadLabelError(
            f"label file '{file_name}' is a {mode} image; a label map must be single-channel "
            f"(PIL mode {', '.join(LABEL_MODES[:3])}...) holding class indices, not colours: "
            "convert the colours to indices")
    return label


def check_label_map(label: np.ndarray, file_name: str,
                    image_shape: Optional[Tuple[int, int]] = None,
                    num_classes: Optional[int] = None, ignore_value: int = 255) -> None:
    """
    Raise :class:`BadLabelError` (naming ``file_name``) if the (H, W) ``label`` does not have
    ``image_shape`` (H, W), or has values that are neither in ``0 .. num_classes - 1`` nor
    ``ignore_value``. ``None`` skips that check.
    """
    if image_shape is not None and tuple(label.shape[:2]) != tuple(image_shape):
        raise BadLabelError(
            f"label file '{file_name}' is {label.shape[1]}x{label.shape[0]} (width x height) but "
            f"its image is {image_shape[1]}x{image_shape[0]}: the label map must be the size of "
            "the (upright) image it annotates")
    if num_classes is None:
        return
    if label.dtype == np.uint8:
        counts = np.bincount(label.ravel(), minlength=256)
        values = np.flatnonzero(counts)
    else:
        values, counts_of = np.unique(label, return_counts=True)
        counts = dict(zip(values.tolist(), counts_of.tolist()))
    bad = [int(v) for v in values if not (0 <= v < num_classes or v == ignore_value)]
    if bad:
        shown = ", ".join(f"{v} ({int(counts[v])} px)" for v in bad[:5])
        raise BadLabelError(
            f"label file '{file_name}' has values {shown}{' ...' if len(bad) > 5 else ''} that "
            f"are neither classes (0..{num_classes - 1}) nor the ignore value {ignore_value}: "
            "fix the file, or check the dataset's number of classes and ignore value (e.g. "
            "ADE20K's raw annotations count from 1 with 0 = other: use annotations_detectron2)")


def read_label_checked(file_name: str, image_shape: Optional[Tuple[int, int]] = None,
                       num_classes: Optional[int] = None, ignore_value: int = 255) -> np.ndarray:
    """
    :func:`read_label_map` then :func:`check_label_map`.

    Returns:
        (H, W) label map, uint8 when every valid value fits (num_classes <= 256 and the ignore
        value <= 255; detectron2's transforms resize uint8 maps with PIL), else int32.
    """
    label = read_label_map(file_name)
    check_label_map(label, file_name, image_shape, num_classes, ignore_value)
    if label.dtype != np.uint8 and num_classes is not None and num_classes <= 256 \
            and 0 <= ignore_value <= 255:
        return label.astype(np.uint8)
    return label if label.dtype == np.uint8 else label.astype(np.int32)
