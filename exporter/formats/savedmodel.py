"""The ``savedmodel`` format: the model as a hub-form TF2 SavedModel (the FP32 reference artifact).

It is the input of every other converter and what TF Serving or another TF program loads. Writing it is a
copy of the source SavedModel with hubedge's record added, so it is exactly the reference.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from exporter.formats import FormatResult
from exporter.savedmodel import write_module_info
from exporter.sources import LoadedModel


def export(loaded: LoadedModel, precision: str, target: Path, options: dict[str, Any]) -> FormatResult:
    if precision != "fp32":
        raise ValueError(f"savedmodel has no {precision}")  # the formats table refuses this earlier
    shutil.copytree(loaded.savedmodel_dir, target, dirs_exist_ok=True)
    write_module_info(target, loaded.info, loaded.weights_record())
    return FormatResult(input_shape=[None, None, None, 3], recipe={"method": "copy of the source SavedModel"},
                        tools=("tensorflow", "tensorflow-hub"))
