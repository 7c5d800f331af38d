"""
``SafeDatasetMapper``: detectron2's ``DatasetMapper`` with image reading that converts what it
can and names the file when it cannot.

Reading (``read_image_checked``), each conversion counted in ``mapper.counts``:
    - grayscale (``L``, ``1``), CMYK, YCbCr... -> RGB as PIL converts them;
    - with an alpha channel (RGBA, LA, palette with transparency) -> composited over black
      (``rgb * alpha / 255``; a fully opaque image is unchanged);
    - 16-bit (``I;16*``, or ``I`` with values in 0..65535) -> 8 bits by ``round(v / 257)``
      (detectron2 alone saturates them at 255);
    - EXIF orientation -> applied, as detectron2 does, so annotations of the upright image match;
    - missing, corrupt, truncated or non-image files, float images -> ``BadImageError`` naming
      the file;
    - size different from the dict's height/width -> ``SizeMismatchError`` naming the file and
      what to fix (with a hint when the cause is an EXIF rotation).
In training, images whose shorter side is below ``min_image_size`` are skipped (the mapper
returns None, detectron2 draws another image). Annotations are cleaned once, at load time, by
``sanitize_dataset_dicts`` (through ``hpvit_d2.data.build.get_dataset_dicts``), not per image.
"""
import copy
import logging
from collections import Counter
from typing import Optional, Tuple

import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import log_every_n_seconds
from PIL import Image, ImageOps

from .sanitize import COUNT_LABELS, MIN_IMAGE_SIZE

__all__ = ["BadImageError", "SafeDatasetMapper", "read_image_checked", "normalize_pil_mode"]

logger = logging.getLogger(__name__)

EXIF_ORIENTATION = 0x0112
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

CONVERSION_LABELS = {
    "grayscale": "grayscale images converted to RGB",
    "alpha": "images with alpha composited over black",
    "16bit": "16-bit images scaled to 8 bits",
    "color_space": "CMYK/YCbCr/other images converted to RGB",
    "exif_rotated": "images rotated/flipped by their EXIF orientation",
    "small_images_skipped": "training images smaller than the minimum size skipped",
}


class BadImageError(ValueError):
    """An image file that cannot be read; the message names the file and what to do."""


def normalize_pil_mode(
    image: Image.Image, file_name: str = "<image>"
) -> Tuple[Image.Image, Optional[str]]:
    """
    Bring a decoded PIL image to 8-bit ``RGB`` or ``L``.

    Returns:
        (image, kind): kind is the key of ``CONVERSION_LABELS`` for what was done, or None.
    Raises:
        BadImageError: for float images and 32-bit values outside 0..65535.
    """
    mode = image.mode
    if mode == "RGB":
        return image, None
    if mode in ("L", "1"):
        return image.convert("L"), "grayscale"
    if mode == "P" and "transparency" not in image.info:
        return image.convert("RGB"), None
    if mode in _ALPHA_MODES or mode == "P":
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        rgb = np.rint(rgba[..., :3] * (rgba[..., 3:] / 255.0)).astype(np.uint8)
        return Image.fromarray(rgb, "RGB"), "alpha"
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise BadImageError(
                f"image '{file_name}' has 32-bit pixel values in [{values.min()}, {values.max()}], "
                "outside the 16-bit range this reader scales: save it as 8- or 16-bit.")
        eight_bit = np.rint(values.astype(np.float32) / 257.0).astype(np.uint8)
        return Image.fromarray(eight_bit, "L"), "16bit"
    if mode == "F":
        raise BadImageError(f"image '{file_name}' stores floating-point pixels (PIL mode F): "
                            "save it as an 8-bit (or 16-bit) image.")
    return image.convert("RGB"), "color_space"


def _exif_transpose(image: Image.Image) -> Tuple[Image.Image, bool]:
    """Apply the EXIF orientation (a broken EXIF block is ignored, as detectron2 does)."""
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:
        return image, False
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return image, False
    return ImageOps.exif_transpose(image), True


