"""Calibration sets for post-training quantization, through the one preprocessing of ``hubedge.runtimes``.

A set is built from a folder of image files at the model's input size. When more samples are asked for
than there are photos, deterministic augmentations (crops at several scales, horizontal flips) make up the
difference. Photos held apart for verification are never used, even when they sit in the given folder
(they are recognised by content). The set's sha256 and recipe go into every manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from hubedge import calibration_data
from hubedge.runtimes.errors import InvalidInputError
from hubedge.runtimes.preprocess import list_images, load_image, resize_square

__all__ = ["CROP_SCALES", "CalibrationSet", "DEFAULT_SIZE", "augment", "build_calibration_set",
    "check_calibration_folder", "usable_images"]

DEFAULT_SIZE = 64
CROP_SCALES = (1.0, 0.8, 0.65)


@dataclasses.dataclass(frozen=True)
class CalibrationSet:
    """Preprocessed calibration images (float32 NHWC in [0, 1]) and how they were made."""

    images: np.ndarray
    record: dict[str, Any]

    def batches(self, batch_size: int = 1):
        for start in range(0, len(self.images), batch_size):
            yield self.images[start : start + batch_size]


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def augment(image: Image.Image, variant: int) -> Image.Image:
    """Variant 0 is the photo itself; later variants crop at a smaller scale, off-centre, and flip."""
    scale = CROP_SCALES[variant % len(CROP_SCALES)]
    width, height = image.size
    crop_w, crop_h = int(width * scale), int(height * scale)
    corner = (variant // len(CROP_SCALES)) % 3  # centre, top-left, bottom-right
    left = {0: (width - crop_w) // 2, 1: 0, 2: width - crop_w}[corner]
    top = {0: (height - crop_h) // 2, 1: 0, 2: height - crop_h}[corner]
    image = image.crop((left, top, left + crop_w, top + crop_h))
    if variant % 2 == 1:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def usable_images(folder: str | Path | None) -> tuple[Path, list[Path]]:
    """The calibration folder (default: the bundled photos) and its images, less the held-apart ones."""
    held_apart = {_file_hash(p) for p in calibration_data.evaluation_photos()}
    source = Path(folder) if folder is not None else calibration_data.DIR
    files = [p for p in list_images(source) if _file_hash(p) not in held_apart]
    if not files:
        raise InvalidInputError(
            f"no calibration images in {source} (JPEG/PNG/…, not counting the held-apart verification photos); "
            "give --calibration-data a folder of representative photos"
        )
    return source, files


def check_calibration_folder(folder: str | Path | None) -> None:
    """Fails before any work when the folder holds no usable images (never a silent fallback)."""
    usable_images(folder)


def build_calibration_set(folder: str | Path | None, size: int, count: int | None = None) -> CalibrationSet:
    """``count`` samples (default: one per photo, at least DEFAULT_SIZE with augmentation) at ``size``²."""
    source, files = usable_images(folder)
    if count is not None and count < 1:
        raise InvalidInputError(f"--calibration-size must be at least 1; got {count}")
    count = count or max(len(files), DEFAULT_SIZE)
    photos = [load_image(p) for p in files]
    images = np.empty((count, size, size, 3), np.float32)
    for i in tqdm(range(count), desc="calibration set", unit="image", disable=None, leave=False, file=sys.stderr):
        photo = photos[i % len(photos)]
        images[i] = resize_square(augment(photo, i // len(photos)), size).astype(np.float32) / 255.0
    record = {
        "folder": str(source),
        "photos": len(files),
        "samples": count,
        "augmentation": "none" if count <= len(files) else f"crops at scales {list(CROP_SCALES)}, 3 positions, flips",
        "input_size": size,
        "sha256": hashlib.sha256(images.tobytes()).hexdigest(),
    }
    return CalibrationSet(images, record)
