"""Many exports in one run: (model, format, precision) jobs with content keys, fanned out on Ray.

``hubedge.exporter.zoo.jobs`` plans the jobs and keys them; ``hubedge.exporter.zoo.ledger`` keeps what each job came to
in the output folder, so that a re-run skips what is up to date and ``--retry-failed`` runs only what failed;
``hubedge.exporter.zoo.fanout`` runs them as Ray tasks, on an embedded local instance or an existing cluster.
"""

from hubedge.exporter.zoo.jobs import Job, JobKey, expand_models, plan_jobs

__all__ = ["Job", "JobKey", "expand_models", "plan_jobs"]
