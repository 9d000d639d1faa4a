"""MapJob: a processing job (conversion, terrain merge, hashing, metadata repair, ...) run as a
Kubernetes Job. `spec.type` selects exactly one parameter block (a discriminated union: the
Kubernetes way, one member field per type, enforced by CEL in the CRD and by pydantic here). The
types, their parameter fields and models come from the registry `job_types.JOB_TYPES`."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, create_model, model_validator

from .common import (
    SAFE_TEXT,
    Condition,
    KModel,
    PrinterColumn,
    Resource,
    ResourceMeta,
    Resources,
    status_field,
)
from .job_params import DatasetName
from .job_types import BY_NAME, JOB_TYPES
from .mapservice import _resources_text

DEFAULT_JOB_IMAGE = "ghcr.io/kube-mapserver/kube-mapserver:0.1.0"
# Requests/limits of job containers whose spec names none (GDAL's block cache is 256 MiB).
DEFAULT_JOB_RESOURCES = Resources(
    requests={"cpu": "100m", "memory": "128Mi"}, limits={"cpu": "2", "memory": "2Gi"}
)


class OutputDataset(KModel):
    """A MapDataset registered (or refreshed) from the job's output file on success."""

    name: DatasetName = Field(description="Name of the MapDataset to create or update.")
    identifier: str | None = Field(
        None,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="Identifier (default: the name).",
    )
    title: str | None = Field(
        None, max_length=500, pattern=SAFE_TEXT, description="Title (default: the name)."
    )
    labels: dict[str, str] | None = Field(None, description="Labels, e.g. to be selected by a MapService.")


class JobOutput(KModel):
    dataset: OutputDataset | None = Field(None, description="Register the result as a MapDataset.")


class JobData(KModel):
    """The data volume the job reads and writes (mounted at /data)."""

    persistent_volume_claim: str = Field(
        max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="PVC with the data."
    )


# spec.type's enum (JobType.cog_convert == "cog-convert") and each type's parameter block field
JobType = StrEnum("JobType", {t.name.replace("-", "_"): t.name for t in JOB_TYPES})  # type: ignore[misc]
PARAM_FIELDS: dict[str, str] = {t.name: t.field for t in JOB_TYPES}


class JobNetworkAccess(KModel):
    """The NetworkPolicy the operator creates with the job's pod (where the cluster's network plugin
    enforces NetworkPolicy): no connection to the pod, and none from it except what its type needs
    (cache-seed: DNS and the MapService's MapServer pods; the others work on files only)."""

    enabled: bool = Field(
        True, description="Create the policy (the operator's KMS_NETWORK_POLICIES can turn it off)."
    )


# The type and one optional parameter block per registered type, in registry order (a base class
# built from the registry: MapJobSpec's own fields follow it, as the CRD schema lists them).
_JobTypeAndParams = create_model(
    "_JobTypeAndParams",
    __base__=KModel,
    type=(JobType, Field(description="Job type; the parameter block of the same name must be set.")),
    **{t.attr: (t.params | None, Field(None, description=f"Parameters of {t.name}.")) for t in JOB_TYPES},
)


class MapJobSpec(_JobTypeAndParams):
    """What to run: the type and its parameters, and how to run it."""

    output: JobOutput | None = Field(None, description="What to do with the result on success.")
    cancel: bool = Field(False, description="Set to true to cancel the job.")
    ttl_seconds_after_finished: int | None = Field(
        86400, ge=0, description="Delete the Kubernetes Job this long after it finished (the MapJob stays)."
    )
    backoff_limit: int = Field(2, ge=0, le=20, description="Retries before the job is Failed.")
    active_deadline_seconds: int | None = Field(None, ge=1, description="Hard time limit of the job.")
    resources: Resources | None = Field(
        None,
        description="Requests/limits of the job container (default: "
        f"{_resources_text(DEFAULT_JOB_RESOURCES)}).",
    )
    network_policy: JobNetworkAccess = Field(
        default_factory=lambda: JobNetworkAccess(), description="The NetworkPolicy of the job's pod."
    )
    image: str | None = Field(
        None,
        max_length=512,
        description="Job runner image (default: the operator's KMS_JOB_IMAGE, the product image it was "
        "installed with).",
    )
    data: JobData | None = Field(None, description="Data volume (mounted read-write at /data).")

    model_config = KModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": f"has(self.{t.field}) == (self.type == '{t.name}')",
                    "message": f"type {t.name} needs spec.{t.field}, and only type {t.name} may set it",
                    "fieldPath": f".{t.field}",
                }
                for t in JOB_TYPES
            ]
            + [
                {"rule": "!has(oldSelf.type) || self.type == oldSelf.type", "message": "type is immutable"},
            ]
        }
    }

    @model_validator(mode="after")
    def _one_param_block(self) -> MapJobSpec:
        for t in JOB_TYPES:
            if (getattr(self, t.attr) is not None) != (self.type == t.name):
                raise ValueError(f"type {t.name} needs spec.{t.field}, and only type {t.name} may set it")
        return self

    @property
    def params(self) -> Any:
        """The parameter block of this job's type (the active member of the union)."""
        return getattr(self, BY_NAME[self.type].attr)


class Phase(StrEnum):
    Queued = "Queued"
    Running = "Running"
    Succeeded = "Succeeded"
    Failed = "Failed"
    Cancelled = "Cancelled"


class MapJobStatus(KModel):
    phase: Phase | None = Field(None, description="Queued, Running, Succeeded, Failed or Cancelled.")
    conditions: list[Condition] | None = Field(
        None,
        description="Ready (succeeded), Progressing, Degraded, Reconciling (queued or running), "
        "Stalled (failed for good or cancelled).",
    )
    observed_generation: int | None = Field(
        None, description="The metadata.generation last reconciled (behind it: work in progress)."
    )
    job_name: str | None = Field(None, description="The Kubernetes Job running this MapJob.")
    start_time: str | None = Field(None, description="When the job started.")
    completion_time: str | None = Field(None, description="When the job finished.")
    duration: str | None = Field(None, description="Run time, e.g. 42s (start to completion, or to now).")
    attempts: int | None = Field(None, description="Pods started so far.")
    progress: float | None = Field(
        None, ge=0, le=1, description="Fraction done while running (from the runner's progress lines)."
    )
    message: str | None = Field(None, description="Human-readable state.")
    result: dict[str, Any] | None = Field(
        None,
        description="Structured result reported by the runner (e.g. checksum, output path, variants report).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class MapJob(Resource):
    """A processing job run as a Kubernetes Job."""

    spec: MapJobSpec
    status: MapJobStatus | None = status_field()

    crd = ResourceMeta(
        kind="MapJob",
        plural="mapjobs",
        singular="mapjob",
        short_names=["mjob"],
        printer_columns=[
            PrinterColumn(name="Type", type="string", json_path=".spec.type"),
            PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
            PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
            PrinterColumn(name="Duration", type="string", json_path=".status.duration"),
            PrinterColumn(name="Message", type="string", json_path=".status.message", priority=1),
        ],
    )
