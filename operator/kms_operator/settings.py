"""Operator settings from the environment (defaults < environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from kms_crds.mapjob import DEFAULT_JOB_IMAGE
from kms_crds.mapservice import DEFAULT_IMAGE, DEFAULT_TILES_IMAGE


def _list(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


@dataclass(frozen=True)
class Settings:
    data_root: Path = field(default_factory=lambda: Path(os.environ.get("KMS_DATA_ROOT", "/data")))
    allowed_roots: list[str] = field(default_factory=lambda: _list("KMS_ALLOWED_DATA_ROOTS"))
    allowed_url_hosts: list[str] = field(default_factory=lambda: _list("KMS_ALLOWED_URL_HOSTS"))
    watch_server_timeout: int = field(
        default_factory=lambda: int(os.environ.get("KMS_WATCH_SERVER_TIMEOUT", "300"))
    )
    request_timeout: int = field(default_factory=lambda: int(os.environ.get("KMS_REQUEST_TIMEOUT", "30")))
    debounce_seconds: float = field(
        default_factory=lambda: float(os.environ.get("KMS_DEBOUNCE_SECONDS", "0.3"))
    )
    # Where clients reach a service without ingress; local mode points at hack/local_mapserver.py.
    service_url_template: str = field(
        default_factory=lambda: os.environ.get(
            "KMS_SERVICE_URL_TEMPLATE", "http://{name}.{namespace}.svc.cluster.local:8080/"
        )
    )
    # Where clients reach a service's tile cache; local mode points at hack/local_tilecache.py.
    tiles_url_template: str = field(
        default_factory=lambda: os.environ.get(
            "KMS_TILES_URL_TEMPLATE", "http://{name}-tiles.{namespace}.svc.cluster.local:8080/"
        )
    )
    # Images used when a resource names none (the chart sets all three to the images it ships).
    mapserver_image: str = field(default_factory=lambda: os.environ.get("KMS_MAPSERVER_IMAGE", DEFAULT_IMAGE))
    tiles_image: str = field(default_factory=lambda: os.environ.get("KMS_TILES_IMAGE", DEFAULT_TILES_IMAGE))
    job_image: str = field(default_factory=lambda: os.environ.get("KMS_JOB_IMAGE", DEFAULT_JOB_IMAGE))
    # The MapServer WMS the tile cache renders from (in-cluster; the loopback server in local mode).
    tiles_source_template: str = field(
        default_factory=lambda: os.environ.get(
            "KMS_TILES_SOURCE_TEMPLATE",
            os.environ.get("KMS_SERVICE_URL_TEMPLATE", "http://{name}.{namespace}.svc.cluster.local:8080/"),
        )
    )
    # Concurrent API connections of Kopf: its ~10 watch streams plus requests in flight.
    connection_limit: int = field(default_factory=lambda: int(os.environ.get("KMS_CONNECTION_LIMIT", "96")))
    # Workers reconciling MapDatasets (each waits for the API most of the time: the throughput of a
    # bulk apply is workers / API latency)
    dataset_workers: int = field(default_factory=lambda: int(os.environ.get("KMS_DATASET_WORKERS", "16")))
    # Lease that keeps a second operator on standby (0 disables it, e.g. one operator per namespace)
    lease_seconds: int = field(default_factory=lambda: int(os.environ.get("KMS_LEASE_SECONDS", "15")))
    # NetworkPolicies for MapServer, tile-cache and job pods (spec.networkPolicy turns one off)
    network_policies: bool = field(
        default_factory=lambda: (
            os.environ.get("KMS_NETWORK_POLICIES", "true").lower() not in ("0", "false", "no")
        )
    )
    metrics_port: int = field(default_factory=lambda: int(os.environ.get("KMS_METRICS_PORT", "9090")))
