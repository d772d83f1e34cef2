"""The Python API of the exporter: ``hubedge.exporter.export(model, ...)`` does what ``hubedge export`` does.

The CLI parses its arguments into these calls and prints; scripts, notebooks and CI code call them directly.
Everything that can be refused (an unknown precision, a format/precision pair a format lacks, an option that
applies to no requested format, an empty calibration folder) is refused before any model is loaded.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from hubedge.exporter.formats import FORMATS, Format, parse_precisions, plan
from hubedge.exporter.options import INT8_CPU_PORTABLE, ExportOptions, Workspace, flag
from hubedge.exporter.pipeline import ExportResult, compute_reference, evaluation_set, export_one
from hubedge.runtimes.errors import HubedgeError

__all__ = ["ExportOptions", "ExportsFailed", "check_options", "export", "load_step", "planned_pairs"]


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
    (and say what they skip), opt-in formats (ort) left out; named formats refuse a precision they lack, before
    any work."""
    wanted = parse_precisions(precisions if isinstance(precisions, str) else ",".join(precisions))
    if formats == "all" or list(formats) == ["all"]:
        every = [fmt for fmt in FORMATS.values() if not fmt.opt_in]
        pairs = [(fmt, p) for fmt in every for p in wanted if p in fmt.floors]
        skipped = [f"{fmt.name} {p}" for fmt in every for p in wanted if p not in fmt.floors]
        if not pairs:
            raise HubedgeError(f"no format offers {', '.join(wanted)}")
        if skipped:
            progress(f"note: --format all skips what a format does not offer: {', '.join(skipped)}")
        progress(f"note: --format all leaves out {', '.join(f.name for f in FORMATS.values() if f.opt_in)}, "
                 "exported only when named")
        return pairs
    names = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    return plan([name for name in names if name], wanted)


def check_options(pairs: list[tuple[Format, str]], options: ExportOptions, verify: bool,
                  progress: Callable[[str], None]) -> None:
    """Refuses options that none of ``pairs`` takes (the formats table's ``options``), and recipes that cannot be
    verified here; says which requested formats ignore an option that others take."""
    from hubedge.exporter.quantize.calibration import check_calibration_folder

    for name in (name for name in options.changed() if name != "int8_cpu"):  # int8_cpu: its own rule, below
        takers = [f"{fmt.name} {precision}" for fmt, precision in pairs if fmt.takes(name, precision)]
        if not takers:
            offered = [f"{fmt.name} {p}" for fmt in FORMATS.values() for p in fmt.precisions if fmt.takes(name, p)]
            raise HubedgeError(f"{flag(name)} applies to {', '.join(offered)} exports only; none was asked for")
        taking_precisions = {precision for fmt, precision in pairs if fmt.takes(name, precision)}
        # the other formats at a precision that some format takes it at
        ignored = [f"{fmt.name} {precision}" for fmt, precision in pairs
                   if precision in taking_precisions and not fmt.takes(name, precision)]
        if ignored:
            progress(f"note: {flag(name)} applies to {', '.join(takers)}; {', '.join(ignored)} ignore(s) it")
    _check_int8_cpu(pairs, options.int8_cpu, verify, progress)
    _check_offload(pairs, options.require_offload)
    for fmt, precision in pairs:  # a batch some format cannot have, refused before any work
        fmt.refuse_options(precision, fmt.options_for(precision, options))
    if options.verify_cpu != "native" and verify:
        _announce_emulation(options.verify_cpu, progress)
    if any(fmt.takes("calibration_data", precision) for fmt, precision in pairs):
        check_calibration_folder(options.calibration_data)


