"""``hubedge devices``: which runtime runs on which device here, and why not."""

from __future__ import annotations

import argparse
import json


def add_parser(commands) -> None:
    parser = commands.add_parser("devices", help="which runtime runs on which device here, and why not")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--ray-resources", action="store_true",
                        help="print the Ray custom resources this machine offers to benches on a cluster, as JSON "
                             "for ray start --resources (for example device:cpu-x86-vnni)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from hubedge.runtimes.devices import discover, ray_resources

    if args.ray_resources:
        print(json.dumps(ray_resources()))
        return 0
    rows = discover()
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
        return 0
    print(f"{'runtime':12} {'device':6} {'status':10} detail")
    for row in rows:
        if row.available:
            detail = row.backend + (f"  ({row.note})" if row.note else "")
            print(f"{row.runtime:12} {row.device:6} {'available':10} {detail}")
        else:
            print(f"{row.runtime:12} {row.device:6} {'absent':10} not available here: {row.reason}")
    return 0
