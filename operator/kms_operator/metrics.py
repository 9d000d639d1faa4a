"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("kms_reconciles_total", "Reconciles run", ["kind", "result"])
RECONCILE_SECONDS = Histogram("kms_reconcile_duration_seconds", "Reconcile duration", ["kind"])
MAPFILE_RENDERS = Counter(
    "kms_mapfile_renders_total", "New mapfiles written (changed content)", ["namespace", "service"]
)
MAPFILE_BUILDS = Counter(
    "kms_mapfile_builds_total", "Mapfile builds (reconciles of a service)", ["namespace", "service"]
)
API_WRITES = Counter("kms_api_writes_total", "Write requests sent to the API server", ["verb", "kind"])
MANAGED = Gauge("kms_managed_objects", "Objects known to the operator", ["kind"])
JOB_PHASES = Counter("kms_mapjob_phase_transitions_total", "MapJob phase changes", ["type", "phase"])
