"""Latency against agreement, one point per artifact and device, the Pareto front marked.

The picture answers the deployment question directly: which artifacts are worth shipping, i.e. which ones no
other artifact beats on both speed and agreement with the FP32 reference. One panel per model, because
latencies and agreements of different models do not compare.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hubedge.benchmarks.report import weights_label
from hubedge.runtimes.errors import HubedgeError

__all__ = ["FRONT_COLOUR", "MARKERS", "POINT_COLOUR", "REFERENCE_COLOUR", "agreement_metric", "pareto_front",
    "require_matplotlib", "write_plot"]

POINT_COLOUR = "#1f77b4"
FRONT_COLOUR = "#d62728"
REFERENCE_COLOUR = "#2ca02c"
MARKERS = {"tflite": "o", "onnx": "s", "openvino": "^", "qnn": "D", "savedmodel": "*", "tf-reference": "*"}


def require_matplotlib() -> None:
    """Fails before a long benchmark run, not after it, when the plot cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise HubedgeError("--plot needs matplotlib: pip install 'hubedge[plot]'") from None


def agreement_metric(task: str) -> tuple[str, str]:
    """The agreement figure on the y axis: top-1 for classifiers, mean cosine for feature vectors."""
    return ("top1", "top-1 agreement with FP32 reference") if task == "classification" else \
        ("cosine", "mean cosine with FP32 reference")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower-or-equal latency and higher-or-equal agreement,
    strictly better in one. Returned in order of latency."""
    front = []
    for i, (latency, agreement) in enumerate(points):
        dominated = any(
            other_latency <= latency and other_agreement >= agreement
            and (other_latency < latency or other_agreement > agreement)
            for j, (other_latency, other_agreement) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _label(row: dict[str, Any]) -> str:
    if row.get("reference"):
        return "TF reference"
    return f"{row['format']} {row['precision']} ({row['device']})"


def write_plot(report: dict[str, Any], path: str | Path) -> None:
    """Draws the report's measured rows to ``path`` (PNG); rows that did not run are listed, not drawn."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    models: dict[str, list[dict[str, Any]]] = {}
    for row in report["rows"]:
        models.setdefault(row["model"], []).append(row)
    figure, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 5.5), squeeze=False)
    for axis, (model, rows) in zip(axes[0], models.items()):
        measured = [row for row in rows if row["status"] == "ok"]
        task = "classification" if measured and "top1" in measured[0]["agreement"] else "feature_vector"
        key, axis_label = agreement_metric(task)
        points = [(row["latency_ms"]["p50"], row["agreement"][key]) for row in measured]
        for row, (latency, agreement) in zip(measured, points):
            colour = REFERENCE_COLOUR if row.get("reference") else POINT_COLOUR
            axis.scatter([latency], [agreement], s=90, color=colour, marker=MARKERS.get(row["format"], "o"), zorder=3)
            axis.annotate(_label(row), (latency, agreement), textcoords="offset points", xytext=(6, 4), fontsize=8)
        front = pareto_front(points)
        if front:
            axis.step([points[i][0] for i in front], [points[i][1] for i in front], where="post",
                      color=FRONT_COLOUR, linewidth=1.5, zorder=2, label="Pareto front")
            axis.scatter([points[i][0] for i in front], [points[i][1] for i in front], s=220, facecolors="none",
                         edgecolors=FRONT_COLOUR, linewidths=2, zorder=4)
            axis.legend(loc="lower right")
        absent = [row for row in rows if row["status"] != "ok"]
        weights = weights_label(rows[0]["weights"])
        axis.set_title(f"{model} ({weights})" + (f"\n{len(absent)} row(s) not measured: see the table" if absent else ""),
                       fontsize=10)
        axis.set_xscale("log")
        axis.set_xlabel("p50 latency, batch 1 (ms, log scale)")
        axis.set_ylabel(axis_label)
        axis.grid(True, which="both", alpha=0.3)
    machine = report["machine"]
    figure.suptitle(f"hubedge bench: {machine['cpu']} ({machine['cores']} cores, threads {machine['threads']})",
                    fontsize=11)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        figure.savefig(partial, dpi=100, format="png")
        os.replace(partial, path)
    finally:
        plt.close(figure)
        partial.unlink(missing_ok=True)
