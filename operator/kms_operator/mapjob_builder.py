"""MapJob spec -> the Kubernetes Job that runs it (pure; golden-tested)."""

from __future__ import annotations

import hashlib
import json

from kms_crds.mapjob import DEFAULT_JOB_IMAGE, DEFAULT_JOB_RESOURCES, MapJobSpec

from .labels import MANAGED_BY, owner_reference
from .pod_defaults import CONTAINER_SECURITY

RUNNER = "kube-mapserver-job"
DATA_MOUNT = "/data"
TERMINATION_LOG = "/dev/termination-log"
JOB_UID = 10001
CACHE_MOUNT = "/var/cache/mapcache"
CACHE_VERSIONS_ANNOTATION = "maps.kube-mapserver.io/cache-versions"


def job_name(mapjob: str) -> str:
    """The Job's name: the MapJob's, shortened with a hash when the pod labels would not fit."""
    if len(mapjob) <= 52:
        return mapjob
    return f"{mapjob[:41]}-{hashlib.sha256(mapjob.encode()).hexdigest()[:10]}"


def job_labels(mapjob: str, job_type: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "kube-mapserver-job",
        "app.kubernetes.io/instance": mapjob,
        "app.kubernetes.io/component": "job",
        "app.kubernetes.io/part-of": "kube-mapserver",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "maps.kube-mapserver.io/job-type": job_type,
    }


def build_job(
    name: str,
    namespace: str,
    uid: str,
    spec: MapJobSpec,
    params: dict,
    cache_claim: str | None = None,
    annotations: dict[str, str] | None = None,
    default_image: str = DEFAULT_JOB_IMAGE,
) -> dict:
    """The Job: one pod running `kube-mapserver-job <type> --params-json ...` as a non-root user
    (cache jobs also mount the tile cache volume of their MapService)."""
    labels = job_labels(name, spec.type)
    args = [
        spec.type,
        "--params-json",
        json.dumps(params, sort_keys=True, separators=(",", ":")),
        "--data-root",
        DATA_MOUNT,
        "--termination-log",
        TERMINATION_LOG,
    ]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict] = [{"name": "tmp", "emptyDir": {"sizeLimit": "10Gi"}}]
    if spec.data:
        mounts.append({"name": "data", "mountPath": DATA_MOUNT})
        volumes.append(
            {"name": "data", "persistentVolumeClaim": {"claimName": spec.data.persistent_volume_claim}}
        )
    if cache_claim:
        args += ["--cache-root", CACHE_MOUNT]
        mounts.append({"name": "cache", "mountPath": CACHE_MOUNT})
        volumes.append({"name": "cache", "persistentVolumeClaim": {"claimName": cache_claim}})
    container = {
        "name": "runner",
        "image": spec.image or default_image,
        "command": [RUNNER],
        "args": args,
        "env": [{"name": "GDAL_CACHEMAX", "value": "256"}, {"name": "CPL_TMPDIR", "value": "/tmp"}],
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {**CONTAINER_SECURITY, "runAsUser": JOB_UID, "runAsGroup": JOB_UID},
    }
    container["resources"] = (spec.resources or DEFAULT_JOB_RESOURCES).wire()
    job_spec: dict = {
        "backoffLimit": spec.backoff_limit,
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": JOB_UID,
                    "fsGroup": JOB_UID,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [container],
                "volumes": volumes,
            },
        },
    }
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    meta: dict = {
        "name": job_name(name),
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [owner_reference("MapJob", name, uid)],
    }
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}
