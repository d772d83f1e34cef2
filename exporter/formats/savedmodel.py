"""The ``savedmodel`` format: the model as a hub-form TF2 SavedModel (the FP32 reference artifact).

It is what TF Serving or another TF program loads. Writing it is a copy of the SavedModel the other converters
read, with hubedge's record added: the source module itself (exactly the reference), or, for a re-authored BiT,
its edge-form rebuild (``hubedge.exporter.graph.reauthor``), verified against the source like every other artifact.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hubedge.exporter.formats import FormatResult
from hubedge.exporter.options import ExportOptions, Workspace
from hubedge.exporter.sources.savedmodel import read_module_info, write_module_info
from hubedge.exporter.sources import LoadedModel


def export(loaded: LoadedModel, precision: str, target: Path, options: ExportOptions,
           work: Workspace) -> FormatResult:
    if precision != "fp32":
        raise ValueError(f"savedmodel has no {precision}")  # the formats table refuses this earlier
    shutil.copytree(loaded.export_savedmodel, target, dirs_exist_ok=True)
    # the record inside says what these variables are: a rebuild's says "re-authored" (or "rewritten") and where from
    rebuilt = read_module_info(loaded.export_dir) if loaded.export_dir else None
    write_module_info(target, loaded.info, rebuilt["weights"] if rebuilt else loaded.weights_record())
    copied = ("the source SavedModel" if not loaded.export_dir else "the re-authored edge-form SavedModel"
              if loaded.graph and loaded.graph["route"] == "re-authored" else
              "the source's graph with its 5-D GroupNorms in 4-D")
    return FormatResult(input_shape=[None, None, None, 3], recipe={"method": f"copy of {copied}"},
                        tools=("tensorflow", "tensorflow-hub"))
