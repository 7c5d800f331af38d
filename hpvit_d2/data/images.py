"""
Reading image files: the one place that decodes images, applies their EXIF orientation and turns
unusual pixel formats into what detectron2's models take.

- :func:`read_image_checked`: ``detectron2.data.detection_utils.read_image`` that converts what it
  can (counted) and names the file when it cannot (:class:`BadImageError`). The one reader of
  every path: training and evaluation (``SafeDatasetMapper``), the demo and ``LazyPredictor``
  (given a file), the export sample, the dataset browser;
- :func:`read_image_size`: the upright ``(height, width)`` from the file header, without decoding;
  it and the reader open files in one place, where every refusal of Pillow's (a decompression
  bomb included) is a :class:`BadImageError` naming the file;
- :func:`read_exif_orientation`: the EXIF orientation from the file header; one of
  ``SIDE_SWAPPING_ORIENTATIONS`` turns the image by 90 degrees (used for sizes and for the hint of
  a size mismatch).

Pixel cap: :func:`read_image_checked` refuses an image above ``max_image_pixels()`` pixels
(width x height from the file header, checked before anything is decoded), default
``DEFAULT_MAX_IMAGE_PIXELS`` (50 megapixels, e.g. 8660x5773), changed by the environment variable
``HPVIT_MAX_IMAGE_PIXELS`` (a pixel count; 0 = no cap) or the ``max_pixels`` argument. Pillow's
own limit (``PIL.Image.MAX_IMAGE_PIXELS``, an error only above 179 megapixels) lets through a
97 KB PNG that declares 100 megapixels, which takes ~14 GB in the detection pipeline.

Conversions of :func:`read_image_checked` (keys of ``CONVERSION_LABELS``):
    - grayscale (``L``, ``1``) -> 8-bit ``L``, which detectron2 turns into RGB;
    - CMYK, YCbCr... -> RGB as PIL converts them;
    - with an alpha channel (RGBA, LA, palette with transparency) -> composited over black
      (``rgb * alpha / 255``; a fully opaque image is unchanged);
    - 16-bit (``I;16*``, or ``I`` with values in 0..65535) -> 8 bits by ``round(v / 257)``
      (detectron2 alone saturates them at 255);
    - EXIF orientation 2..8 -> applied with ``PIL.ImageOps.exif_transpose``, as detectron2 does;
      an unreadable EXIF block is ignored, as detectron2 does.
"""
import contextlib
import os
from collections import Counter
from typing import Optional, Tuple

import numpy as np
from detectron2.data.detection_utils import convert_PIL_to_numpy
from detectron2.utils.file_io import PathManager
from PIL import ExifTags, Image, ImageOps

from .errors import UserDataError

__all__ = [
    "BadImageError",
    "CONVERSION_LABELS",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "MAX_PIXELS_VARIABLE",
    "check_pixel_cap",
    "max_image_pixels",
    "normalize_pil_mode",
    "SIDE_SWAPPING_ORIENTATIONS",
    "read_exif_orientation",
    "read_image_checked",
    "read_image_size",
]

