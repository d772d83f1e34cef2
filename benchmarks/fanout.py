"""Benches on a Ray cluster: each model's artifacts timed on a node that offers the device, alone on that node.

A node offers devices as Ray custom resources, one unit each (``hubedge devices --ray-resources`` prints them for
``ray start --resources``): ``device:cpu``, ``device:cpu-<class>`` (``hubedge.runtimes.cpu``), ``device:gpu``,
``device:npu``. ``--device cpu`` is timed once on a node of every CPU class the cluster offers, because int8's gains
differ between classes; ``gpu`` and ``npu`` once wherever offered. Each task declares one unit of its device and
every CPU of its node, pinned there, so no export and no other bench shares the node while it times. A device that
no node offers becomes rows that say so before anything is submitted: Ray would leave such a task pending for ever.
Every row records the host, the node and the CPU class of the machine that timed it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from hubedge.benchmarks.runner import BenchOptions, find_artifacts, reference_mode
from hubedge.runtimes.devices import RESOURCE_PREFIX
from hubedge.runtimes.manifest import read_manifest

__all__ = ["bench_on_cluster", "device_resources", "merge"]


def device_resources(device: str, nodes: list[dict]) -> list[str]:
    """The custom resources that stand for ``device`` on the cluster: for the CPU, one per CPU class offered."""
    if device != "cpu":
        return [f"{RESOURCE_PREFIX}{device}"]
    prefix = f"{RESOURCE_PREFIX}cpu-"
    return sorted({name for node in nodes for name in node.get("Resources", {}) if name.startswith(prefix)})


def _bench_task(paths: list[str], options: BenchOptions, resource: str) -> dict[str, Any]:
    """The task: one model's artifacts on one device of this node, with all its cores; every row says where."""
    import ray

    from hubedge import benchmarks

    threads = options.threads or os.cpu_count() or 1
    os.environ["OMP_NUM_THREADS"] = str(threads)  # Ray sets it from num_cpus; say so ourselves, for every library
    report = benchmarks.bench(paths, dataclasses.replace(options, threads=threads))
    node = ray.get_runtime_context().get_node_id()
    report["machine"]["node"] = node
    for row in report["rows"]:
        row.update(host=report["machine"]["host"], node=node, cpu_class=report["machine"]["cpu_class"],
                   resource=resource)
    return report


def _row(artifact: str, manifest: dict[str, Any], device: str, status: str, reason: str, **where: Any) -> dict:
    return {"artifact": artifact, "model": manifest["model"]["name"], "format": manifest["format"],
            "precision": manifest["precision"], "runtime": manifest["runtime"], "device": device,
            "weights": manifest.get("weights", {}).get("source", "?"), "reference": False, "status": status,
            "reason": reason, "targets": manifest.get("devices", ["cpu"]),
            "targeted": device in manifest.get("devices", ["cpu"]), **where}


def merge(reports: list[dict[str, Any]], rows: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """One report of many nodes' reports: every row, and each node's machine record under ``machines``."""
    machines = list({report["machine"]["node"]: report["machine"] for report in reports}.values())
    image_sets = list(dict.fromkeys(line for report in reports for line in report.get("image_sets", [])))
    return {"machine": machines[0] if machines else {}, "machines": machines, "reference_mode": mode,
            "image_sets": image_sets, "rows": [row for report in reports for row in report["rows"]] + rows}


def bench_on_cluster(paths: list[str], options: BenchOptions, cluster: str | None,
                     progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Benchmarks the artifacts under ``paths`` on the Ray cluster at ``cluster`` (or the one this process is
    connected to): one task per (model, device resource). ``options.threads`` None: each node's cores."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from hubedge.exporter.zoo.fanout import ray_session

    mode = reference_mode(options.reference_mode)
    options = dataclasses.replace(options, reference_mode=mode)
    groups: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    for artifact in find_artifacts(paths):
        manifest = read_manifest(artifact)
        key = (manifest["model"]["name"], manifest.get("weights", {}).get("sha256", ""))
        groups.setdefault(key, []).append((str(artifact.resolve()), manifest))
    reports: list[dict[str, Any]] = []
    unplaced: list[dict[str, Any]] = []
    with ray_session(cluster) as nodes:
        task = ray.remote(max_calls=1, max_retries=0)(_bench_task)
        pending: dict[Any, tuple[tuple[str, str], str, str]] = {}
        for device in options.devices:
            # no CPU class offered at all: a name that no node has, so that the rows below say so
            for resource in device_resources(device, nodes) or [f"{RESOURCE_PREFIX}cpu-*"]:
                found = [node for node in nodes if node.get("Resources", {}).get(resource, 0) >= 1]
                if not found:
                    progress(f"{device}: no node of the Ray cluster offers {resource}; start nodes with ray start "
                             "--resources \"$(hubedge devices --ray-resources)\"")
                    unplaced += [_row(artifact, manifest, device, "not available",
                                      f"no node of the Ray cluster offers {resource}")
                                 for members in groups.values() for artifact, manifest in members]
                    continue
                for index, (key, members) in enumerate(groups.items()):
                    node = found[index % len(found)]  # a model's artifacts on one node, models spread over them
                    cpus = node["Resources"].get("CPU", 1)
                    ref = task.options(
                        num_cpus=cpus, resources={resource: 1}, name=f"bench {key[0]} {resource}",
                        scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
                    ).remote([artifact for artifact, _ in members],
                             dataclasses.replace(options, devices=(device,), threads=options.threads or int(cpus)),
                             resource)
                    pending[ref] = (key, device, f"{resource} on {node.get('NodeManagerHostname', '?')}")
        total, finished = len(pending), 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            key, device, where = pending.pop(ready[0])
            finished += 1
            try:
                reports.append(ray.get(ready[0]))
                progress(f"[{finished}/{total}] {key[0]} on {where}: done")
            except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.NodeDiedError) as error:
                cause = getattr(error, "cause", None) or error
                reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
                progress(f"[{finished}/{total}] {key[0]} on {where}: FAILED: {reason}")
                unplaced += [_row(artifact, manifest, device, "failed", f"the bench task on {where} failed: {reason}",
                                  targeted=True) for artifact, manifest in groups[key]]
    return merge(reports, unplaced, mode)

