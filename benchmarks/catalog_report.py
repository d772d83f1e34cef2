"""The catalog report of an output folder: one row per (model, format, precision), whatever made it.

It reads what is already there and runs nothing: the manifests (size, export time, peak memory, agreement with the
FP32 reference on the evaluation images, the CPU classes verified), a catalog run's job ledger
(``hubedge.exporter.zoo.ledger``: failed jobs and their reasons, the node and host each job ran on, its attempts) and
any bench report saved in the folder (``hubedge bench --json``: latency per device and the machine it was timed on).
It writes ``hubedge-report.json``, ``hubedge-report.md``, ``hubedge-report.png`` (with matplotlib) and one record
per model under ``perf/``, in the manner of qai-hub-models' ``perf.yaml``: what each artifact of the model came to.
Importing it never imports TensorFlow, so an edge machine with the runtimes alone can report on a copied folder.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubedge.benchmarks.report import cell
from hubedge.runtimes.devices import RESOURCE_PREFIX
from hubedge.runtimes.errors import HubedgeError, InvalidInputError
from hubedge.runtimes.manifest import SCHEMA, manifest_path

__all__ = ["PERF_FOLDER", "REPORT_SCHEMA", "REPORT_STEM", "build", "markdown", "write", "write_plot"]

REPORT_STEM = "hubedge-report"
REPORT_SCHEMA = "hubedge.report/1"
PERF_FOLDER = "perf"
AGREEMENT = ("cosine_min", "cosine_mean", "top1", "top5", "top1_margin", "sqnr_db")


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _manifest_row(manifest_file: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    artifact = manifest_file.parent / str(manifest.get("artifact", {}).get("file", ""))
    verification = manifest.get("verification", {})
    present = artifact.exists() and manifest_path(artifact) == manifest_file
    return {
        "model": manifest.get("model", {}).get("name", "?"), "format": manifest.get("format", "?"),
        "precision": manifest.get("precision", "?"), "variant": manifest.get("variant", ""),
        "weights": manifest.get("weights", {}).get("source", "?"),
        "status": "ok" if present else "missing",
        **({} if present else {"reason": f"the manifest names {artifact.name}, which is not there"}),
        "artifact": artifact.name,
        "size_mb": round(manifest.get("artifact", {}).get("size_bytes", 0) / 1e6, 2),
        "export_seconds": manifest.get("export_seconds"), "peak_memory_mb": manifest.get("export_peak_rss_mb"),
        "agreement": {name: verification[name] for name in AGREEMENT if name in verification},
        "verified": "skipped" not in verification and bool(verification.get("passed")),
        "images": verification.get("images"), "image_set": verification.get("image_set"),
        "verified_on": [name + (" (emulated)" if run.get("emulated") else "")
                        for name, run in verification.get("cpu_classes", {}).items() if run.get("passed")],
        "job_key": manifest.get("job", {}).get("key"), "created": manifest.get("created"),
        "latency": {},
    }


def _ledger_entries(folder: Path) -> dict[str, dict[str, Any]]:
    from hubedge.exporter.zoo.ledger import LEDGER, Ledger

    return Ledger(folder).entries if (folder / LEDGER).is_file() else {}


def _bench_reports(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Saved bench reports in the folder, oldest first (a later one's figures replace an earlier one's)."""
    found = []
    for path in folder.glob("*.json"):
        data = _json(path)
        if data and isinstance(data.get("rows"), list) and "machine" in data and data.get("schema") != SCHEMA \
                and data.get("schema") != REPORT_SCHEMA:
            found.append((path, data))
    return sorted(found, key=lambda item: item[0].stat().st_mtime)


