"""Request and response models of the facade (the CR spec models come from kms_crds)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from kms_crds.common import Condition, LabelSelector
from kms_crds.mapdataset import MapDatasetSpec, MapDatasetStatus

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
JobState = Literal["success", "in-progress", "failure", "cancelled"]


class ApiModel(BaseModel):
    """camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ErrorBody(BaseModel):
    """Every 4xx answer: what went wrong and, when one input is to blame, which field."""

    detail: str = Field(description="Human-readable description of the problem.")
    field: str | None = Field(None, description="The offending input field (dotted path), if any.")


class Token(BaseModel):
    access_token: str = Field(description="A signed JWT (HS256) to send as `Authorization: Bearer`.")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")
    role: Literal["viewer", "editor", "admin"]


class LoginRequest(ApiModel):
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class UserView(ApiModel):
    name: str
    role: Literal["viewer", "editor", "admin"]


# ------------------------------------------------------------------ datasets


class DatasetCreate(MapDatasetSpec):
    """A MapDataset spec plus the resource name (`id`, default: derived from the identifier) and labels."""

    id: str | None = Field(
        None, min_length=1, max_length=63, pattern=DNS_LABEL, description="MapDataset name (DNS label)."
    )
    labels: dict[str, str] | None = Field(
        None, description="Labels of the MapDataset, e.g. {collection: ocean} to be picked by a MapService."
    )


class DatasetItem(ApiModel):
    id: str
    identifier: str | None = None
    title: str | None = None
    type: str | None = None
    campaign: str | None = None
    variant: str | None = None
    keywords: list[str] = []
    ready: bool
    reason: str | None = None
    created: str | None = None
    url: str | None = None


class DatasetPage(ApiModel):
    total: int = Field(description="Datasets matching the filters (before pagination).")
    limit: int
    offset: int
    items: list[DatasetItem]


class DatasetDetail(ApiModel):
    id: str
    labels: dict[str, str]
    created: str | None = None
    ready: bool
    reason: str | None = None
    message: str | None = None
    spec: MapDatasetSpec
    status: MapDatasetStatus | None = None


class DeleteResult(ApiModel):
    id: str
    deleted: bool = True


class DuplicateGroup(ApiModel):
    key: str = Field(description="The shared checksum, identifier or source.")
    datasets: list[str]


class DuplicatesReport(ApiModel):
    by_checksum: list[DuplicateGroup]
    by_identifier: list[DuplicateGroup]
    by_source: list[DuplicateGroup]


class HyspexScene(ApiModel):
    scene: str = Field(description="Identifier without its _rgb/-rgb/_z/-z suffix.")
    present: list[Literal["RGB", "Z"]]
    missing: list[Literal["RGB", "Z"]]
    datasets: list[str]


class HyspexCampaign(ApiModel):
    campaign: str
    scenes: list[HyspexScene]


class HyspexReport(ApiModel):
    campaigns: list[HyspexCampaign]


class RehashRequest(ApiModel):
    datasets: list[str] | None = Field(
        None, max_length=10000, description="Datasets to rehash (default: all)."
    )


class ResyncRequest(RehashRequest):
    pass


class PruneRequest(ApiModel):
    dry_run: bool = Field(True, description="Only list what would be deleted.")


class PruneResult(ApiModel):
    dry_run: bool
    datasets: list[str] = Field(description="Datasets whose source is gone (deleted unless dry run).")


# ------------------------------------------------------------------ services


class TileUrls(ApiModel):
    url: str | None = Field(None, description="Base URL of the tile cache.")
    wmts: str | None = Field(None, description="WMTS GetCapabilities.")
    tms: str | None = Field(None, description="TMS tile URL template.")
    xyz: str | None = Field(None, description="XYZ tile URL template ({dataset}, {z}, {x}, {y}).")
    wms: str | None = Field(None, description="Tiled WMS endpoint.")


class ServiceUrls(ApiModel):
    wms: str | None = Field(None, description="WMS GetCapabilities.")
    wfs: str | None = Field(None, description="WFS GetCapabilities (when a served dataset offers WFS).")
    wcs: str | None = Field(None, description="WCS GetCapabilities (when a served dataset offers WCS).")
    ogcapi: str | None = Field(None, description="OGC API landing page (when the service offers it).")
    tiles: TileUrls | None = Field(None, description="The tile cache, when the service has one.")


class ServiceItem(ApiModel):
    name: str
    title: str | None = None
    ready: bool
    reason: str | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    dataset_count: int | None = None
    url: str | None = Field(None, description="WMS endpoint.")
    created: str | None = None


class ServicePage(ApiModel):
    total: int
    limit: int
    offset: int
    items: list[ServiceItem]


class ServiceDetail(ServiceItem):
    abstract: str | None = None
    message: str | None = None
    labels: dict[str, str]
    generation: int | None = None
    observed_generation: int | None = None
    conditions: list[Condition]
    dataset_selector: LabelSelector
    datasets: list[str] = Field(description="Names of the MapDatasets in the live mapfile.")
    excluded: list[str] = Field(description="Selected datasets left out, with reasons.")
    mapfile_hash: str | None = None
    config_map: str | None = Field(None, description="ConfigMap holding the live mapfile.")
    urls: ServiceUrls


# ------------------------------------------------------------------ jobs


class JobView(ApiModel):
    id: str
    type: str | None = None
    state: JobState
    phase: str | None = None
    message: str | None = None
    result: dict[str, Any] | None = None
    created: str | None = None
    started: str | None = None
    finished: str | None = None


class JobPage(ApiModel):
    total: int
    limit: int
    offset: int
    items: list[JobView]


class MaintenanceResult(ApiModel):
    jobs: list[JobView]


class JobUnknown(ApiModel):
    id: str
    state: Literal["unknown"] = "unknown"
    detail: str
    field: str | None = None


class Tombstone(ApiModel):
    id: str
    type: str | None = None
    final_state: str
    deleted_by: str
    deleted_at: str


class TombstoneList(ApiModel):
    items: list[Tombstone]


class CleanupRequest(ApiModel):
    older_than_seconds: int | None = Field(
        None, ge=0, le=10 * 365 * 86400, description="Only jobs finished at least this long ago."
    )
    states: list[Literal["success", "failure", "cancelled"]] | None = Field(
        None, max_length=3, description="Only jobs in these terminal states (default: all terminal states)."
    )
    dry_run: bool = Field(False, description="List what would be deleted without deleting.")


class CleanupResult(ApiModel):
    dry_run: bool
    count: int
    jobs: list[JobView]


# ------------------------------------------------------------------ health


class Component(ApiModel):
    name: str
    status: Literal["ok", "degraded", "down", "unknown"]
    detail: str = ""


class HealthReport(ApiModel):
    status: Literal["ok", "degraded", "down"]
    version: str
    components: list[Component]