def export(model, *, weights: str = "hub", twin_form: str = "edge", formats: str | Sequence[str] = "tflite",
           precisions: str | Sequence[str] = "none", output: str | Path = "artifacts",
           options: ExportOptions | None = None, verify: bool = True,
           progress: Callable[[str], None] | None = None,
           interrupted: Callable[[], bool] = lambda: False, job: dict | None = None,
           memory_budget: int | None = None) -> list[ExportResult]:
    """Exports ``model`` to each format at each precision, each verified against its FP32 reference.

    ``model``: a catalog name, hub handle or URL, a SavedModel directory, a BiT ``.npz``, or an already loaded
    ``hubedge.exporter.sources.LoadedModel``. ``formats``: names (or a comma list), or ``"all"``; ``precisions``:
    ``none``/``fp32``, ``fp16``, ``bf16``, ``dynamic``, ``int8`` (or a comma list). ``progress`` receives
    one line per step. An export that fails is reported through ``progress`` and the others go on; then
    :class:`ExportsFailed` carries the written results and the failures. ``interrupted`` is asked after a
    failure: a library that turned Ctrl-C into its own error must stop the run, not let it go on. ``job``, a
    catalog run's record of the job (``hubedge.exporter.zoo``), goes into each manifest as ``job``. ``memory_budget``:
    the bytes a step's peak may reach (default: what this process holds plus what the machine has available when
    the step starts); a step estimated past it is refused in one line before it starts, and loading a model
    estimated past it raises :class:`hubedge.exporter.memory_budget.MemoryRefused` (``hubedge.exporter.memory_budget``).
    Returns the results, in the order asked."""
    from hubedge.exporter import memory_budget as memory
    from hubedge.exporter.fsutil import WORK_PREFIX, ensure_writable_dir, remove_stale_work, work_prefix
    from hubedge.exporter.sources import LoadedModel, load_model

    say = progress or (lambda _: None)
    options = options if options is not None else ExportOptions()
    if not isinstance(options, ExportOptions):
        raise TypeError(f"options must be an ExportOptions, not {type(options).__name__}")
    pairs = planned_pairs(formats, precisions, say)
    check_options(pairs, options, verify, say)
    folder = ensure_writable_dir(Path(output))
    remove_stale_work(folder, say)  # first: a run refused before any work still clears a killed run's
    if not isinstance(model, LoadedModel):
        memory.check_load(str(model), memory_budget, load_step(str(model), weights))
    loaded = model if isinstance(model, LoadedModel) else load_model(str(model), weights, twin_form)
    # sized as a catalog run sized the job when it asked Ray for memory (by name or path), else from the model
    size = (0 if isinstance(model, LoadedModel) else memory.model_bytes(str(model))) or memory.model_bytes(loaded)

    def estimates_for(written: bool) -> dict[tuple[str, str], memory.Estimate]:
        return {(fmt.name, precision): memory.estimate(fmt.name, size, written, precision) for fmt, precision in pairs}

    estimates = estimates_for(memory.written_route(loaded.spec, None, options))

    def refused(fmt: Format, precision: str) -> str:
        return memory.refusal(estimates[fmt.name, precision], memory_budget,
                              f"{loaded.info.name} {fmt.name} {precision}", list(estimates.values()))

    if all(refused(fmt, precision) for fmt, precision in pairs):  # before the graph route and the reference
        failures = [(fmt.name, precision, memory.MemoryRefused(refused(fmt, precision))) for fmt, precision in pairs]
        for _, _, error in failures:
            say(f"hubedge: error: {error}")
        raise ExportsFailed([], failures)
    loaded = _choose_graph(loaded, options.graph, say)
    estimates = estimates_for(memory.written_route(loaded.spec, loaded.graph, options))  # now the route is known

    reference, shared = None, None
    if verify:
        images = evaluation_set(loaded.info.input_size)
        if job is not None:  # a catalog job: an earlier job of these weights may have recorded it
            from hubedge.exporter.verify.shared_reference import recorded_reference

            shared = recorded_reference(folder, job, images.images)
        if shared is not None:
            say(f"using the FP32 reference recorded with {shared.manifest} (same weights, tools and images)")
            reference = shared.outputs
        else:
            say(f"computing the FP32 reference on the {images.description} …")
            reference = compute_reference(loaded, images.images, say)
    results: list[ExportResult] = []
    failures: list[tuple[str, str, HubedgeError]] = []
    with tempfile.TemporaryDirectory(prefix=work_prefix(WORK_PREFIX), dir=folder) as scratch:
        work = Workspace.for_model(loaded.info.input_size, options, Path(scratch), announce=say)
        for step, (fmt, precision) in enumerate(pairs, 1):
            say(f"[{step}/{len(pairs)}] exporting {fmt.name} {precision} …")
            if why := refused(fmt, precision):  # judged again as it starts: the steps before it hold memory too
                say(f"hubedge: error: {why}")
                failures.append((fmt.name, precision, memory.MemoryRefused(why)))
                continue
            try:
                result = export_one(loaded, fmt, precision, folder, verify, reference,
                                    fmt.options_for(precision, options), work, say, job,
                                    shared.manifest if shared else None)
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


