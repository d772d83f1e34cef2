"""``hubedge models``: the model catalog, as a table or JSON."""

from __future__ import annotations

import argparse
import json

from hubedge.exporter.sources import catalog
from hubedge.cli.common import say


def add_parser(commands) -> None:
    parser = commands.add_parser("models", help="list the model catalog")
    parser.add_argument("filter", nargs="?", help="glob or substring on name, handle, family, task or arch")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    specs = catalog.list_models(args.filter)
    if args.json:
        rows = [
            {**spec.info().to_dict(), "family": spec.family, "architecture": spec.architecture.label,
             "url": spec.url, "description": spec.description}
            for spec in specs
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not specs:
        say(f"no catalog model matches {args.filter!r}")
        return 1
    header = ("name", "task", "outputs", "activation", "input", "arch", "handle")
    rows = [
        (s.name, s.task, str(s.num_outputs), s.activation, str(s.input_size), s.architecture.label, s.handle)
        for s in specs
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"\n{len(specs)} model(s)")
    return 0
