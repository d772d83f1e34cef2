"""The memory a step will need, estimated before it starts, so that a step that cannot fit is refused in one line
instead of being killed by the kernel's OOM killer half-way (exit 137, no message, nothing written).

A step's peak is estimated as a fixed base (the interpreter, TensorFlow and the runtimes) plus the model's fp32
size times what that step was measured to hold (benchmarks/records/): a BiT-M R50x1 21k (273 MB) exported in
4.9-5.9 GB per format; a R50x3 21k (1.38 GB) in 9.1 GB (tflite) and 6.7 GB (openvino); an onnx export of a
R101x3 21k (2.06 GB) needs 12.2 GB here and 22.9 GB in its tf2onnx child; building the seeded R152x4 21k
(4.43 GB) peaked at 17.5 GB. A single export compares the estimate with what this process
holds plus what the machine has available (``MemAvailable``, and the cgroup's limit where one is set); a catalog
run's Ray task compares it with the memory Ray reserved for it. ``--memory-budget`` replaces both.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from hubedge.exporter.fsutil import size_of
from hubedge.exporter.options import ExportOptions
from hubedge.exporter.sources.catalog import Architecture
from hubedge.runtimes.errors import HubedgeError
from hubedge.runtimes.memory import current_rss_bytes

__all__ = ["BASE", "LOAD_PER_MODEL_BYTE", "PER_MODEL_BYTE", "TFLITE", "WRITTEN_ONNX", "WRITTEN_OPENVINO",
           "WRITTEN_PER_MODEL_BYTE", "Estimate", "MemoryRefused", "available_bytes", "check_load", "estimate",
           "format_bytes", "model_bytes", "parse_size", "refusal", "step_budget", "total_bytes", "written_route"]

GiB = 2**30
BASE = 3.5 * GiB
# written from the weights, per precision: a seeded R101x3 21k (2.06 GB) exported onnx fp32, fp16 and int8 in one run
# with the machine's used memory (this process and its verification child together) at most 17.6, 20.0 and 20.0 GB
# above the idle machine (this process alone: 12.0, 13.5 and 19.3 GB); a R50x3 21k (1.38 GB) at 10.3, 13.0 and
# 14.3 GB, this process alone. Before fp16 cast its weights one at a time (hubedge.exporter.formats.onnx_fp16), the
# R101x3 was killed at 24.2 GB converting it (benchmarks/records/bit-writer.md)
WRITTEN_ONNX = {"fp32": 7.0, "fp16": 8.5, "int8": 9.0}
# openvino at every precision: a seeded R152x4 21k (4.43 GB) exported fp32, fp16 and int8 with the machine's used
# memory at most 21.0, 21.0 and 20.7 GB (3.8 and 3.7 times the model above BASE and the idle machine; NNCF's int8
# runs in this process, which peaked at 20.4 GB), a R101x3 fp32 at 10.8 GB (3.4 times); 4.25 keeps 12 % above the
# most. It was 6.5 while the FP32 reference ran all 132 images in one call, 4.7 GB more on R101x3
# (benchmarks/records/big-models.md, session 12)
WRITTEN_OPENVINO = 4.25
# onnx, ort and qnn convert in a tf2onnx child while this process holds the model and its reference: on a seeded
# R101x3 21k (2.06 GB) this process held 12.2 GB and the child alone peaked at 22.9 GB (benchmarks/records/
# big-models.md), 15.3 times the model above BASE together (8 had let the child start, and the kernel killed it)
# tflite converts in this process, which keeps some 2.2x the model after its first conversion (TensorFlow's, not freed
# by gc or malloc_trim), so a later step starts higher. A seeded R101x3 21k (2.06 GB) with the reference in chunks,
# the machine's used memory above the idle machine: fp32 as the run's only step 16.3 GB; fp16, dynamic and int8 in one
# run 17.3 GB (first), 21.9 GB (second: 8.8x the model above BASE), and int8, third, was killed by the kernel past
# 23.3 GB (over 9.5x; benchmarks/records/big-models.md, session 13): int8 is given 12x, which refuses it here
TFLITE = {"fp32": 9.0, "fp16": 9.0, "dynamic": 9.0, "int8": 12.0}
PER_MODEL_BYTE = {"tflite": TFLITE, "onnx": 15.5, "ort": 15.5, "qnn": 15.5, "openvino": 6.0, "savedmodel": 3.0}
# a BiT in hubedge's edge graph is written from its weights instead (hubedge.exporter.formats.bit_graph): no
# converter, and the weights held about once while they are written (benchmarks/records/bit-writer.md)
WRITTEN_PER_MODEL_BYTE = {"onnx": WRITTEN_ONNX, "ort": WRITTEN_ONNX, "qnn": WRITTEN_ONNX, "openvino": WRITTEN_OPENVINO}
LOAD_PER_MODEL_BYTE = 3.2  # loading or building the model: 3.5 GiB + 3.2 × 4.43 GB ≈ the 17.5 GB measured on R152x4
UNKNOWN_FORMAT_PER_MODEL_BYTE = 8.0


class MemoryRefused(HubedgeError):
    """A step whose estimated peak exceeds the memory it may use; refused before it started."""


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A step's estimated peak: ``BASE`` plus ``ratio`` times the model's fp32 bytes."""

    step: str
    model_bytes: int
    ratio: float

    @property
    def bytes(self) -> int:
        return int(BASE + self.ratio * self.model_bytes)

    def describe(self) -> str:
        return (f"about {format_bytes(self.bytes)} ({format_bytes(BASE)} + {self.ratio:g} × the model's "
                f"{format_bytes(self.model_bytes)} of fp32 weights)")