def load_step(model: str, weights: str) -> str:
    """The loading step's name in a memory refusal."""
    return f"building the seeded twin of {model}" if weights == "seeded" else f"loading {model}"


def _choose_graph(loaded, graph: str, say: Callable[[str], None]):
    """The graph route (exporter.graph.reauthor), said in one line; recognising and rebuilding a BiT takes seconds."""
    import time

    from hubedge.exporter.graph.reauthor import choose_graph, describe_route

    started = time.perf_counter()
    if graph == "auto":
        say("choosing the graph to convert (a BiT is re-authored into the edge form) …")
    loaded = choose_graph(loaded, graph)
    say(f"  {describe_route(loaded.graph)} ({time.perf_counter() - started:.1f}s)")
    return loaded


def _check_int8_cpu(pairs: list[tuple[Format, str]], choice: str, verify: bool, say: Callable[[str], None]) -> None:
    """``int8_cpu="vnni"`` only where every int8 format asked for has a VNNI-only recipe, and only where it can be
    verified (a CPU it is meant for); refused before any work otherwise."""
    from hubedge.runtimes.cpu import ARM64_CLASSES, X86_VNNI, cpu_class

    if choice == INT8_CPU_PORTABLE:
        return
    int8_formats = [fmt for fmt, precision in pairs if precision == "int8"]
    takers = [fmt.name for fmt in int8_formats if fmt.takes("int8_cpu", "int8")]
    others = [fmt.name for fmt in int8_formats if not fmt.takes("int8_cpu", "int8")]
    if others or not takers:
        offered = [fmt.name for fmt in FORMATS.values() if fmt.takes("int8_cpu", "int8")]
        raise HubedgeError(f"--int8-cpu {choice} applies to {', '.join(offered)} int8 exports only; the int8 recipe "
                           f"of {', '.join(others) or 'the formats asked for'} is right on every CPU class already "
                           "(export those without it)")
    if verify and cpu_class() not in (X86_VNNI, *ARM64_CLASSES):
        raise HubedgeError(f"--int8-cpu {choice} artifacts are right only on CPUs with VNNI (or ARM), and this is a "
                           f"{cpu_class()} CPU, so they cannot be verified here; export on such a CPU, or use the "
                           "default --int8-cpu portable")
    say(f"note: --int8-cpu {choice}: the {', '.join(takers)} int8 artifact is right only on CPUs with VNNI (and ARM); "
        "its manifest says so, and runtimes warn elsewhere")


def _check_offload(pairs: list[tuple[Format, str]], target: str | None) -> None:
    """``require_offload`` names an accelerator whose vendor tool reports on one of the formats asked for."""
    from hubedge.exporter.verify.deployability import OFFLOAD_TARGETS

    if target is not None and not any(fmt.name in OFFLOAD_TARGETS[target] for fmt, _ in pairs):
        raise HubedgeError(f"--require-offload {target} is judged on {', '.join(OFFLOAD_TARGETS[target])} artifacts "
                           "only; none was asked for")


def _announce_emulation(verify_cpu: str, say: Callable[[str], None]) -> None:
    """Says which CPU classes ``verify_cpu`` adds here; refuses when an emulator it needs is missing."""
    from hubedge.exporter.verify.cpu_emulation import classes_to_verify, emulator_for
    from hubedge.runtimes.cpu import cpu_class

    others = classes_to_verify(verify_cpu)
    if not others:
        say(f"note: --verify-cpu {verify_cpu}: this CPU is {cpu_class()}, and no other CPU class can be emulated on "
            "it; artifacts are verified on this class only, and their manifests say so")
        return
    for other in others:
        emulator = emulator_for(other)
        if isinstance(emulator, str):
            raise HubedgeError(f"--verify-cpu {verify_cpu} cannot run artifacts as {other} here: {emulator}")
        say(f"note: --verify-cpu {verify_cpu}: CPU artifacts are also verified as {other} ({emulator.description}; "
            "slow, and never timed)")
