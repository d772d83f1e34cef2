"""A ``.tflite`` file past the flatbuffer's 2 GB limit: weights after the flatbuffer, at offsets, with its metadata.

A flatbuffer addresses at most 2 GiB, so TF's converter stops at "Model size is bigger than 2gb" unless it is told
to lay the weights out after the flatbuffer (``_experimental_use_buffer_offset``): each ``Buffer`` then has an
``offset`` and a ``size`` into the file instead of inline ``data``. LiteRT maps such a file as it is.

Adding metadata to it the usual way breaks it: TF's ``flatbuffer_utils`` and MediaPipe's metadata populator read
the model into objects and pack it again, which either inlines every weight (past the limit again) or keeps offsets
that now point at the wrong bytes, since the flatbuffer grew. So the file is laid out here:

1. the entries (hubedge's own, and ``TFLITE_METADATA`` from MediaPipe's writers, run on the weightless flatbuffer
   alone) are added to the flatbuffer as small inline buffers;
2. the flatbuffer is packed with every weight offset moved by how much it grew, rounded up to a multiple of
   :data:`ALIGNMENT` so that each weight keeps the alignment the converter gave it, and written;
3. the converter's weight region is copied after it unchanged, and the associated files (labels) are zipped after
   that, as TFLite Metadata places them at the end of a model file.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

from hubedge.runtimes.errors import HubedgeError, UnsupportedError

__all__ = ["ALIGNMENT", "add_entries", "has_offset_buffers", "write_with_metadata"]

ALIGNMENT = 64  # the weights keep their offsets modulo this, so each keeps the alignment the converter gave it


def _model(content: bytes | memoryview):
    from tensorflow.lite.python import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(content, 0)


def _weights(model) -> list:
    return [buffer for buffer in model.buffers if buffer.offset > 1 and buffer.size > 0]


def has_offset_buffers(content: bytes | memoryview) -> bool:
    """Whether a .tflite file keeps its weights after the flatbuffer, at offsets."""
    return bool(_weights(_model(content)))


def _added_entries(before, after_content: bytes) -> tuple[dict[str, bytes], list[tuple[zipfile.ZipInfo, bytes]]]:
    """What MediaPipe's writers added to the weightless flatbuffer: its new metadata entries, and the associated
    files zipped after it."""
    after = _model(after_content)
    known = {entry.name for entry in before.metadata or []}
    entries = {entry.name.decode() if isinstance(entry.name, bytes) else entry.name:
               bytes(bytearray(after.buffers[entry.buffer].data))
               for entry in after.metadata or [] if entry.name not in known}
    files = []
    if zipfile.is_zipfile(io.BytesIO(after_content)):
        with zipfile.ZipFile(io.BytesIO(after_content)) as packed:
            files = [(info, packed.read(info)) for info in packed.infolist()]
    return entries, files


def add_entries(model, entries: dict[str, bytes]) -> None:
    """Appends named entries to a model object's own ``metadata`` list, each in an inline buffer of its own."""
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as schema

    model.metadata = model.metadata or []
    for name, data in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(data, dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata.append(entry)


def write_with_metadata(content: bytes | memoryview, entries: dict[str, bytes],
                        standard: Callable[[bytes], bytes], target: Path) -> None:
    """Writes the converter's buffer-offset ``content`` to ``target`` with ``entries`` and the standard metadata
    that ``standard`` (MediaPipe's writers: flatbuffer in, flatbuffer and zip out) adds, the weights unchanged."""
    from tensorflow.lite.tools import flatbuffer_utils

    from hubedge.exporter.formats.tflite_metadata import ZIP_TIME

    view = memoryview(content)
    model = _model(view)
    weights = _weights(model)
    if not weights:
        raise HubedgeError("the TFLite converter did not lay the weights out at offsets; this TensorFlow may not "
                           "support the buffer-offset layout (TF 2.15 or later does)")
    if any(op.largeCustomOptionsOffset for graph in model.subgraphs for op in graph.operators or ()):
        raise UnsupportedError("this model keeps custom-op options at offsets too, which hubedge does not move; "
                               "export it below the threshold (--tflite-buffer-offset-above)")
    start = min(buffer.offset for buffer in weights)
    end = max(buffer.offset + buffer.size for buffer in weights)
    added, files = _added_entries(model, standard(bytes(view[:start])))
    add_entries(model, {**entries, **added})
    shift = 0
    while True:  # offsets are fixed-width fields: a second packing with the final shift has the same length
        for buffer in weights:
            buffer.offset += shift
        flat = flatbuffer_utils.convert_object_to_bytearray(model)
        new_start = -(-len(flat) // ALIGNMENT) * ALIGNMENT + start % ALIGNMENT
        for buffer in weights:
            buffer.offset -= shift
        if new_start - start == shift:
            break
        shift = new_start - start
    with open(target, "wb") as out:
        out.write(flat)
        out.write(bytes(new_start - len(flat)))
        out.write(view[start:end])
        if files:  # a new archive from here on, never one read out of the weights' last bytes
            with zipfile.ZipFile(out, "w") as packed:
                for info, data in files:
                    packed.writestr(zipfile.ZipInfo(info.filename, date_time=ZIP_TIME), data,
                                    compress_type=info.compress_type)
