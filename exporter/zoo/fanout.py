"""Runs a catalog run's jobs as Ray tasks: on an embedded local instance, or on an existing cluster.

Each job is a task in a fresh worker process (``max_calls=1``: TensorFlow does not give memory back) that declares
``num_cpus`` and ``memory=``, so Ray never starts two exports together that do not fit in a node's memory
together. The memory asked for is estimated from the model's size and each format's measured peaks
(:func:`memory_request`, ``hubedge.exporter.memory_budget``), and the job's export is held to it; the peak each export
reached is recorded in its manifest, as for any export. A
request that no node can meet is refused in one line before anything runs: Ray would leave it pending. Tasks are
not retried by Ray; a job killed for memory is retried once here with a larger request, any other failure is
recorded with its reason and the run goes on. Only the driver writes the ledger (``hubedge.exporter.zoo.ledger``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hubedge.exporter.fsutil import remove_stale_work
from hubedge.exporter.memory_budget import estimate, model_bytes, written_route
from hubedge.exporter.zoo.jobs import CONVERTERS, Job, JobKey
from hubedge.exporter.zoo.ledger import Ledger
from hubedge.runtimes.errors import HubedgeError
from hubedge.runtimes.progress import time_left

__all__ = ["RunSummary", "memory_request", "ray_session", "run_jobs"]

GiB = 2**30
OOM_GROWTH = 1.5  # a job killed for memory is retried once, asking for this much more
OBJECT_STORE_BYTES = 256 * 2**20  # jobs pass small records, never arrays: the rest of the memory is for exports


def memory_request(job: Job) -> int:
    """Bytes a job asks Ray for: the larger of the estimated peaks of loading its model and of its format's
    export (``hubedge.exporter.memory_budget``); the job's export is then held to that budget."""
    from hubedge.exporter.sources import catalog

    size = model_bytes(job.model)
    written = written_route(catalog.find(job.model), None, job.options)
    return max(estimate("load", size).bytes, estimate(job.format, size, written, job.precision).bytes)


@dataclasses.dataclass
class RunSummary:
    """How a run ended: the jobs done, skipped as up to date, and failed (key → reason); each job's key."""

    done: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    keys: dict[Job, str] = dataclasses.field(default_factory=dict)

    def line(self) -> str:
        return (f"{len(self.done)} done, {len(self.skipped)} skipped (up to date), {len(self.failed)} failed, "
                f"in {self.seconds:.0f}s")


def _export_job(job: Job, key: dict[str, Any], digest: str, output: str, threads: int,
                memory: int) -> dict[str, Any]:
    """The task: one export in this worker process; returns its outcome, never raises for an export's failure."""
    import socket

    from hubedge.exporter.api import ExportsFailed, export

    started = time.time()
    from hubedge.runtimes.isolated import CPU_BUDGET_ENV

    os.environ["OMP_NUM_THREADS"] = str(threads)  # Ray sets it from num_cpus; say so ourselves, for every library
    os.environ[CPU_BUDGET_ENV] = str(threads)  # and verification's child processes keep to it
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from hubedge.runtimes.tf_reference import set_threads

    set_threads(threads)
    import ray

    outcome: dict[str, Any] = {"host": socket.gethostname(), "node": ray.get_runtime_context().get_node_id(),
                               "pid": os.getpid(), "started": started}
    try:
        result = export(job.model, weights=job.weights, twin_form=job.twin_form, formats=[job.format],
                        precisions=[job.precision], output=output, options=job.options,
                        job={"key": digest, **key}, memory_budget=memory)[0]
    except ExportsFailed as failed:
        outcome.update(status="failed", reason=str(failed.failures[0][2]))
    except HubedgeError as error:
        outcome.update(status="failed", reason=str(error))
    else:
        outcome.update(status="ok", artifact=result.artifact.name, size_bytes=result.size_bytes,
                       export_seconds=round(result.seconds, 1), peak_rss_mb=result.peak_rss_mb)
    outcome["ended"] = time.time()
    return outcome


