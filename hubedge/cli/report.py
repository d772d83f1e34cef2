"""``hubedge report``: the catalog report of an output folder (``hubedge.benchmarks.catalog_report``)."""

from __future__ import annotations

import argparse
import json

from hubedge.cli.common import say


def add_parser(commands) -> None:
    parser = commands.add_parser("report", help="one row per (model, format, precision) of an output folder: "
                                 "status, size, export cost, agreement, latency; written into the folder")
    parser.add_argument("folder", metavar="DIR", help="an export's --output folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Writes the report into the folder and prints it; exits 1 when some row is not ok, like the run it reports."""
    from hubedge.benchmarks import catalog_report

    report = catalog_report.write(args.folder, say)
    print(json.dumps(report, indent=1) if args.json else catalog_report.markdown(report), end="\n" if args.json else "")
    return 0 if set(report["counts"]) <= {"ok"} else 1
