"""The Python API of the exporter: ``exporter.export(model, ...)`` does what ``hubedge export`` does.

The CLI parses its arguments into these calls and prints; scripts, notebooks and CI code call them directly.
Everything that can be refused (an unknown precision, a format/precision pair a format lacks, an option that
applies to no requested format, an empty calibration folder) is refused before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from exporter.formats import FORMATS, INT8_CPU_PORTABLE, INT8_CPU_VNNI, Format, parse_precisions, plan
from exporter.formats.tflite import INT8_IO_CHOICES
from exporter.pipeline import ExportResult, evaluation_set, export_one
from runtimes.errors import HubedgeError, InvalidInputError, UnsupportedError

TFLITE_INT8_RECIPES = ("xnnpack", "full")
GRAPHS = ("auto", "as-is")
VERIFY_CPUS = ("native", "all")


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
        graph: ``auto`` re-authors a recognised BiT into the edge graph; ``as-is`` converts the module's own.
        verify_cpu: ``native`` verifies on this CPU; ``all`` also as each CPU class it can emulate.
    """

    calibration_data: str | Path | None = None
    calibration_size: int | None = None
    int8_io: Literal["int8", "uint8"] | None = None
    tflite_int8_recipe: Literal["xnnpack", "full"] = "xnnpack"
    int8_cpu: Literal["portable", "vnni"] = "portable"
    graph: Literal["auto", "as-is"] = "auto"
    verify_cpu: Literal["native", "all"] = "native"

    def __post_init__(self) -> None:
        for name, choices in (("int8_io", (None, *INT8_IO_CHOICES)), ("tflite_int8_recipe", TFLITE_INT8_RECIPES),
                              ("int8_cpu", (INT8_CPU_PORTABLE, INT8_CPU_VNNI)), ("graph", GRAPHS),
                              ("verify_cpu", VERIFY_CPUS)):
            if getattr(self, name) not in choices:
                raise UnsupportedError(f"{name} must be one of {', '.join(map(str, choices))}; got "
                                       f"{getattr(self, name)!r}")
        if self.calibration_size is not None and (not isinstance(self.calibration_size, int)
                                                  or self.calibration_size < 1):
            raise InvalidInputError(f"calibration_size must be a positive integer; got {self.calibration_size!r}")


class ExportsFailed(HubedgeError):
    """Some of the requested exports failed; the others were written. ``results`` holds those, ``failures``
    the ``(format, precision, error)`` of each that failed."""

    def __init__(self, results: list[ExportResult], failures: list[tuple[str, str, HubedgeError]]) -> None:
        names = ", ".join(f"{fmt} {precision}" for fmt, precision, _ in failures)
        super().__init__(f"{len(failures)} export(s) failed: {names}")
        self.results, self.failures = results, failures


def planned_pairs(formats: str | Sequence[str], precisions: str | Sequence[str],
                  progress: Callable[[str], None]) -> list[tuple[Format, str]]:
    """The (format, precision) pairs to export: ``"all"`` formats export each requested precision they offer
    (and say what they skip); named formats refuse a precision they lack, before any work."""
    wanted = parse_precisions(precisions if isinstance(precisions, str) else ",".join(precisions))
    if formats == "all" or list(formats) == ["all"]:
        pairs = [(fmt, p) for fmt in FORMATS.values() for p in wanted if p in fmt.floors]
        skipped = [f"{fmt.name} {p}" for fmt in FORMATS.values() for p in wanted if p not in fmt.floors]
        if not pairs:
            raise HubedgeError(f"no format offers {', '.join(wanted)}")
        if skipped:
            progress(f"note: --format all skips what a format does not offer: {', '.join(skipped)}")
        return pairs
    names = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    return plan([name for name in names if name], wanted)


def check_options(pairs: list[tuple[Format, str]], options: ExportOptions, verify: bool,
                  progress: Callable[[str], None]) -> None:
    """Refuses options that apply to none of ``pairs``, and recipes that cannot be verified here."""
    from exporter.calibration import check_calibration_folder

    int8_formats = [fmt.name for fmt, precision in pairs if precision == "int8"]
    if options.int8_io and "tflite" not in int8_formats:
        raise HubedgeError("--int8-io applies to tflite int8 exports; add --format tflite --quantize int8")
    if options.tflite_int8_recipe != "xnnpack" and "tflite" not in int8_formats:
        raise HubedgeError("the tflite int8 recipe (--tflite-int8-recipe) applies to tflite int8 exports only")
    _check_int8_cpu(options.int8_cpu, int8_formats, verify, progress)
    if options.verify_cpu == "all" and verify:
        _announce_emulation(progress)
    if int8_formats:
        check_calibration_folder(options.calibration_data)
    elif options.calibration_data or options.calibration_size:
        progress("note: calibration data and size only matter for int8 exports; ignored")