@contextmanager
def ray_session(cluster: str | None, cpus: int | None = None, memory: int | None = None) -> Iterator[list[dict]]:
    """Ray for one run: the instance this process is already connected to (left running), an existing cluster
    at ``cluster``, or a private local instance that this run starts and stops (no dashboard; ``cpus`` and
    ``memory`` bound it). Yields the alive nodes (``ray.nodes()`` records)."""
    import ray

    owned = not ray.is_initialized()
    if owned and cluster:
        try:
            ray.init(address=cluster, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise HubedgeError(f"cannot join the Ray cluster at {cluster}: {str(error).splitlines()[0]}") from None
    elif owned:
        ray.init(address="local", num_cpus=cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", object_store_memory=OBJECT_STORE_BYTES,
                 **({"_memory": memory} if memory else {}))
    try:
        yield [node for node in ray.nodes() if node.get("Alive")]
    finally:
        if owned:
            ray.shutdown()


def check_shared_output(output: Path, nodes: list[dict]) -> None:
    """Refuses, in one line, an output folder that some node of a cluster cannot see or write: every node must
    find the file this driver wrote there, and write one of its own."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = output / f".hubedge-probe-{uuid.uuid4().hex}"
    token.write_text("driver", encoding="utf-8")

    def probe(path: str) -> str:
        import socket

        token_path = Path(path)
        if not token_path.is_file():
            return f"{socket.gethostname()} does not see {token_path.parent}"
        try:
            mine = token_path.with_name(f"{token_path.name}-{os.getpid()}")
            mine.write_text("node", encoding="utf-8")
            mine.unlink()
        except OSError as error:
            return f"{socket.gethostname()} cannot write to {token_path.parent}: {error.strerror}"
        return ""

    try:
        task = ray.remote(num_cpus=0, max_retries=0)(probe)
        problems = ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                            .remote(str(token)) for node in nodes])
    finally:
        token.unlink(missing_ok=True)
    problems = [problem for problem in problems if problem]
    if problems:
        raise HubedgeError(f"--output {output} must be a folder every node of the cluster sees and can write: "
                           f"{'; '.join(problems)}; use a shared file system path")


def _refuse_infeasible(requests: dict[str, tuple[int, int]], labels: dict[str, str], nodes: list[dict]) -> None:
    """Refuses, in one line, a job that no node could ever run (Ray would leave it pending for ever)."""
    offers = [node.get("Resources", {}) for node in nodes]
    for digest, (cpus, memory) in requests.items():
        if not _fits((cpus, memory), nodes):
            largest = max((offer.get("memory", 0) for offer in offers), default=0)
            raise HubedgeError(f"{labels[digest]} needs {memory / GiB:.1f} GiB and {cpus} CPU(s), and no node of "
                               f"the Ray cluster offers that (the largest offers {largest / GiB:.1f} GiB); use a "
                               "larger node, or export this model alone")


def _fits(request: tuple[int, int], nodes: list[dict]) -> bool:
    """Whether some node's total CPUs and memory can take a job's (cpus, memory) request."""
    cpus, memory = request
    return any(node.get("Resources", {}).get("CPU", 0) >= cpus and node.get("Resources", {}).get("memory", 0) >= memory
               for node in nodes)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _eta(done_seconds: list[float], remaining: int, parallel: int) -> str:
    if not done_seconds or not remaining:
        return ""
    left = sum(done_seconds) / len(done_seconds) * remaining / max(parallel, 1)
    return f", about {time_left(left)} left"


def run_jobs(jobs: list[Job], output: Path, *, cluster: str | None = None, retry_failed: bool = False,
             threads: int = 1, progress: Callable[[str], None] = lambda _: None, cpus: int | None = None,
             memory: int | None = None) -> RunSummary:
    """Runs ``jobs`` into ``output`` on Ray; skips those already up to date there (``retry_failed``: runs only the
    ones that failed last time). ``threads`` per job is the CPUs each task declares. ``cpus`` and ``memory``
    bound a local instance (tests). Returns the summary; the ledger in ``output`` has each job's record."""
    import ray

    from hubedge.exporter.manifest import tool_versions

    started = time.perf_counter()
    remove_stale_work(output, progress)
    ledger = Ledger(output)
    versions = tool_versions(CONVERTERS)
    keys = {job: JobKey.of(job, versions) for job in jobs}
    summary = RunSummary(keys={job: key.digest for job, key in keys.items()})
    todo: list[Job] = []
    for job in jobs:
        digest = keys[job].digest
        if ledger.up_to_date(digest) or (retry_failed and digest not in ledger.failed()):
            summary.skipped.append(digest)
        else:
            todo.append(job)
    progress(f"{len(jobs)} job(s): {len(summary.skipped)} skipped " +
             ("(up to date or not failed last time)" if retry_failed else "(up to date)") + f", {len(todo)} to run")
    if not todo:
        summary.seconds = time.perf_counter() - started
        return summary
    requests = {keys[job].digest: (threads, memory_request(job)) for job in todo}
    labels = {keys[job].digest: job.label for job in todo}
    with ray_session(cluster, cpus, memory) as nodes:
        _refuse_infeasible(requests, labels, nodes)
        if cluster:
            check_shared_output(output.resolve(), nodes)
        task = ray.remote(max_calls=1, max_retries=0)(_export_job)
        by_ref: dict[Any, tuple[Job, int]] = {}

        def submit(job: Job, attempt: int, request: int) -> None:
            digest = keys[job].digest
            ref = task.options(num_cpus=threads, memory=request, name=job.label).remote(
                job, keys[job].record, digest, str(output), threads, request)
            by_ref[ref] = (job, attempt)
            requests[digest] = (threads, request)

        for job in todo:
            submit(job, 1, requests[keys[job].digest][1])
        parallel = max(1, int(sum(node.get("Resources", {}).get("CPU", 0) for node in nodes) // threads))
        durations: list[float] = []
        while by_ref:
            ready, _ = ray.wait(list(by_ref), num_returns=1)
            job, attempt = by_ref.pop(ready[0])
            digest = keys[job].digest
            try:
                outcome = ray.get(ready[0])
            except ray.exceptions.LocalRayletDiedError:  # this machine's Ray is gone: nothing more will finish
                lost = [job, *(pending for pending, _ in by_ref.values())]
                progress(f"the Ray instance of this run died (its raylet was killed: out of memory, or `ray stop`); "
                         f"{len(lost)} job(s) not finished; run the same command again to resume")
                for unfinished in lost:
                    reason = "not finished: the run's Ray instance died"
                    summary.failed[keys[unfinished].digest] = reason
                    ledger.record(keys[unfinished].digest, {
                        "status": "failed", "reason": reason, "model": unfinished.model, "format": unfinished.format,
                        "precision": unfinished.precision, "weights": unfinished.weights})
                by_ref.clear()
                break
            except ray.exceptions.OutOfMemoryError:
                if attempt == 1:
                    progress(f"  {job.label}: killed for memory; retrying once with {OOM_GROWTH:g}× the request")
                    submit(job, 2, int(requests[digest][1] * OOM_GROWTH))
                    continue
                outcome = {"status": "failed", "reason": "killed for memory twice (Ray's memory monitor)"}
            except ray.exceptions.NodeDiedError as error:  # the machine went, not the job's fault: once more
                left = [node for node in ray.nodes() if node.get("Alive")]
                if attempt == 1 and _fits(requests[digest], left):  # else Ray would keep it pending for ever
                    progress(f"  {job.label}: its node was lost; retrying once on the nodes left")
                    submit(job, 2, requests[digest][1])
                    continue
                why = "lost twice" if attempt > 1 else "lost, and no node left can take the job"
                outcome = {"status": "failed", "reason": f"its node was {why}: {_first_line(error)}"}
            except ray.exceptions.WorkerCrashedError as error:
                outcome = {"status": "failed", "reason": f"the worker died: {_first_line(error)}"}
            except ray.exceptions.RayTaskError as error:  # a fault of hubedge's, not of the export's inputs
                cause = error.cause if isinstance(error.cause, BaseException) else error
                first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
                outcome = {"status": "failed", "reason": f"the job raised {type(cause).__name__}: {first}"}
            outcome.update(model=job.model, format=job.format, precision=job.precision, weights=job.weights,
                           attempts=attempt, memory_request_mb=round(requests[digest][1] / 2**20))
            ledger.record(digest, outcome)
            if outcome["status"] == "ok":
                summary.done.append(digest)
                durations.append(outcome["ended"] - outcome["started"])
            else:
                summary.failed[digest] = outcome["reason"]
            finished = len(summary.done) + len(summary.failed)
            word = "done" if outcome["status"] == "ok" else f"FAILED: {outcome['reason']}"
            progress(f"[{finished}/{len(todo)}] {job.label} {word} ({len(summary.done)} done, {len(by_ref)} running "
                     f"or queued, {len(summary.failed)} failed, {len(summary.skipped)} skipped"
                     f"{_eta(durations, len(by_ref), parallel)})")
    summary.seconds = time.perf_counter() - started
    return summary
