"""What a user can set about an export (``ExportOptions``), and what one export run shares between its formats
(``Workspace``).

Format modules receive both: ``export(loaded, precision, target, options, work) -> FormatResult``. Which format
takes which option is declared in the formats table (``Format.options``); the API refuses an option no requested
format takes before any model is loaded, and hands each format only the options it takes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from hubedge.exporter.quantize.accuracy_target import AccuracyTarget
from hubedge.runtimes.cpu import ALL_CLASSES
from hubedge.runtimes.errors import InvalidInputError, UnsupportedError

__all__ = ["ExportOptions", "GENERAL_OPTIONS", "GRAPHS", "GRAPH_WRITERS", "INT8_CPUS", "INT8_CPU_PORTABLE",
           "INT8_CPU_VNNI", "MAX_FIXED_BATCH", "OFFLOADS", "INT8_FALLBACKS", "INT8_IO_CHOICES",
           "ONNX_EXTERNAL_DATA_ABOVE", "TFLITE_BUFFER_OFFSET_ABOVE", "TFLITE_INT8_RECIPES", "VERIFY_CPUS", "Workspace",
           "flag"]

INT8_IO_CHOICES = ("int8", "uint8")  # tflite int8 I/O: integer in and out, or raw uint8 pixels in, float out
TFLITE_INT8_RECIPES = ("xnnpack", "full")
# int8 recipes by the CPUs they must be right on: "portable" (every class; the default) or "vnni" (the recipe that
# is closest to FP32 on x86 CPUs with VNNI and ARM, and saturates on x86 without VNNI). Only openvino has two.
INT8_CPU_PORTABLE, INT8_CPU_VNNI = "portable", "vnni"
INT8_CPUS = (INT8_CPU_PORTABLE, INT8_CPU_VNNI)
GRAPHS = ("auto", "as-is", "verbatim")
# how a BiT in hubedge's edge graph becomes ONNX and OpenVINO: written from its weights, or converted
GRAPH_WRITERS = ("direct", "converter")
# this CPU alone, or also every other class it can be emulated as; or a comma list of classes (checked against what
# this machine can emulate by exporter.verify.cpu_emulation.classes_to_verify)
VERIFY_CPUS = ("native", "all")
# int8 that misses its verification floor: search for the fewest layers float that meet it, or fail
INT8_FALLBACKS = ("search", "none")

# the largest fixed batch offered (--batch N): 1 is what mobile accelerators (NNAPI, CoreML) need; larger fixed
# batches are for servers and GPUs (TensorRT builds its engine for one shape)
MAX_FIXED_BATCH = 256

# --require-offload: the accelerator an artifact must be fully taken by, in its vendor's tool
# (exporter.verify.deployability)
OFFLOADS = ("nnapi", "coreml", "gpu")

# an ONNX file keeps its weights in a data file beside it from this many bytes of weights on (and no later: a
# protobuf message cannot reach 2 GiB, and the graph, small tensors and metadata need room beside the weights;
# exporter.formats.onnx_storage)
ONNX_EXTERNAL_DATA_ABOVE = 2**31 - 2**28  # 1.88 GB (1.75 GiB)
# a .tflite file keeps its weights after the flatbuffer, at offsets, from this many bytes of weights on: a flatbuffer
# cannot address 2 GiB, and the graph and metadata need room beside the weights (exporter.formats.tflite_offset)
TFLITE_BUFFER_OFFSET_ABOVE = 2**31 - 2**28

# options every format takes; the others are declared per format and precision in the formats table
GENERAL_OPTIONS = ("graph", "verify_cpu")


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """How to export, beyond which model, formats and precisions. An unknown field is a ``TypeError``.

    Attributes:
        calibration_data: folder of images that calibrate int8 (default: the bundled photos).
        calibration_size: calibration samples (default: one per photo, at least 64).
        int8_io: tflite int8 only: ``int8`` integer input and output, ``uint8`` raw camera pixels in.
        tflite_int8_recipe: ``xnnpack`` keeps the normalization ops XNNPACK cannot run in int8 float;
            ``full`` quantizes every op.
        int8_cpu: ``portable`` (right on every CPU class) or ``vnni`` (openvino: full 8-bit weights, right
            only on CPUs with VNNI and on ARM).
        graph: ``auto`` re-authors a recognised BiT into the edge graph; ``as-is`` converts the module's own,
            its 5-D GroupNorms computed in 4-D where that proves equal; ``verbatim`` converts it untouched.
        verify_cpu: ``native`` verifies on this CPU; ``all`` also as each CPU class it can emulate (the other x86
            class, and both arm64 classes once ``make arm64-env`` has prepared them); or a comma list of those
            classes (``x86-no-vnni``, ``arm64-dotprod,arm64-no-dotprod``).
        accuracy_target: int8: the agreement an accuracy-aware artifact must reach on the calibration-side
            tuning split (``hubedge.exporter.quantize.accuracy``), as an ``AccuracyTarget`` or its text
            (``"sqnr_db=22"``); None exports plain int8.
        batch: onnx, ort and openvino: fix the batch dimension of the artifact to this many images (1 to
            ``MAX_FIXED_BATCH``): static shapes everywhere in the file, as ONNX Runtime Mobile's NNAPI and CoreML
            providers need (batch 1) and TensorRT prefers. None keeps the dynamic batch. tflite and qnn take 1,
            their only batch.
        require_offload: ``nnapi`` or ``coreml`` (onnx), ``gpu`` (tflite): fail an export whose deployability
            report (``hubedge.exporter.verify.deployability``) does not give that accelerator the vendor tool's top
            verdict.
        int8_fallback: int8 without an accuracy target: when plain int8 misses its verification floor,
            ``search`` exports the fewest layers float that meet the floor instead, under the plain int8 name
            (``hubedge.exporter.verify.fallback``); ``none`` fails, writing nothing.
        graph_writer: onnx, ort, qnn and openvino: ``direct`` writes a BiT in hubedge's edge graph straight from its
            weights (``hubedge.exporter.formats.bit_graph``), in the converters' ops, at a fraction of their memory;
            ``converter`` converts it with tf2onnx and ``ov.convert_model``, as any other model is.
        onnx_external_data_above: onnx and qnn: from this many bytes of weights on, they go in a data file beside
            the ``.onnx`` file (``<artifact>.onnx.data``), as files past protobuf's 2 GiB limit must; 0 always.
            At most (and by default) ``ONNX_EXTERNAL_DATA_ABOVE``.
        tflite_buffer_offset_above: tflite fp32, fp16 and dynamic: from this many bytes of weights on (the model's
            fp32 weights, halved for fp16, quartered for dynamic), they follow the flatbuffer at offsets (the
            buffer-offset layout), as files past the flatbuffer's 2 GiB limit must; 0 always. At most (and by
            default) ``TFLITE_BUFFER_OFFSET_ABOVE``.
    """

    calibration_data: str | Path | None = None
    calibration_size: int | None = None
    int8_io: Literal["int8", "uint8"] | None = None
    tflite_int8_recipe: Literal["xnnpack", "full"] = "xnnpack"
    int8_cpu: Literal["portable", "vnni"] = "portable"
    graph: Literal["auto", "as-is", "verbatim"] = "auto"
    verify_cpu: str = "native"
    accuracy_target: AccuracyTarget | str | None = None
    int8_fallback: Literal["search", "none"] = "search"
    batch: int | None = None
    require_offload: Literal["nnapi", "coreml", "gpu"] | None = None
    onnx_external_data_above: int = ONNX_EXTERNAL_DATA_ABOVE
    tflite_buffer_offset_above: int = TFLITE_BUFFER_OFFSET_ABOVE
    graph_writer: Literal["direct", "converter"] = "direct"

    def __post_init__(self) -> None:
        if isinstance(self.accuracy_target, str):
            object.__setattr__(self, "accuracy_target", AccuracyTarget.parse(self.accuracy_target))
        elif self.accuracy_target is not None and not isinstance(self.accuracy_target, AccuracyTarget):
            raise InvalidInputError(f"accuracy_target must be an AccuracyTarget or its text; got "
                                    f"{type(self.accuracy_target).__name__}")
        for name, choices in (("int8_io", (None, *INT8_IO_CHOICES)), ("tflite_int8_recipe", TFLITE_INT8_RECIPES),
                              ("int8_cpu", INT8_CPUS), ("graph", GRAPHS), ("graph_writer", GRAPH_WRITERS),
                              ("int8_fallback", INT8_FALLBACKS), ("require_offload", (None, *OFFLOADS))):
            if getattr(self, name) not in choices:
                raise UnsupportedError(f"{name} must be one of {', '.join(map(str, choices))}; got "
                                       f"{getattr(self, name)!r}")
        if not isinstance(self.verify_cpu, str) or (self.verify_cpu not in VERIFY_CPUS and not all(
                name.strip() in ALL_CLASSES for name in self.verify_cpu.split(","))):
            raise UnsupportedError(f"verify_cpu must be native, all, or a comma list of CPU classes "
                                   f"({', '.join(ALL_CLASSES)}); got {self.verify_cpu!r}")
        if self.batch is not None and (not isinstance(self.batch, int) or isinstance(self.batch, bool)
                                       or not 1 <= self.batch <= MAX_FIXED_BATCH):
            raise UnsupportedError(f"batch takes a number of images from 1 (what mobile accelerators need) to "
                                   f"{MAX_FIXED_BATCH}; got {self.batch!r}")
        for name, most, where, limit in (
                ("onnx_external_data_above", ONNX_EXTERNAL_DATA_ABOVE, "in a data file", "protobuf's"),
                ("tflite_buffer_offset_above", TFLITE_BUFFER_OFFSET_ABOVE, "after the flatbuffer", "the flatbuffer's")):
            above = getattr(self, name)
            if not isinstance(above, int) or isinstance(above, bool) or not 0 <= above <= most:
                raise InvalidInputError(f"{name} takes a number of bytes from 0 (weights always {where}) to {most} "
                                        f"(the default, under {limit} 2 GiB limit); got {above!r}")
        if self.calibration_size is not None and (not isinstance(self.calibration_size, int)
                                                  or isinstance(self.calibration_size, bool)
                                                  or self.calibration_size < 1):
            raise InvalidInputError(f"calibration_size must be a positive integer; got {self.calibration_size!r}")

    def changed(self) -> list[str]:
        """The fields set away from their defaults, in declaration order."""
        defaults = ExportOptions()
        return [field.name for field in dataclasses.fields(self) if getattr(self, field.name) != getattr(defaults,
                                                                                                     field.name)]

    def without(self, names: list[str]) -> ExportOptions:
        """These options with ``names`` back at their defaults."""
        defaults = ExportOptions()
        return dataclasses.replace(self, **{name: getattr(defaults, name) for name in names})


def flag(option: str) -> str:
    """The CLI flag of an ``ExportOptions`` field, for messages both kinds of caller can read."""
    return f"{option} (--{option.replace('_', '-')})"


@dataclasses.dataclass
class Workspace:
    """What the formats of one export run share: not settings, but work done once.

    ``calibration()`` builds the calibration set on first use; ``scratch`` is a folder for intermediate files
    (None: beside the artifact being written); ``memo`` keeps results one format makes and another reuses
    (the fp32 ONNX that onnx and qnn both start from)."""

    calibration: Callable[[], Any]
    scratch: Path | None = None
    memo: dict[Any, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def for_model(cls, input_size: int, options: ExportOptions, scratch: Path | None = None,
                  announce: Callable[[str], None] | None = None) -> Workspace:
        """A workspace whose calibration set follows ``options``, built at ``input_size`` when first asked for."""

        @functools.cache
        def calibration():
            from hubedge.exporter.quantize.calibration import build_calibration_set

            if announce is not None:
                announce(f"preparing the calibration set at {input_size}px …")
            return build_calibration_set(options.calibration_data, input_size, options.calibration_size)

        return cls(calibration, scratch)
