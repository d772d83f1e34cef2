"""FP32 reference outputs recorded at export, so that a device without TensorFlow can still judge an artifact.

Export writes the model's FP32 outputs on its evaluation images once per model and weights
(``<model>.<weights>.reference.npy`` beside the artifacts), and the input batch as its uint8 pixels
(``….inputs.npy``), and records, in every manifest, both files' sha256 and the sha256 of the exact preprocessed
batch (``batch_sha256``). A reader gets the outputs only if the file is the one the manifest names and fits the
model; the batch hash says whether this machine's preprocessing reproduces the inputs the outputs belong to, and
where it does not, the recorded batch stands in. ``.npy`` because it is byte-stable (no zip timestamps) and numpy
reads it with nothing else installed.
"""

from __future__ import annotations

import dataclasses
import math
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from hubedge.runtimes.errors import CorruptModelError
from hubedge.runtimes.integrity import member, sha256_of
from hubedge.runtimes.manifest import model_info

__all__ = ["INPUTS_SUFFIX", "RecordedReference", "SUFFIX", "batch_sha256", "from_pixels", "load_npy",
    "read_recorded", "read_recorded_inputs", "to_pixels"]

SUFFIX = ".reference.npy"
INPUTS_SUFFIX = ".inputs.npy"


def batch_sha256(images: np.ndarray) -> str:
    """A hash of a float32 NHWC batch, its shape included: equal hashes mean the very same inputs."""
    batch = np.ascontiguousarray(images, dtype=np.float32)
    digest = hashlib.sha256(repr(batch.shape).encode())
    digest.update(batch.tobytes())
    return digest.hexdigest()


def to_pixels(images: np.ndarray) -> np.ndarray | None:
    """The uint8 pixels a [0, 1] batch was made from (``preprocess`` divides them by 255), or None when the batch
    is not exactly that (then it cannot be recorded this way)."""
    pixels = np.rint(np.asarray(images, np.float32) * np.float32(255.0)).clip(0, 255).astype(np.uint8)
    return pixels if batch_sha256(from_pixels(pixels)) == batch_sha256(images) else None


def from_pixels(pixels: np.ndarray) -> np.ndarray:
    """The float32 batch of uint8 pixels, computed exactly as ``hubedge.runtimes.preprocess`` computes it."""
    return pixels.astype(np.float32) / np.float32(255.0)


@dataclasses.dataclass(frozen=True)
class RecordedReference:
    """The FP32 outputs an artifact was verified against, and what they were computed on."""

    outputs: np.ndarray
    input_sha256: str
    image_set: str
    path: Path


def load_npy(path: Path, what: str, kinds: str) -> np.ndarray:
    """An ``.npy`` file's array, refused in one line unless its header is sound, its dtype one of ``kinds``
    (numpy kind codes, such as ``"f"`` or ``"u"``) and its declared size exactly what the file holds; so a hostile
    header cannot make numpy allocate what the file does not contain."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"npy format version {version} is not one numpy writes for plain arrays")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(handle)
            offset = handle.tell()
        size = path.stat().st_size
    except Exception as error:  # numpy parses the header as a Python literal: any parse error means damage
        raise CorruptModelError(f"cannot read {what} {path}: {type(error).__name__}: {str(error)[:200]}") from None
    count = math.prod(shape)
    if dtype.kind not in kinds or dtype.hasobject or fortran or count * dtype.itemsize != size - offset:
        raise CorruptModelError(f"{what} {path} is damaged: its header declares {dtype} {list(shape)}, which the "
                                f"file's {size} bytes do not hold")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise CorruptModelError(f"cannot read {what} {path}: {error}") from None


def read_recorded(manifest: dict[str, Any], directory: Path) -> RecordedReference:
    """The recorded reference a manifest (read from ``directory``) names, checked; one clear error otherwise."""
    record = manifest.get("reference") or {}
    if "file" not in record:
        why = record.get("skipped", "it predates recorded references")
        raise CorruptModelError(f"{manifest['artifact']['file']} has no recorded reference ({why}); re-export it")
    path = member(directory, record["file"], "the recorded reference")
    if not path.is_file():
        raise CorruptModelError(f"the recorded reference {path} is missing; copy it with the artifact and manifest")
    if sha256_of(path) != record.get("sha256"):
        raise CorruptModelError(f"{path} is not the reference {manifest['artifact']['file']} was verified against "
                                "(sha256 mismatch); copy the matching file or re-export")
    outputs = load_npy(path, "the recorded reference", "f")
    info = model_info(manifest)
    if outputs.ndim != 2 or outputs.shape[1] != info.num_outputs or outputs.shape[0] != record.get("images"):
        raise CorruptModelError(f"{path} holds outputs of shape {list(outputs.shape)}, not {record.get('images')} x "
                                f"{info.num_outputs} of {info.name}; re-export")
    if not np.isfinite(outputs).all():
        raise CorruptModelError(f"{path} holds NaN or infinite outputs: it is no FP32 reference; re-export")
    if not isinstance(record.get("input_sha256"), str):
        raise CorruptModelError(f"the manifest of {manifest['artifact']['file']} records no input hash for its "
                                "reference; re-export it")
    return RecordedReference(outputs, record["input_sha256"], str(record.get("image_set", "")), path)


def read_recorded_inputs(manifest: dict[str, Any], directory: Path) -> np.ndarray:
    """The exact input batch the recorded outputs belong to, checked against its record; for a machine whose
    own preprocessing of the photos differs (another Pillow, another decoder)."""
    record = (manifest.get("reference") or {}).get("inputs") or {}
    if not isinstance(record, dict) or not record:
        raise CorruptModelError(f"no recorded input batch beside {manifest['artifact']['file']} (none recorded); "
                                "copy it with the reference, or re-export")
    path = member(directory, record.get("file"), "the recorded input batch")
    if not path.is_file():
        raise CorruptModelError(f"no recorded input batch beside {manifest['artifact']['file']} "
                                f"({record.get('file', 'none recorded')}); copy it with the reference, or re-export")
    if sha256_of(path) != record.get("sha256"):
        raise CorruptModelError(f"{path} is not the input batch {manifest['artifact']['file']} was verified on "
                                "(sha256 mismatch); copy the matching file or re-export")
    images = from_pixels(load_npy(path, "the recorded input batch", "u"))
    if batch_sha256(images) != manifest["reference"].get("input_sha256"):
        raise CorruptModelError(f"{path} does not rebuild the batch its manifest records; re-export")
    return images
