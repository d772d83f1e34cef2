"""The one image preprocessing of hubedge: decode → RGB → centre square crop → resize → float32 [0,1], NHWC.

Calibration, ``predict()`` and the benchmarks all call :func:`preprocess`, so an artifact is never calibrated
on other pixels than it is run on. TF Hub image modules take float32 RGB in [0, 1] and rescale internally;
that is the contract kept here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from runtimes.errors import InvalidInputError

__all__ = ["IMAGE_SUFFIXES", "ImageLike", "check_float_batch", "list_images", "load_image", "preprocess",
    "resize_square"]

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decodes an image file to an RGB PIL image, honouring EXIF orientation.

    Raises InvalidInputError for a missing file or one that is not a decodable image.
    """
    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(f"image file not found: {file}")
    try:
        with Image.open(file) as image:
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InvalidInputError(f"{file} is not a readable image ({type(error).__name__}: {error})") from None


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (so every consumer sees the same order)."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidInputError(f"image folder not found: {root}")
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def resize_square(image: Image.Image, size: int) -> np.ndarray:
    """Centre-crops the largest square and resizes it to ``size``² (bilinear, antialiased); uint8 HWC."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def _uint8_to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim != 3 or array.shape[-1] != 3:
        raise InvalidInputError(f"a uint8 image must be HWC with 3 channels (RGB); got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidInputError(f"an image must not be empty; got shape {array.shape}")
    return Image.fromarray(array, mode="RGB")


def check_float_batch(batch: np.ndarray) -> np.ndarray:
    """Validates an already preprocessed batch: float32 NHWC, 3 channels, finite, within [0, 1]."""
    if batch.dtype != np.float32:
        raise InvalidInputError(
            f"float images must be float32 in [0, 1]; got {batch.dtype} (convert with .astype(np.float32))"
        )
    if batch.ndim != 4:
        raise InvalidInputError(f"a float batch must be NHWC (rank 4); got rank {batch.ndim}, shape {batch.shape}")
    if batch.shape[0] == 0:
        raise InvalidInputError("the batch is empty: pass at least one image")
    if batch.shape[-1] != 3:
        raise InvalidInputError(f"images must have 3 channels (RGB, NHWC); got shape {batch.shape}")
    if batch.shape[1] == 0 or batch.shape[2] == 0:
        raise InvalidInputError(f"images must not be empty; got shape {batch.shape}")
    # Two reductions and no temporary: min and max propagate NaN, and an infinity is an extreme, so both
    # finite means all finite. This runs on every predict() call (issue #7's overhead budget).
    low, high = float(batch.min()), float(batch.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InvalidInputError("the batch contains NaN or infinite values")
    if low < 0.0 or high > 1.0:
        raise InvalidInputError(
            f"float images must lie in [0, 1] (RGB / 255); got values in [{low:.4g}, {high:.4g}]"
        )
    return batch


def preprocess(images: ImageLike | Sequence[ImageLike], size: int) -> np.ndarray:
    """Turns images into the float32 NHWC batch in [0, 1] that every hubedge model takes.

    Accepts a path, a PIL image, a uint8 HWC array, a uint8 NHWC array, a sequence of any of those, or a
    float32 NHWC array in [0, 1], which is taken as already preprocessed and only validated (its spatial
    size is left as it is; a fixed-size artifact checks it).
    """
    if isinstance(images, np.ndarray):
        if images.dtype == np.uint8:
            if images.ndim == 4:
                images = list(images)
            elif images.ndim == 3:
                images = [images]
            else:
                raise InvalidInputError(f"uint8 images must be HWC or NHWC; got shape {images.shape}")
        elif np.issubdtype(images.dtype, np.floating):
            return check_float_batch(images)
        else:
            raise InvalidInputError(f"images must be uint8 (0–255) or float32 (0–1); got dtype {images.dtype}")
    elif isinstance(images, (str, os.PathLike, Image.Image)):
        images = [images]
    if len(images) == 0:
        raise InvalidInputError("no images given: pass at least one image")
    out = np.empty((len(images), size, size, 3), dtype=np.float32)
    for i, item in enumerate(images):
        if isinstance(item, (str, os.PathLike)):
            pil = load_image(item)
        elif isinstance(item, Image.Image):
            pil = item.convert("RGB")
        elif isinstance(item, np.ndarray) and item.dtype == np.uint8:
            pil = _uint8_to_pil(item)
        else:
            kind = f"array of {item.dtype}" if isinstance(item, np.ndarray) else type(item).__name__
            raise InvalidInputError(f"image {i}: expected a path, a PIL image or a uint8 HWC array; got {kind}")
        out[i] = resize_square(pil, size).astype(np.float32) / 255.0
    return out
