"""ONNX files on disk: the whole model in one file, or its weights in a data file beside it past a size.

A serialized ONNX model is one protobuf message, and protobuf cannot serialize a message of 2 GiB or more: a BiT
R101x3 (2.06 GB of fp32 weights) sits just under that, an R152x4 (4.43 GB) far over it. ONNX's external-data
layout keeps the graph in the ``.onnx`` file and each large tensor's bytes in a second file, found by the
``location``, ``offset`` and ``length`` the tensor records. hubedge writes one data file per model,
``<artifact>.onnx.data`` (``bit.onnx.fp32.onnx`` → ``bit.onnx.fp32.onnx.data``), when the weights reach the
threshold (``ExportOptions.onnx_external_data_above``, by default just under the limit), and starts every tensor
of at least :data:`MIN_EXTERNAL_TENSOR` bytes at a multiple of :data:`ALIGNMENT` bytes, as the ONNX
external-data specification asks so that a runtime can map the weights from disk instead of copying them.
The data file is named in the model file, so both move together; the manifest records its sha256 beside the
artifact's, and ``hubedge.runtimes.integrity`` refuses the pair unless both match.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hubedge.runtimes.contract import ONNX_DATA_SUFFIX

__all__ = ["ALIGNMENT", "DATA_SUFFIX", "MIN_EXTERNAL_TENSOR", "aligned", "data_file", "move", "remove", "save", "save_beside",
           "stored_bytes", "weights_bytes"]

DATA_SUFFIX = ONNX_DATA_SUFFIX  # replaces the artifact's ".onnx": <artifact>.onnx.data
ALIGNMENT = 4096  # the page size the ONNX external-data specification names for offsets that can be mapped
MIN_EXTERNAL_TENSOR = 1024  # smaller tensors (shapes, scales, GroupNorm's constants) stay in the graph, as onnx does


def data_file(path: Path) -> Path:
    """Where the weights of the ONNX file ``path`` go when they are stored outside it."""
    return path.with_suffix(DATA_SUFFIX)


def aligned(offset: int) -> int:
    """The first offset at or after ``offset`` where a tensor may start: a multiple of :data:`ALIGNMENT`."""
    return -(-offset // ALIGNMENT) * ALIGNMENT


def stored_bytes(path: Path) -> int:
    """Bytes of the ONNX file ``path`` and of its data file, if it has one."""
    data = data_file(path)
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def weights_bytes(model: Any) -> int:
    """Bytes of the initializers' raw data held in ``model`` (a loaded model holds all of them)."""
    return sum(len(tensor.raw_data) for tensor in model.graph.initializer if tensor.HasField("raw_data"))


def save(model: Any, path: Path, external_above: int) -> Path | None:
    """Writes ``model`` at ``path``, with its weights in :func:`data_file` when they total ``external_above``
    bytes or more; returns the data file, or None. A data file left from an earlier save is removed first (onnx
    appends to one that exists). The saved tensors' bytes leave ``model``: onnx moves them to the file."""
    import onnx
    from onnx.external_data_helper import set_external_data

    data = data_file(path)
    data.unlink(missing_ok=True)
    if weights_bytes(model) < external_above:
        onnx.save(model, str(path))
        return None
    offset = 0
    for tensor in model.graph.initializer:
        if tensor.HasField("raw_data") and len(tensor.raw_data) >= MIN_EXTERNAL_TENSOR:
            offset = aligned(offset)
            set_external_data(tensor, data.name, offset, len(tensor.raw_data))
            offset += len(tensor.raw_data)
    onnx.save(model, str(path))  # writes each marked tensor at its offset, padding the gaps with zeros
    shutil.copymode(path, data)  # onnx creates it readable by its owner only; it ships with the model file
    return data


def save_beside(model: Any, path: Path) -> None:
    """Writes ``model``, whose large tensors already point at :func:`data_file` of ``path`` (written as they were
    made), at ``path``: the graph alone."""
    import onnx

    onnx.save(model, str(path))
    shutil.copymode(path, data_file(path))


def move(source: Path, target: Path) -> None:
    """Renames the ONNX file ``source`` to ``target``; one with a data file is written anew, since the graph
    names its data file and that name must follow the rename."""
    import onnx

    if not data_file(source).is_file():
        source.replace(target)
        return
    save(onnx.load(str(source)), target, 0)
    remove(source)


def remove(path: Path) -> None:
    """Removes the ONNX file ``path`` and its data file, where they exist."""
    path.unlink(missing_ok=True)
    data_file(path).unlink(missing_ok=True)
