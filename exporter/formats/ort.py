"""The ``ort`` format: the ONNX artifact in ONNX Runtime's own format, for minimal and mobile ORT builds.

Why: ONNX Runtime's mobile packages and custom minimal builds read only ORT-format files (``.ort``, a flatbuffer),
and a minimal build includes only the kernels its ``required_operators.config`` names. This format exports the
``onnx`` artifact of the same precision and options (the same graph, calibration and recipe), then converts it
with ONNX Runtime's own tool (``onnxruntime.tools.convert_onnx_models_to_ort``) in its ``Fixed`` style:
the graph optimizations are applied once, here, and saved, so a phone does not optimize at load. The conversion
targets no platform: it keeps ONNX Runtime's x86-only NCHWc layout out and leaves QDQ int8 in the portable
uint8 x int8 form, so one file serves every CPU class, and verification runs that very file on each.
The config is written beside the artifact as ``<artifact>.required_operators.config`` (pass it to ORT's
``build.py --include_ops_by_config``). The ONNX checker reads ONNX only: the ONNX graph is checked before
conversion and that result is recorded in the recipe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from exporter.formats import FormatResult
from exporter.formats import onnx as onnx_format
from exporter.options import ExportOptions, Workspace
from exporter.sources import LoadedModel
from runtimes.errors import HubedgeError

CONFIG_SUFFIX = ".required_operators.config"  # the companion: the ops (and opsets) a minimal build must include
STYLE = "Fixed"  # optimizations applied at conversion (the tool's other style defers some to the device)


def export(loaded: LoadedModel, precision: str, target: Path, options: ExportOptions,
           work: Workspace) -> FormatResult:
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(prefix="hubedge-ort-", dir=target.parent) as scratch:
        source = Path(scratch) / f"{target.stem}.onnx"
        result = onnx_format.export(loaded, precision, source, options, work)
        checker = onnx_format.full_check(source)
        if not checker["passed"]:
            raise HubedgeError(f"the ONNX graph of {target.name} is not valid ONNX ({checker['message'][:200]}); "
                               "it is not converted to the ORT format")
        converted = Path(scratch) / "converted"
        log = io.StringIO()  # the tool prints its progress: kept for an error message, not shown
        try:
            with contextlib.redirect_stdout(log), _quiet("ort_format_model.utils"):
                convert_onnx_models_to_ort(source, output_dir=converted,
                                           optimization_styles=[OptimizationStyle[STYLE]], target_platform=None)
        except Exception as error:  # ORT raises its own types (Fail, InvalidGraph...) from the session it opens
            raise HubedgeError(f"ONNX Runtime's ORT-format converter failed on {target.name}: "
                               f"{str(error).strip().splitlines()[0][:300] if str(error).strip() else error!r}") \
                from None
        ort_file = converted / f"{source.stem}.ort"
        configs = list(converted.glob("*.config"))
        if not ort_file.is_file() or len(configs) != 1:
            raise HubedgeError(f"ONNX Runtime's ORT-format converter wrote no {ort_file.name} and config: "
                               f"{log.getvalue().strip().splitlines()[-1:] or 'no output'}")
        ort_file.replace(target)
        # the tool heads the config with the scratch path it converted; the artifact's own name is what helps
        ops = [line for line in configs[0].read_text().splitlines() if line and not line.startswith("#")]
        target.with_suffix(CONFIG_SUFFIX).write_text(f"# the operators {target.name} needs in a minimal ONNX Runtime "
                                                     "build (--include_ops_by_config)\n" + "\n".join(ops) + "\n")
    recipe = {**result.recipe, "method": f"{result.recipe['method']}; converted to the ORT format "
                                         f"(onnxruntime.tools.convert_onnx_models_to_ort, {STYLE} style, "
                                         "no target platform: portable)",
              "onnx_checker_before_conversion": checker, "required_operators": target.with_suffix(CONFIG_SUFFIX).name}
    return dataclasses.replace(result, recipe=recipe)


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """The tool logs each config it writes at INFO; an export prints its own progress."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)
