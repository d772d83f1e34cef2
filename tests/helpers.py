"""What tests share beyond fixtures: tiny model specs, exporting a set of pairs, and the CPU-class helpers.

Imported by test modules and by ``conftest.py``'s fixtures; nothing here is a fixture itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

REQUIRE_ENV = "HUBEDGE_REQUIRE_CPU_EMULATION"  # .ci/run sets it: a missing emulator fails there, never skips


def tiny_spec(task: str = "classification", num_outputs: int = 10, name: str = "tiny-bit"):
    """A catalog-like spec for a BiT with one unit per stage at half width (GN's 32 groups still fit)."""
    from hubedge.exporter.sources.catalog import Architecture, ModelSpec

    arch = Architecture((1, 1, 1, 1), 0.5)
    if task == "feature_vector":
        return ModelSpec(name, f"test/{name}/1", "test", "feature_vector", arch.feature_size, "none", None, 64, arch)
    if num_outputs == 21843:  # ImageNet-21k: multi-label logits, sigmoid scores
        return ModelSpec(name, f"test/{name}/1", "test", "classification", num_outputs, "sigmoid", "imagenet21k", 64, arch)
    labels = "ilsvrc2012" if num_outputs == 1000 else None
    return ModelSpec(name, f"test/{name}/1", "test", "classification", num_outputs, "softmax", labels, 64, arch)


class LazyExports(Mapping):
    """``(format, precision) → ExportResult``, each exported (and verified) the first time it is asked for, so a
    test that needs one artifact waits for that one only. The exports share one calibration set, one reference
    and one workspace, as the pairs of one ``hubedge export`` run do."""

    def __init__(self, loaded, output: Path, pairs: Iterable[tuple[str, str]], options=None) -> None:
        from hubedge.exporter.options import ExportOptions, Workspace

        self.loaded, self.output, self.pairs = loaded, output, list(pairs)
        self.options = options if options is not None else ExportOptions()
        self.work = Workspace.for_model(loaded.info.input_size, self.options, output)
        self._done: dict[tuple[str, str], object] = {}
        self._reference = None

    def __getitem__(self, pair: tuple[str, str]):
        from hubedge.exporter.formats import FORMATS
        from hubedge.exporter.pipeline import evaluation_set, export_one

        if pair not in self.pairs:
            raise KeyError(pair)
        if pair not in self._done:
            if self._reference is None:
                images = evaluation_set(self.loaded.info.input_size)
                self._reference = self.loaded.reference().predict(images.images)
            fmt = FORMATS[pair[0]]
            self._done[pair] = export_one(self.loaded, fmt, pair[1], self.output, True, self._reference,
                                          fmt.options_for(pair[1], self.options), self.work)
        return self._done[pair]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)


def export_all(loaded, output: Path, pairs, int8_io: str | None = None, graph: str = "auto") -> dict:
    """Exports ``loaded`` to every (format, precision) in ``pairs`` now, verified, sharing one calibration set;
    ``graph`` is the graph route (exporter.graph.reauthor)."""
    from hubedge.exporter.options import ExportOptions

    exports = LazyExports(loaded, output, pairs, ExportOptions(int8_io=int8_io, graph=graph))
    return {pair: exports[pair] for pair in exports}


def cpu_has_bf16() -> bool:
    """bf16 artifacts verify only where OpenVINO has bf16 kernels; their tests skip, saying so, elsewhere."""
    import openvino as ov

    from hubedge.runtimes.openvino_runtime import cpu_has_bf16 as has_bf16

    return has_bf16(ov.Core())


def no_vnni_emulator():
    """The emulator that runs a child as ``x86-no-vnni``; None where this machine is that class itself.

    Where it is needed and missing, the test skips, naming what to install, or fails under .ci/run."""
    from hubedge.exporter.verify import cpu_emulation
    from hubedge.runtimes import cpu

    here = cpu.cpu_class()
    if here == cpu.X86_NO_VNNI:
        return None
    if here != cpu.X86_VNNI:
        pytest.skip(f"this is a {here} machine: x86 CPU classes cannot be run here")
    emulator = cpu_emulation.emulator_for(cpu.X86_NO_VNNI)
    if isinstance(emulator, str):
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {emulator}")
        pytest.skip(emulator)
    return emulator


def arm64_emulator(cpu_class: str):
    """The emulator that runs a child as arm64 class ``cpu_class`` (qemu-aarch64 and the aarch64 Python of ``make
    arm64-env``). Where it is missing the test skips, naming the command, or fails under .ci/run."""
    from hubedge.exporter.verify import cpu_emulation

    emulator = cpu_emulation.emulator_for(cpu_class)
    if isinstance(emulator, str):
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {emulator}")
        pytest.skip(emulator)
    return emulator


def emulator_runs_here() -> bool:
    """Whether this machine can run children as ``x86-no-vnni`` through the emulator (never skips)."""
    from hubedge.exporter.verify import cpu_emulation
    from hubedge.runtimes import cpu

    return cpu.cpu_class() == cpu.X86_VNNI and not isinstance(cpu_emulation.emulator_for(cpu.X86_NO_VNNI), str)
