"""The ``ort`` format: the ONNX artifact in ONNX Runtime's own format, for minimal and mobile ORT builds.

Why: ONNX Runtime's mobile packages and custom minimal builds read only ORT-format files (``.ort``, a flatbuffer),
and a minimal build includes only the kernels its ``required_operators.config`` names. This format exports the
``onnx`` artifact of the same precision and options (the same graph, calibration and recipe), then has ONNX Runtime
optimize it once and save it in its format, as ONNX Runtime's own converter does in its Fixed style
(``onnxruntime.tools.convert_onnx_models_to_ort``: all optimizations but the x86-only NCHWc layout, QDQ int8
weights kept uint8-compatible, as for no target platform). The optimized graph is what a phone runs as it is.

One setting differs from the converter, which offers no way to pass it: an int8 file is optimized with
``session.x64quantprecision=1``. The int8 kernels are chosen when the graph is optimized, so the session option
that keeps ONNX Runtime's int8 exact on x86 CPUs without VNNI (docs/portable-int8.md) must be in force then: a
file converted without it gives EfficientNet-Lite0 cosine_min 0.82 as ``x86-no-vnni`` whatever the device's session
sets, and with it the same outputs as the ``onnx`` file there. So one file is right on every CPU class, and
verification runs that very file on each. The config is written beside it as
``<artifact>.required_operators.config`` (ORT's ``build.py --include_ops_by_config``), by the converter's own
function. The ONNX checker reads ONNX only: the ONNX graph is checked before conversion, recorded in the recipe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hubedge.exporter.formats import FormatResult
from hubedge.exporter.formats import onnx as onnx_format
from hubedge.exporter.options import ExportOptions, Workspace
from hubedge.exporter.sources import LoadedModel
from hubedge.runtimes.errors import HubedgeError

CONFIG_SUFFIX = ".required_operators.config"  # the companion: the ops (and opsets) a minimal build must include
# the session settings the graph is optimized and saved under (those of the converter's Fixed style)
SAVE_SETTINGS = {"session.save_model_format": "ORT", "session.qdqisint8allowed": "0"}
INT8_SETTINGS = {"session.x64quantprecision": "1"}  # exact int8 kernels on x86 without VNNI, fixed at optimization
LEFT_OUT = ["NchwcTransformer"]  # x86-only blocked layout: a file that must run on ARM too


def export(loaded: LoadedModel, precision: str, target: Path, options: ExportOptions,
           work: Workspace) -> FormatResult:
    with tempfile.TemporaryDirectory(prefix="hubedge-ort-", dir=target.parent) as scratch:
        source = Path(scratch) / f"{target.stem}.onnx"
        result = onnx_format.export(loaded, precision, source, options, work)
        checker = onnx_format.full_check(source)
        if not checker["passed"]:
            raise HubedgeError(f"the ONNX graph of {target.name} is not valid ONNX ({checker['message'][:200]}); "
                               "it is not converted to the ORT format")
        settings = {**SAVE_SETTINGS, **(INT8_SETTINGS if precision == "int8" else {})}
        save_optimized(source, target, settings)
    write_required_operators(target)
    recipe = {**result.recipe, "method": f"{result.recipe['method']}; optimized by ONNX Runtime and saved in its "
                                         "format (the converter's Fixed style, no target platform)",
              "ort_session_settings": settings, "onnx_checker_before_conversion": checker,
              "required_operators": target.with_suffix(CONFIG_SUFFIX).name}
    return dataclasses.replace(result, recipe=recipe)


def save_optimized(source: Path, target: Path, settings: dict[str, str]) -> None:
    """``source`` optimized at ONNX Runtime's highest level (NCHWc left out) under ``settings``, saved to
    ``target`` in the ORT format."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    for key, value in settings.items():
        options.add_session_config_entry(key, value)
    try:
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"], disabled_optimizers=LEFT_OUT)
    except Exception as error:  # ORT raises its own types (Fail, InvalidGraph...) from the session
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise HubedgeError(f"ONNX Runtime could not optimize and save {target.name}: {first}") from None
    if not target.is_file() or target.read_bytes()[4:8] != b"ORTM":
        raise HubedgeError(f"ONNX Runtime wrote no ORT-format file for {target.name}")


def write_required_operators(artifact: Path) -> None:
    """The converter's config of the operators (and opsets) ``artifact`` needs, headed by the artifact's name
    (the converter heads it with the path it read, a scratch folder here)."""
    from onnxruntime.tools.ort_format_model import create_config_from_models

    config = artifact.with_suffix(CONFIG_SUFFIX)
    with _quiet("ort_format_model.utils"):  # it logs the path it wrote at INFO; the export prints its own progress
        create_config_from_models([artifact], config, False)
    ops = [line for line in config.read_text().splitlines() if line and not line.startswith("#")]
    config.write_text(f"# the operators {artifact.name} needs in a minimal ONNX Runtime build "
                      "(--include_ops_by_config)\n" + "\n".join(ops) + "\n")


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)
