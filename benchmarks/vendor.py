"""The runtimes' own timers, run on the same artifact and thread count as a check on ``hubedge bench``.

``benchmark_app`` ships with openvino and ``litert-benchmark`` with ai-edge-litert. If our p50 through
``predict()`` lands far from theirs, either our timing or our runtime settings are wrong (docs/stack-facts.md,
"Timing": within about 10 %). onnxruntime's wheel ships no timer (``onnxruntime_perf_test`` is a source build), so
ONNX rows say so instead of a figure.

Our side of the comparison is timed again around each run of the tool, not taken from the row's own timing:
the row was timed tens of seconds earlier, and a busy or throttled machine changes speed over such spans by more
than the tolerance. Even two steady brackets do not prove the machine kept its speed *during* the tool's run
(it can slow down and recover in between), so the tool runs in ``ROUNDS`` rounds, each bracketed by our timing,
and the gap is the median over the steady rounds (brackets within the tolerance). Too few steady rounds, or
steady rounds that disagree, give no verdict (``benchmarks/records/published-graph.md``, item 4).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TOOLS = {"litert": "litert-benchmark", "openvino": "benchmark_app"}
TIMEOUT_S = 600
TOLERANCE = 0.10  # docs/stack-facts.md, "Timing": our p50 within about 10 % of the runtime's own timer
ROUNDS = 3  # tool runs per check, each between two timings of ours
STEADY_NEEDED = 2  # steady rounds a verdict needs: one round alone can fall on a slow spell of the machine


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name  # the venv's own copy, even when the venv is not activated
    return str(beside) if beside.is_file() else shutil.which(name)


def _litert(tool: str, artifact: Path, threads: int, runs: int, warmup: int, side: int, folder: Path,
            precision: str = "fp32") -> dict:
    result = folder / "litert.json"
    subprocess.run([tool, "--model", str(artifact), "--num_threads", str(threads), "--num_runs", str(runs),
                    "--warmup_runs", str(warmup), "--result_json", str(result)],
                   check=True, capture_output=True, timeout=TIMEOUT_S)
    latency = json.loads(result.read_text())["latency"]
    return {"p50_ms": float(latency["median_ms"]), "mean_ms": float(latency["avg_ms"])}


def _openvino(tool: str, artifact: Path, threads: int, runs: int, warmup: int, side: int, folder: Path,
              precision: str = "fp32") -> dict:
    # the adapter's settings: one synchronous request, f32 inference precision (bf16 for a bf16 artifact),
    # pinned threads, batch 1
    subprocess.run([tool, "-m", str(artifact), "-d", "CPU", "-hint", "none", "-nstreams", "1", "-nthreads",
                    str(threads), "-api", "sync", "-niter", str(runs), "-shape", f"[1,{side},{side},3]",
                    "-infer_precision", "bf16" if precision == "bf16" else "f32", "-report_type", "no_counters",
                    "-report_folder", str(folder), "-json_stats"], check=True, capture_output=True, timeout=TIMEOUT_S)
    results = json.loads((folder / "benchmark_report.json").read_text())["execution_results"]
    return {"p50_ms": float(results["latency (ms)"]), "mean_ms": float(results["avg latency"])}


RUNNERS = {"litert": _litert, "openvino": _openvino}


def vendor_timing(row: dict[str, Any], threads: int, runs: int, warmup: int, side: int,
                  ours_now: Callable[[], float] | None = None) -> dict[str, Any]:
    """The vendor timer's figures for one measured CPU row, with the gap to ours; or why there are none.
    ``ours_now`` times our p50 afresh, around each of the tool's rounds (without it, the row's own p50 is set
    against one run of the tool, and no verdict is given)."""
    runtime = row["runtime"]
    if runtime not in TOOLS:
        return {"tool": "", "reason": f"no timer of its own ships with {runtime}'s wheel"}
    tool = _tool(TOOLS[runtime])
    if tool is None:
        return {"tool": TOOLS[runtime], "reason": f"{TOOLS[runtime]} is not on PATH"}
    ours = [ours_now()] if ours_now else []
    theirs: list[dict] = []
    for _ in range(ROUNDS if ours_now else 1):
        with tempfile.TemporaryDirectory(prefix="hubedge-vendor-") as folder:
            try:
                theirs.append(RUNNERS[runtime](tool, Path(row["artifact"]), threads, runs, warmup, side,
                                               Path(folder), row.get("precision", "fp32")))
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, ValueError,
                    KeyError) as error:
                stderr = getattr(error, "stderr", b"") or b""
                last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [str(error)]
                return {"tool": TOOLS[runtime], "reason": f"{TOOLS[runtime]} failed: {last[0][:200]}"}
        if ours_now:
            ours.append(ours_now())
    figures = {"tool": TOOLS[runtime], "p50_ms": round(statistics.median(t["p50_ms"] for t in theirs), 3),
               "mean_ms": round(statistics.mean(t["mean_ms"] for t in theirs), 3)}
    if not ours_now:
        return {**figures, "gap": round(row["latency_ms"]["p50"] / figures["p50_ms"] - 1.0, 3),
                "verdict": False, "why_no_verdict": "the row was timed long before the tool"}
    rounds = [_round(before, after, run["p50_ms"]) for before, after, run in zip(ours, ours[1:], theirs)]
    return {**figures, "hubedge_p50_ms": round(statistics.median(ours), 3), "rounds": rounds, **_verdict(rounds)}


def _round(before: float, after: float, theirs: float) -> dict[str, Any]:
    ours = (before + after) / 2
    return {"tool_p50_ms": round(theirs, 3), "hubedge_around_ms": [round(before, 3), round(after, 3)],
            "drift": round(max(before, after) / min(before, after) - 1.0, 3), "gap": round(ours / theirs - 1.0, 3)}


def _verdict(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median gap over the steady rounds, when enough are steady and most of them agree with it within the
    tolerance; otherwise why no verdict can be read from this check."""
    steady = [r["gap"] for r in rounds if r["drift"] <= TOLERANCE]
    gap = round(statistics.median(steady or [r["gap"] for r in rounds]), 3)
    if len(steady) < min(STEADY_NEEDED, len(rounds)):
        why = f"the machine changed speed during {len(rounds) - len(steady)} of {len(rounds)} rounds"
    elif 2 * sum(abs(g - gap) <= TOLERANCE for g in steady) <= len(steady):
        why = "the steady rounds disagree (" + ", ".join(f"{g:+.1%}" for g in steady) + ")"
    else:
        return {"gap": gap, "verdict": True}
    return {"gap": gap, "verdict": False, "why_no_verdict": why}