CONVERSION_LABELS = {
    "grayscale": "grayscale images converted to RGB",
    "alpha": "images with alpha composited over black",
    "16bit": "16-bit images scaled to 8 bits",
    "color_space": "CMYK/YCbCr/other images converted to RGB",
    "exif_rotated": "images rotated/flipped by their EXIF orientation",
}

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_TRANSPOSING_ORIENTATIONS = (2, 3, 4, 5, 6, 7, 8)
SIDE_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations that rotate by 90 degrees: the decoded width is the stored height."""


DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
"""Largest image (width x height) :func:`read_image_checked` decodes unless told otherwise."""
MAX_PIXELS_VARIABLE = "HPVIT_MAX_IMAGE_PIXELS"
"""Environment variable that sets the pixel cap (0: none); read at each call."""


class BadImageError(UserDataError):
    """An image file that cannot be read; the message names the file and what to do."""


def max_image_pixels() -> int:
    """The pixel cap: ``$HPVIT_MAX_IMAGE_PIXELS`` if set (0: no cap), else the default."""
    value = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        return max(0, int(float(value)))
    except ValueError:
        raise BadImageError(f"{MAX_PIXELS_VARIABLE}={value!r} is not a pixel count: set a whole "
                            "number such as 100000000, or 0 for no cap.") from None


def check_pixel_cap(file_name: str, width: int, height: int,
                    max_pixels: Optional[int] = None) -> None:
    """
    Raise :class:`BadImageError` if a ``width`` x ``height`` image is above the cap
    (``max_pixels``, or :func:`max_image_pixels` when None; 0 = no cap). The one place the cap is
    applied: by the reader, before decoding, and at dataset load from the annotation's size.
    """
    cap = max_image_pixels() if max_pixels is None else max_pixels
    pixels = int(width) * int(height)
    if cap and pixels > cap:
        raise BadImageError(
            f"image '{file_name}' is {width}x{height} ({pixels / 1e6:.1f} megapixels), above the "
            f"{cap / 1e6:g}-megapixel cap of the image reader: downscale it, or raise the cap, "
            f"e.g. {MAX_PIXELS_VARIABLE}={pixels} (0 = none).")


def _exif_orientation(image: Image.Image) -> int:
    """EXIF orientation (1..8) of an opened image; 1 when absent or unreadable."""
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # a broken EXIF block: detectron2 ignores it as well
        return 1


@contextlib.contextmanager
def _opened(file_name: str, max_pixels: Optional[int] = None, decode: bool = False):
    """
    The image ``file_name`` opened by Pillow (header read; pixels decoded with ``decode``, after
    the pixel cap is checked from the header). The one place that opens image files: every
    refusal of Pillow's (missing file, unknown format, decompression bomb, truncated or corrupt
    data, a malformed header) is a :class:`BadImageError` naming the file.
    """
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            if decode:
                check_pixel_cap(file_name, *image.size, max_pixels=max_pixels)  # header only
                image.load()  # decode now, so truncated data fails here and not in a transform
            yield image
    except BadImageError:
        raise
    except FileNotFoundError as e:
        raise BadImageError(f"image file '{file_name}' does not exist: check the image root the "
                            "dataset was registered with.") from e
    except Image.DecompressionBombError as e:
        raise BadImageError(f"image '{file_name}' is too large for Pillow ({e}): downscale it, or "
                            "raise PIL.Image.MAX_IMAGE_PIXELS as well.") from e
    except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError, struct.error...
        raise BadImageError(
            f"cannot decode image '{file_name}' ({type(e).__name__}: {e}). The file is corrupt, "
            "truncated or not an image: re-export it, or remove it from the annotations.") from e


def read_exif_orientation(file_name: str) -> int:
    """
    EXIF orientation (1..8) of ``file_name``, from its header; 1 when absent, unreadable, or the
    file cannot be opened.
    """
    try:
        with _opened(file_name) as image:
            return _exif_orientation(image)
    except BadImageError:
        return 1


def read_image_size(file_name: str) -> Tuple[int, int]:
    """
    ``(height, width)`` of ``file_name`` as :func:`read_image_checked` (and detectron2) decodes
    it, EXIF orientation applied; reads the header only.

    Raises:
        BadImageError: the file is missing, or Pillow refuses its header.
    """
    with _opened(file_name) as image:
        width, height = image.size
        swapped = _exif_orientation(image) in SIDE_SWAPPING_ORIENTATIONS
    return (width, height) if swapped else (height, width)


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


def _decode_upright(file_name: str,
                    max_pixels: Optional[int] = None) -> Tuple[Image.Image, bool]:
    """The decoded image, EXIF orientation applied, and whether it was rotated or flipped."""
    with _opened(file_name, max_pixels, decode=True) as image:
        orientation = _exif_orientation(image)
    if orientation not in _TRANSPOSING_ORIENTATIONS:
        return image, False
    try:
        return ImageOps.exif_transpose(image), True
    except Exception as e:  # PIL fails on some malformed EXIF blocks while rewriting them
        raise BadImageError(
            f"cannot apply the EXIF orientation of image '{file_name}' ({type(e).__name__}: {e}): "
            "re-save the image upright, without its EXIF block.") from e


def read_image_checked(file_name: str, format: Optional[str] = None,
                       counts: Optional[Counter] = None,
                       max_pixels: Optional[int] = None) -> np.ndarray:
    """
    Read an image like ``detectron2.data.detection_utils.read_image``, robustly.

    Args:
        file_name: path (any PathManager path).
        format: detectron2 image format ("RGB", "BGR", "L", ...), or None for the file's own.
        counts: receives one count per conversion kind (keys of ``CONVERSION_LABELS``).
        max_pixels: pixel cap; None: :func:`max_image_pixels` (``$HPVIT_MAX_IMAGE_PIXELS`` or
            ``DEFAULT_MAX_IMAGE_PIXELS``); 0: none.
    Returns:
        (H, W, C) uint8 array in ``format`` (float for "YUV-BT.601"), EXIF orientation applied.
    Raises:
        BadImageError: the file is missing, not an image, truncated, corrupt, float, or above
            the pixel cap (checked from the header, before decoding).
    """
    image, rotated = _decode_upright(file_name, max_pixels)
    image, kind = normalize_pil_mode(image, file_name)
    if counts is not None:
        counts.update(k for k in ("exif_rotated" if rotated else None, kind) if k)
    return convert_PIL_to_numpy(image, format)
