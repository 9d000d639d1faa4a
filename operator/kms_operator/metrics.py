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
# Proof that work happened and that none is left (tests wait on these instead of sleeping; they also
# tell an operator's dashboard that a resync has gone through):
SERVICE_PASSES = Counter(
    "kms_service_passes_total",
    "MapService reconcile passes that ran to the end (children applied or found in place, status checked)",
    ["namespace", "service"],
)
DATASET_PASSES = Counter(
    "kms_dataset_passes_total",
    "MapDataset reconciles that ran to the end (source inspected, status checked, services told)",
    ["namespace"],
)
QUEUED = Gauge(
    "kms_queued_reconciles",
    "Queued or running reconciles of a namespace (one per service, MapJob, or batch of servedBy checks)",
    ["queue", "namespace"],
)
WATCH_REQUESTS = Counter(
    "kms_watch_requests_total",
    "Watch requests sent to the API server, one per watch (re)connect (KMS_WATCH_SERVER_TIMEOUT closes each)",
    ["resource"],
)
EVENTS_SKIPPED = Counter(
    "kms_events_skipped_total",
    "Normal Events not posted because the budget for them was spent (a bulk apply)",
    ["reason"],
)