def read_image_checked(file_name: str, format: Optional[str] = None,
                       counts: Optional[Counter] = None) -> np.ndarray:
    """
    Read an image like ``detectron2.data.detection_utils.read_image``, robustly.

    Args:
        file_name: path (any PathManager path).
        format: detectron2 image format ("RGB", "BGR", "L", ...), or None for the file's own.
        counts: receives one count per conversion kind (keys of ``CONVERSION_LABELS``).
    Returns:
        (H, W, C) uint8 array in ``format`` (float for "YUV-BT.601"), EXIF orientation applied.
    Raises:
        BadImageError: the file is missing, not an image, truncated, corrupt, or float.
    """
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()  # decode now, so truncated data fails here and not in a transform
    except FileNotFoundError as e:
        raise BadImageError(f"image file '{file_name}' does not exist: check the image root the "
                            "dataset was registered with.") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(
            f"cannot decode image '{file_name}' ({type(e).__name__}: {e}). The file is corrupt, "
            "truncated or not an image: re-export it, or remove it from the annotations.") from e
    image, rotated = _exif_transpose(image)
    image, kind = normalize_pil_mode(image, file_name)
    if counts is not None:
        counts.update(k for k in ("exif_rotated" if rotated else None, kind) if k)
    return utils.convert_PIL_to_numpy(image, format)


def _size_mismatch_message(dataset_dict: dict, image: np.ndarray) -> str:
    file_name = dataset_dict["file_name"]
    got_h, got_w = image.shape[:2]
    want_w, want_h = dataset_dict["width"], dataset_dict["height"]
    message = (f"image '{file_name}' (image_id {dataset_dict.get('image_id')}) is {got_w}x{got_h} "
               f"(width x height) as read, but its dataset dict says width={want_w}, "
               f"height={want_h}. Fix 'width'/'height' of this image in the annotation file, or "
               "replace the file with the image that was annotated.")
    if (got_w, got_h) == (want_h, want_w):
        try:
            with PathManager.open(file_name, "rb") as f:
                orientation = Image.open(f).getexif().get(EXIF_ORIENTATION, 1)
        except Exception:
            orientation = 1
        if orientation in (5, 6, 7, 8):
            message += (f" The file has EXIF orientation {orientation} (a 90-degree rotation) "
                        "that detectron2 applies when reading: the annotations (size, boxes, "
                        "masks) must be those of the rotated, upright image.")
    return message


class SafeDatasetMapper(DatasetMapper):
    """
    ``DatasetMapper`` (same constructor, same output) that reads images with
    ``read_image_checked``, names the file on a size mismatch, skips too-small training images
    and cleans training annotations. ``__call__`` is rewritten because the parent reads the image
    with a module function that cannot be replaced by overriding.

    Attributes:
        counts (Counter): conversions and skips done by this mapper instance (per worker).
        min_image_size (int): shorter side below which a training image is skipped.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.counts: Counter = Counter()
        self.min_image_size = MIN_IMAGE_SIZE

    def _note(self, before: Counter, file_name: str) -> None:
        """Log the first occurrence of each kind with its file, then counts now and then."""
        labels = {**CONVERSION_LABELS, **{k: v.format(min_size=self.min_image_size)
                                          for k, v in COUNT_LABELS.items()}}
        new = [k for k in labels if self.counts[k] > before[k]]
        for kind in new:
            if before[kind] == 0:
                logger.warning(f"SafeDatasetMapper: {labels[kind]} (first: '{file_name}'); "
                               "further ones are counted.")
        if new:
            summary = ", ".join(f"{labels[k]}: {self.counts[k]}" for k in labels if self.counts[k])
            log_every_n_seconds(logging.INFO, f"SafeDatasetMapper so far: {summary}", n=60,
                                name=__name__)

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        """
        Args:
            dataset_dict: one detectron2 dataset dict (not modified).
        Returns:
            The model input dict ("image": (C, H, W) uint8 tensor, "instances" in training), or
            None for a training image smaller than ``min_image_size``.
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        before = Counter(self.counts)
        image = read_image_checked(file_name, self.image_format, self.counts)
        if "width" in dataset_dict and "height" in dataset_dict:
            if (image.shape[1], image.shape[0]) != (dataset_dict["width"], dataset_dict["height"]):
                raise utils.SizeMismatchError(_size_mismatch_message(dataset_dict, image))
        utils.check_image_size(dataset_dict, image)
        if self.is_train and min(image.shape[:2]) < self.min_image_size:
            self.counts["small_images_skipped"] += 1
            self._note(before, file_name)
            return None

        sem_seg = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg = utils.read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        image, sem_seg = aug_input.image, aug_input.sem_seg
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg.astype("long"))
        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms,
                                      proposal_topk=self.proposal_topk)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
        elif "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        self._note(before, file_name)
        return dataset_dict
