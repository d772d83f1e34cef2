"""A BiT's weights read from a hub-form SavedModel's checkpoint, tensor by tensor, without loading its graph.

hubedge saves every edge-form BiT (seeded, from a ``.npz``, re-authored) as a hub-form SavedModel whose
checkpoint keeps the module's variables under ``variables/<i>``, in the order the builder tracks them. Their shapes,
in that order, are what ``bit_layout.recognise`` matches; each tensor's values are read from the checkpoint only
when a writer uses them, so that a writer holds one tensor at a time besides what it has written. Loading the
SavedModel would build TensorFlow's graph and hold every weight in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hubedge.exporter.sources.bit_layout import BitLayout, Unrecognised, recognise

__all__ = ["StoredTensor", "read_layout"]

VARIABLE_KEY = "variables/{}/.ATTRIBUTES/VARIABLE_VALUE"


def read_layout(savedmodel: Path) -> BitLayout | Unrecognised:
    """The BiT the SavedModel's variables make, with every weight by official name; or why they make none."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(Path(savedmodel) / "variables" / "variables"))
    keys = set(reader.get_variable_to_shape_map())
    count = 0
    while VARIABLE_KEY.format(count) in keys:
        count += 1
    if count == 0:
        return Unrecognised("its checkpoint holds no module variables (variables/<i>)", near_miss=False)
    shapes = reader.get_variable_to_shape_map()
    return recognise([(key, StoredTensor(reader, key, tuple(shapes[key])))
                      for key in (VARIABLE_KEY.format(index) for index in range(count))])


class StoredTensor:
    """A checkpoint tensor: its shape now, its values (read anew) when converted with ``np.asarray``."""

    def __init__(self, reader: Any, key: str, shape: tuple[int, ...]) -> None:
        self.reader, self.key, self.shape = reader, key, shape

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        value = self.reader.get_tensor(self.key)
        return value if dtype is None else value.astype(dtype)