def estimate(step: str, size: int, written: bool = False, precision: str | None = None) -> Estimate:
    """The estimate for ``step``: ``"load"`` (loading or building the model) or a format's name, at ``precision``
    where the format's ratios differ by precision (None: the largest); ``written``: the format's graph is written
    from the weights, not converted (:func:`written_route`)."""
    if step == "load":
        return Estimate(step, size, LOAD_PER_MODEL_BYTE)
    ratio = (WRITTEN_PER_MODEL_BYTE.get(step) if written else None) or PER_MODEL_BYTE.get(
        step, UNKNOWN_FORMAT_PER_MODEL_BYTE)
    if isinstance(ratio, dict):
        ratio = ratio.get(precision or "", max(ratio.values()))
    return Estimate(f"{step} {precision}" if precision else step, size, ratio)


def written_route(spec, graph: dict | None, options: ExportOptions) -> bool:
    """Whether a BiT's onnx and openvino graphs will be written from its weights: once the graph route is chosen,
    as it says (``graph["edge_form"]``); before, for a catalog BiT whose route is left to choose (``--graph auto``),
    which is hubedge's own build or re-authored into it."""
    if options.graph_writer != "direct":
        return False
    if graph is not None:
        return bool(graph.get("edge_form"))
    return options.graph == "auto" and isinstance(getattr(spec, "architecture", None), Architecture)


def model_bytes(model) -> int:
    """The fp32 size of a model's weights: from the catalog's architecture for a catalog model (a name, a handle,
    or a loaded model with its spec), else the size of its files (a local SavedModel's or ``.npz``); 0 if
    unknown (no estimate is then made)."""
    from hubedge.exporter.sources import LoadedModel, catalog

    if isinstance(model, LoadedModel):
        return model.fp32_weights_bytes
    local = Path(model).expanduser()
    if local.exists():
        return size_of(local)
    spec = catalog.find(str(model))
    return 4 * catalog.parameter_count(spec) if spec is not None and spec.architecture is not None else 0


def available_bytes(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Memory a new allocation can get now: the kernel's ``MemAvailable``, or less where this process's cgroup
    (v2) sets a lower limit; None where neither can be read (not Linux)."""
    return _least(_meminfo(meminfo, "MemAvailable"), _cgroup(cgroup, free=True))


def total_bytes(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The most this process could ever hold: ``MemTotal``, or the cgroup's limit where lower."""
    return _least(_meminfo(meminfo, "MemTotal"), _cgroup(cgroup, free=False))


def _least(*figures: int | None) -> int | None:
    known = [figure for figure in figures if figure is not None]
    return min(known) if known else None


def _meminfo(meminfo: Path, field: str) -> int | None:
    try:
        found = re.search(rf"^{field}:\s+(\d+) kB", meminfo.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


def _cgroup(cgroup: Path, free: bool) -> int | None:
    """A cgroup v2 memory limit (what is left of it, with ``free``); None where none is set."""
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if not limit.isdigit():
            return None
        return max(0, int(limit) - int((cgroup / "memory.current").read_text().strip())) if free else int(limit)
    except (OSError, ValueError):
        return None


def step_budget(budget: int | None) -> tuple[int | None, str]:
    """The peak a step may reach, and where that figure comes from: ``budget`` as given, else what this process
    holds plus what the machine has available now; (None, why) where it cannot be known."""
    if budget is not None:
        return budget, f"the budget given is {format_bytes(budget)}"
    available = available_bytes()
    if available is None:
        return None, "the available memory cannot be read here"
    # what this process holds is part of any peak it reaches; mapped files count in both, so never past the total
    limit = min(available + current_rss_bytes(), total_bytes() or available)
    return limit, f"{format_bytes(limit)} is available (free memory and what this process holds)"


def refusal(needed: Estimate, budget: int | None, what: str, fits: list[Estimate] = ()) -> str:
    """Why ``what`` must not start ('' when it fits or nothing can be judged), with what would fit."""
    limit, source = step_budget(budget)
    if limit is None or needed.model_bytes <= 0 or needed.bytes <= limit:
        return ""
    room = [other.step for other in fits if other.bytes <= limit]
    instead = (f"these fit: {', '.join(room)}" if room else
               f"run it on a machine with {format_bytes(needed.bytes)} free")
    return (f"{what} refused before it started: it needs {needed.describe()}, and {source}; {instead} "
            "(--memory-budget SIZE sets the budget)")


def check_load(model, budget: int | None, what: str) -> None:
    """Refuses loading (or building) ``model`` when its estimated peak cannot fit, before anything is read."""
    if why := refusal(estimate("load", model_bytes(model)), budget, what):
        raise MemoryRefused(why)


def format_bytes(count: float) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.0f} MB"


def parse_size(text: str) -> int:
    """``20GB``, ``512MB``, ``1.5G`` or a number of bytes; decimal units (GB = 10⁹ bytes), GiB and MiB binary."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?[bB]?)?\s*", text)
    if not found:
        raise ValueError(f"{text!r} is not a size: give it as 20GB, 512MB or a number of bytes")
    unit = (found.group(2) or "").upper().rstrip("B")
    scale = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}[unit]
    return int(float(found.group(1)) * scale)