def build(folder: str | Path) -> dict[str, Any]:
    """The report of ``folder``: every artifact with a manifest, every failed job of its ledger, latencies from
    its saved bench reports."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"no folder at {folder}; give the --output folder of an export")
    rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    by_artifact: dict[str, dict[str, Any]] = {}
    for manifest_file in sorted(folder.glob("*.json")):
        manifest = _json(manifest_file)
        if manifest is None or manifest.get("schema") != SCHEMA or "artifact" not in manifest:
            continue
        row = _manifest_row(manifest_file, manifest)
        rows[(row["model"], row["format"], row["precision"], row["variant"])] = row
        by_artifact[row["artifact"]] = row
    for digest, entry in _ledger_entries(folder).items():
        where = {key: entry[key] for key in ("host", "node", "attempts", "memory_request_mb") if key in entry}
        if entry.get("status") == "ok" and entry.get("artifact") in by_artifact:
            row = by_artifact[entry["artifact"]]
            if row["job_key"] == digest:
                row["job"] = where
            continue
        if entry.get("status") == "ok":  # the ledger says done, but the artifact or its manifest went
            entry = {**entry, "status": "missing", "reason": f"{entry.get('artifact')} was exported by a job of "
                                                             "this folder and is gone; a re-run redoes it"}
        key = (str(entry.get("model", "?")), str(entry.get("format", "?")), str(entry.get("precision", "?")), "")
        if key in rows and rows[key]["status"] == "ok":
            continue  # an earlier failure that a later export of the same artifact made good
        rows[key] = {"model": key[0], "format": key[1], "precision": key[2], "variant": "",
                     "weights": entry.get("weights", "?"), "status": entry.get("status", "?"),
                     "reason": entry.get("reason", ""), "artifact": entry.get("artifact", ""), "job_key": digest,
                     "job": where, "latency": {}, "agreement": {}}
    benches = _bench_reports(folder)
    for path, bench in benches:
        machine = bench["machine"]
        for bench_row in bench["rows"]:
            row = by_artifact.get(Path(str(bench_row.get("artifact", ""))).name)
            if row is None or bench_row.get("reference") or bench_row.get("status") != "ok":
                continue
            # a cluster bench times a device on each CPU class offered: its rows name their node and resource
            node_machine = next((m for m in bench.get("machines", []) if m.get("node") == bench_row.get("node")),
                                machine)
            where = str(bench_row.get("resource", bench_row["device"])).removeprefix(RESOURCE_PREFIX)
            row["latency"][where] = {
                "p50_ms": round(bench_row["latency_ms"]["p50"], 3), "runtime": bench_row.get("runtime"),
                "speedup_vs_reference": bench_row.get("speedup_vs_reference"), "bench": path.name,
                "machine": {key: node_machine[key] for key in ("host", "node", "cpu", "cpu_class", "threads")
                            if key in node_machine}}
    ordered = sorted(rows.values(), key=lambda row: (row["model"], row["format"], row["precision"], row["variant"]))
    counts: dict[str, int] = {}
    for row in ordered:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return {"schema": REPORT_SCHEMA, "folder": str(folder.resolve()),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "counts": counts, "benches": [path.name for path, _ in benches], "rows": ordered}


def _latency_cell(row: dict[str, Any]) -> str:
    return "; ".join(f"{device} {figure['p50_ms']:.2f} ms" + (f" ({figure['speedup_vs_reference']:.2f}× ref)"
                                                              if figure.get("speedup_vs_reference") else "")
                     for device, figure in row["latency"].items())


COLUMNS = ("model", "format", "precision", "status", "MB", "export s", "peak MB", "cosine min", "top1",
           "verified on", "latency p50", "ran on")


def markdown(report: dict[str, Any]) -> str:
    counts = ", ".join(f"{count} {status}" for status, count in sorted(report["counts"].items())) or "nothing"
    lines = [f"Catalog report of {report['folder']}: {len(report['rows'])} (model, format, precision) rows: {counts}.",
             "Agreement is with the FP32 reference on the evaluation images at export; latency is from the saved "
             f"bench reports ({', '.join(report['benches']) or 'none in this folder'}).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "|".join(" --- " for _ in COLUMNS) + "|"]
    for row in report["rows"]:
        status = row["status"] if row["status"] == "ok" else f"{row['status']}: {row.get('reason', '')}"
        precision = row["precision"] + (f" ({row['variant']})" if row.get("variant") else "")
        ran_on = row.get("job", {}).get("host", "")
        lines.append("| " + " | ".join([
            row["model"], row["format"], precision, status.replace("|", "/"), cell(row.get("size_mb"), 4, "g"),
            cell(row.get("export_seconds"), 4, "g"), cell(row.get("peak_memory_mb"), 4, "g"),
            cell(row["agreement"].get("cosine_min"), 5, "g"), cell(row["agreement"].get("top1"), 4, "g"),
            ", ".join(row.get("verified_on", [])), _latency_cell(row), ran_on]) + " |")
    return "\n".join(lines) + "\n"


def perf_record(model: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's record: per artifact, its status, export cost, numerics and latencies."""
    artifacts = {}
    for row in rows:
        name = f"{row['format']}-{row['precision']}" + (f"-{row['variant']}" if row.get("variant") else "")
        artifacts[name] = {
            "status": row["status"], **({"reason": row["reason"]} if row.get("reason") else {}),
            "file": row.get("artifact", ""), "size_mb": row.get("size_mb"),
            "export": {"seconds": row.get("export_seconds"), "peak_memory_mb": row.get("peak_memory_mb"),
                       **row.get("job", {})},
            "numerics": {**row["agreement"], "images": row.get("images"), "image_set": row.get("image_set"),
                         "verified_on": row.get("verified_on", [])},
            "performance": row["latency"]}
    return {"model": model, "weights": sorted({str(row["weights"]) for row in rows}), "artifacts": artifacts}


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Size against agreement, one point per artifact, a marker per format: what each precision costs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hubedge.benchmarks.plot import MARKERS

    rows = [row for row in report["rows"] if row["status"] == "ok" and "cosine_min" in row["agreement"]]
    figure, axes = plt.subplots(figsize=(8, 5))
    for fmt in sorted({row["format"] for row in rows}):
        mine = [row for row in rows if row["format"] == fmt]
        axes.scatter([row["size_mb"] for row in mine], [row["agreement"]["cosine_min"] for row in mine],
                     marker=MARKERS.get(fmt, "o"), label=fmt, alpha=0.7)
    axes.set_xscale("log")
    axes.set_xlabel("artifact size (MB, log scale)")
    axes.set_ylabel("minimum cosine with the FP32 reference")
    failed = sum(1 for row in report["rows"] if row["status"] != "ok")
    axes.set_title(f"{len(rows)} artifacts" + (f" ({failed} not ok, not drawn)" if failed else ""))
    if rows:
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write(folder: str | Path, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Builds the report of ``folder`` and writes it there (JSON, Markdown, the plot where matplotlib is installed,
    and ``perf/<model>.yaml``); each file is replaced whole."""
    import yaml

    from hubedge.exporter.fsutil import atomic_path

    folder = Path(folder)
    report = build(folder)
    outputs = {f"{REPORT_STEM}.json": json.dumps(report, indent=1) + "\n", f"{REPORT_STEM}.md": markdown(report)}
    perf = folder / PERF_FOLDER
    models: dict[str, list[dict[str, Any]]] = {}
    for row in report["rows"]:
        models.setdefault(row["model"], []).append(row)
    try:
        perf.mkdir(exist_ok=True)
        for name, text in outputs.items():
            with atomic_path(folder / name) as temp:
                temp.write_text(text, encoding="utf-8")
        for model, rows in models.items():
            with atomic_path(perf / f"{Path(model).name}.yaml") as temp:
                temp.write_text(yaml.safe_dump(perf_record(model, rows), sort_keys=False, allow_unicode=True),
                                encoding="utf-8")
    except OSError as error:
        raise HubedgeError(f"cannot write the report into {folder}: {error.strerror}") from None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        say(f"report: no {REPORT_STEM}.png (the plot needs matplotlib: pip install 'hubedge[plot]')")
    else:
        with atomic_path(folder / f"{REPORT_STEM}.png") as temp:
            write_plot(report, temp)
    say(f"report: {folder / (REPORT_STEM + '.md')} (also .json, .png), and {len(models)} record(s) under {perf}/")
    return report
