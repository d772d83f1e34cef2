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
from typing import Any, BinaryIO

import numpy as np

from hubedge.runtimes.contract import ONNX_DATA_SUFFIX

__all__ = ["ALIGNMENT", "DATA_SUFFIX", "MIN_EXTERNAL_TENSOR", "aligned", "data_file", "move", "read_external", "remove",
           "save", "save_beside", "stored_bytes", "weights_bytes", "write_external"]

DATA_SUFFIX = ONNX_DATA_SUFFIX  # replaces the artifact's ".onnx": <artifact>.onnx.data
ALIGNMENT = 4096  # the page size the ONNX external-data specification names for offsets that can be mapped
MIN_EXTERNAL_TENSOR = 1024  # smaller tensors (shapes, scales, GroupNorm's constants) stay in the graph, as onnx does


def data_file(path: Path) -> Path:
    """Where the weights of the ONNX file ``path`` go when they are stored outside it."""
    return path.with_suffix(DATA_SUFFIX)


def aligned(offset: int) -> int:
    """The first offset at or after ``offset`` where a tensor may start: a multiple of :data:`ALIGNMENT`."""
    return -(-offset // ALIGNMENT) * ALIGNMENT


def write_external(tensor: Any, value: np.ndarray, data: BinaryIO, data_name: str) -> None:
    """Appends ``value`` to the open data file ``data`` (named ``data_name`` beside the model) at the next aligned
    offset, and makes ``tensor`` (name and type already set, or set here from ``value``) point at it. onnx's own
    ``set_external_data`` wants the bytes inline first, which is the copy of the model this avoids."""
    from onnx import TensorProto, helper

    value = value if value.flags.c_contiguous else np.ascontiguousarray(value)
    offset = aligned(data.tell())
    data.write(bytes(offset - data.tell()))
    data.write(memoryview(value).cast("B"))
    tensor.data_type = helper.np_dtype_to_tensor_dtype(value.dtype)
    del tensor.dims[:]
    tensor.dims.extend(value.shape)
    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    tensor.data_location = TensorProto.EXTERNAL
    for field, text in (("location", data_name), ("offset", str(offset)), ("length", str(value.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = field, text


def read_external(tensor: Any, folder: Path) -> np.ndarray:
    """The values of ``tensor``, whose bytes are in a data file in ``folder``, mapped from disk (read-only)."""
    from onnx import helper
    from onnx.external_data_helper import ExternalDataInfo

    info = ExternalDataInfo(tensor)
    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    count = int(np.prod(tensor.dims, dtype=np.int64))
    if info.length and info.length != count * dtype.itemsize:
        raise ValueError(f"{tensor.name}: {info.length} bytes stored for {count} values of {dtype}")
    values = np.memmap(folder / info.location, dtype=dtype, mode="r", offset=info.offset or 0, shape=(count,))
    return values.reshape(tuple(tensor.dims))


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
    appends to one that exists). The saved tensors' bytes leave ``model``: onnx moves them to the file. A model
    whose large tensors were already written to :func:`data_file` as they were made keeps it there, or, below the
    threshold, takes them back inside."""
    import onnx
    from onnx.external_data_helper import (ExternalDataInfo, load_external_data_for_model, set_external_data,
                                           uses_external_data)

    data = data_file(path)
    outside = [ExternalDataInfo(tensor) for tensor in model.graph.initializer if uses_external_data(tensor)]
    if {info.location for info in outside} - {data.name}:
        raise ValueError(f"{path.name}: weights already outside the graph must be in {data.name}")
    if outside and weights_bytes(model) + sum(info.length or 0 for info in outside) >= external_above:
        save_beside(model, path)
        return data
    if outside:
        load_external_data_for_model(model, str(path.parent))
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