def export(model, *, weights: str = "hub", twin_form: str = "edge", formats: str | Sequence[str] = "tflite",
           precisions: str | Sequence[str] = "none", output: str | Path = "artifacts",
           options: ExportOptions | None = None, verify: bool = True,
           progress: Callable[[str], None] | None = None,
           interrupted: Callable[[], bool] = lambda: False) -> list[ExportResult]:
    """Exports ``model`` to each format at each precision, each verified against its FP32 reference.

    ``model``: a catalog name, hub handle or URL, a SavedModel directory, a BiT ``.npz``, or an already loaded
    ``exporter.sources.LoadedModel``. ``formats``: names (or a comma list), or ``"all"``; ``precisions``:
    ``none``/``fp32``, ``fp16``, ``bf16``, ``dynamic``, ``int8`` (or a comma list). ``progress`` receives
    one line per step. An export that fails is reported through ``progress`` and the others go on; then
    :class:`ExportsFailed` carries the written results and the failures. ``interrupted`` is asked after a
    failure: a library that turned Ctrl-C into its own error must stop the run, not let it go on.
    Returns the results, in the order asked."""
    from exporter.fsutil import ensure_writable_dir
    from exporter.sources import LoadedModel, load_model

    say = progress or (lambda _: None)
    options = options if options is not None else ExportOptions()
    if not isinstance(options, ExportOptions):
        raise TypeError(f"options must be an ExportOptions, not {type(options).__name__}")
    pairs = planned_pairs(formats, precisions, say)
    check_options(pairs, options, verify, say)
    folder = ensure_writable_dir(Path(output))
    loaded = model if isinstance(model, LoadedModel) else load_model(str(model), weights, twin_form)
    loaded = _choose_graph(loaded, options.graph, say)

    @functools.cache
    def calibration():
        from exporter.calibration import build_calibration_set

        say(f"preparing the calibration set at {loaded.info.input_size}px …")
        return build_calibration_set(options.calibration_data, loaded.info.input_size, options.calibration_size)

    reference = None
    if verify:
        images = evaluation_set(loaded.info.input_size, loaded.weights.get("source", ""))
        say(f"computing the FP32 reference on the {images.description} …")
        reference = loaded.reference().predict(images.images)
    results: list[ExportResult] = []
    failures: list[tuple[str, str, HubedgeError]] = []
    with tempfile.TemporaryDirectory(prefix=".hubedge-work-", dir=folder) as scratch:
        settings = {"calibration": calibration, "int8_io": options.int8_io, "scratch": scratch,
                    "int8_recipe": options.tflite_int8_recipe, "int8_cpu": options.int8_cpu,
                    "verify_cpu": options.verify_cpu}
        for step, (fmt, precision) in enumerate(pairs, 1):
            say(f"[{step}/{len(pairs)}] exporting {fmt.name} {precision} …")
            try:
                result = export_one(loaded, fmt, precision, folder, verify, reference, settings)
            except HubedgeError as error:
                if interrupted():
                    raise KeyboardInterrupt from None
                say(f"hubedge: error: {error}")
                failures.append((fmt.name, precision, error))
                continue
            results.append(result)
            say(f"[{step}/{len(pairs)}] {result.artifact.name} written in {result.seconds:.0f}s")
    if failures:
        raise ExportsFailed(results, failures)
    return results


def _choose_graph(loaded, graph: str, say: Callable[[str], None]):
    """The graph route (exporter.reauthor), said in one line; recognising and rebuilding a BiT takes seconds."""
    import time

    from exporter.reauthor import choose_graph, describe_route

    started = time.perf_counter()
    if graph == "auto":
        say("choosing the graph to convert (a BiT is re-authored into the edge form) …")
    loaded = choose_graph(loaded, graph)
    say(f"  {describe_route(loaded.graph)} ({time.perf_counter() - started:.1f}s)")
    return loaded


def _check_int8_cpu(choice: str, int8_formats: list[str], verify: bool, say: Callable[[str], None]) -> None:
    """``int8_cpu="vnni"`` only where a format has a VNNI-only recipe, and only where it can be verified (a CPU
    it is meant for); refused before any work otherwise."""
    from exporter.formats import INT8_CPU_CHOICES
    from runtimes.cpu import ARM64, X86_VNNI, cpu_class

    if choice == INT8_CPU_PORTABLE:
        return
    takers = [name for name in int8_formats if choice in INT8_CPU_CHOICES.get(name, ())]
    others = [name for name in int8_formats if name not in takers]
    if not takers or others:
        raise HubedgeError(f"--int8-cpu {choice} applies to {', '.join(INT8_CPU_CHOICES)} int8 exports only; the "
                           f"int8 recipe of {', '.join(others) or 'the formats asked for'} is right on every CPU class "
                           "already (export those without it)")
    if verify and cpu_class() not in (X86_VNNI, ARM64):
        raise HubedgeError(f"--int8-cpu {choice} artifacts are right only on CPUs with VNNI (or ARM), and this is a "
                           f"{cpu_class()} CPU, so they cannot be verified here; export on such a CPU, or use the "
                           "default --int8-cpu portable")
    say(f"note: --int8-cpu {choice}: the {', '.join(takers)} int8 artifact is right only on CPUs with VNNI (and ARM); "
        "its manifest says so, and runtimes warn elsewhere")


def _announce_emulation(say: Callable[[str], None]) -> None:
    """Says which CPU classes ``verify_cpu="all"`` adds here; refuses when an emulator it needs is missing."""
    from exporter.cpu_emulation import emulator_for, other_classes
    from runtimes.cpu import cpu_class

    others = other_classes()
    if not others:
        say(f"note: --verify-cpu all: this CPU is {cpu_class()}, and no other CPU class can be emulated on it (QEMU "
            "has no AVX-512); artifacts are verified on this class only, and their manifests say so")
        return
    for other in others:
        emulator = emulator_for(other)
        if isinstance(emulator, str):
            raise HubedgeError(f"--verify-cpu all cannot run artifacts as {other} here: {emulator}")
        say(f"note: --verify-cpu all: CPU artifacts are also verified as {other} ({emulator.description}; slow, "
            "and never timed)")
