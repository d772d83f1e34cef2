"""The one image preprocessing of hubedge: decode → RGB → centre square crop → resize → float32 [0,1], NHWC.

Calibration, ``predict()`` and the benchmarks all call :func:`preprocess`, so an artifact is never calibrated
on other pixels than it is run on. TF Hub image modules take float32 RGB in [0, 1] and rescale internally;
that is the contract kept here.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hubedge.runtimes.errors import InvalidInputError

__all__ = ["ALPHA_BACKGROUND", "DEFAULT_MAX_IMAGE_PIXELS", "IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS_ENV", "ImageLike",
    "check_float_batch", "list_images", "load_image", "max_image_pixels", "preprocess", "resize_square"]

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# Decompression bombs: a few hundred bytes can declare billions of pixels. Images over this many pixels are refused
# from their header, before any pixel is decoded; the default takes every phone camera up to 108 megapixels.
DEFAULT_MAX_IMAGE_PIXELS = 120_000_000
MAX_IMAGE_PIXELS_ENV = "HUBEDGE_MAX_IMAGE_PIXELS"
ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_PIL_LIMIT = threading.Lock()  # Pillow's own bomb check is a process-wide setting


def max_image_pixels() -> int:
    """The largest image (width × height) hubedge decodes: ``HUBEDGE_MAX_IMAGE_PIXELS`` if set, else the default.

    ``hubedge … --max-image-pixels N`` sets that variable for the command (and the child processes it starts)."""
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidInputError(f"{MAX_IMAGE_PIXELS_ENV} must be a positive whole number of pixels; got {text!r}")
    return value


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """Decodes an image file to an 8-bit RGB PIL image, honouring EXIF orientation.

    The first frame of an animation is used. Transparent pixels are composited on white. 16-bit images are
    scaled to 8 bits (v / 257), not clipped; 32-bit integer images are read as 16-bit when their values fit
    0–65535, and float images only when their values lie in [0, 1]: other ranges are refused, since their
    meaning is unknown. CMYK and other colour modes go through Pillow's conversion (ICC profiles are not
    applied, as TensorFlow's decoders do not apply them either). An image with more than ``max_pixels`` pixels
    (default :func:`max_image_pixels`) is refused from its header, before it is decoded.

    Raises InvalidInputError for a missing file, one that is not a decodable image, or one refused as above.
    """
    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(f"image file not found: {file}")
    limit = max_pixels if max_pixels is not None else max_image_pixels()
    try:
        # Pillow warns, and goes on, about damage it skips over (a cut-off file, a tag past its end): the damage
        # that loses pixels is refused below, the rest kept off the user's terminal
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rgb = _decode(file, limit)
    except InvalidInputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError,
            Image.DecompressionBombError) as error:
        raise InvalidInputError(f"{file} is not a readable image ({type(error).__name__}: {error})") from None
    truncated = [str(w.message) for w in caught if "runcated" in str(w.message)]
    if truncated:
        raise InvalidInputError(f"{file} is not a readable image ({truncated[0]}: the file is cut off)")
    return rgb


def _decode(file: Path, limit: int) -> Image.Image:
    with _PIL_LIMIT:  # hubedge's limit replaces Pillow's, which would warn or fail with a traceback
        previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(file) as image:
                width, height = image.size
                if width * height > limit:
                    raise InvalidInputError(
                        f"{file} declares {width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
                        f"(a decompression bomb, or a very large image: raise it with --max-image-pixels or "
                        f"{MAX_IMAGE_PIXELS_ENV} if you trust the file)")
                image.seek(0)  # the first frame of an animation
                return _to_rgb(ImageOps.exif_transpose(image), file)
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def _to_rgb(image: Image.Image, file: Path | str) -> Image.Image:
    """8-bit RGB pixels of any Pillow mode, by the rules in :func:`load_image`."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        values = np.asarray(image)
        if image.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise InvalidInputError(f"{file} has 32-bit integer pixels in [{values.min()}, {values.max()}], a range "
                                    "hubedge cannot interpret; save it as an 8- or 16-bit image")
        eight = ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(eight, mode="L").convert("RGB")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if not (math.isfinite(low) and math.isfinite(high)) or low < 0.0 or high > 1.0:
            raise InvalidInputError(f"{file} has floating-point pixels in [{low:.4g}, {high:.4g}]; hubedge reads "
                                    "float images only in [0, 1]: save it as an 8- or 16-bit image")
        return Image.fromarray(np.rint(values * 255.0).astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


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
            pil = _to_rgb(item, f"image {i}")
        elif isinstance(item, np.ndarray) and item.dtype == np.uint8:
            pil = _uint8_to_pil(item)
        else:
            kind = f"array of {item.dtype}" if isinstance(item, np.ndarray) else type(item).__name__
            raise InvalidInputError(f"image {i}: expected a path, a PIL image or a uint8 HWC array; got {kind}")
        out[i] = resize_square(pil, size).astype(np.float32) / 255.0
    return out
