"""MapJob: a processing job (conversion, terrain merge, hashing, metadata repair, ...) run as a
Kubernetes Job. `spec.type` selects exactly one parameter block (a discriminated union: the
Kubernetes way, one member field per type, enforced by CEL in the CRD and by pydantic here)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator

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
from .mapservice import SeedPolicy, _resources_text

DEFAULT_JOB_IMAGE = "ghcr.io/kube-mapserver/kube-mapserver:0.1.0"
# Requests/limits of job containers whose spec names none (GDAL's block cache is 256 MiB).
DEFAULT_JOB_RESOURCES = Resources(
    requests={"cpu": "100m", "memory": "128Mi"}, limits={"cpu": "2", "memory": "2Gi"}
)


def _no_dotdot(path: str) -> str:
    if ".." in path.split("/"):
        raise ValueError("path must stay inside the data volume (no '..' segments)")
    return path


DataPath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[^/\x00-\x1f\x7f\\][^\x00-\x1f\x7f\\]*$",
        description="Path relative to the data volume root; no '..' segments.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!self.split('/').exists(s, s == '..')",
                    "message": "path must stay inside the data volume (no '..' segments)",
                }
            ]
        },
    ),
    AfterValidator(_no_dotdot),
]
DatasetName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]


class JobType(StrEnum):
    nc_to_geotiff = "nc-to-geotiff"
    cog_convert = "cog-convert"
    merge_terrain = "merge-terrain"
    rehash = "rehash"
    repair_metadata = "repair-metadata"
    hyspex_variants = "hyspex-variants"
    inspect = "inspect"
    cache_seed = "cache-seed"
    cache_purge = "cache-purge"


class Compression(StrEnum):
    DEFLATE = "DEFLATE"
    LZW = "LZW"
    ZSTD = "ZSTD"
    JPEG = "JPEG"
    NONE = "NONE"


class NcToGeotiff(KModel):
    """Extract one variable (and time step) of a NetCDF file into a GeoTIFF."""

    input: DataPath = Field(description="NetCDF file.")
    variable: str = Field(
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$",
        description="NetCDF variable to extract.",
    )
    time_index: int = Field(0, ge=0, description="Index along the time dimension (0 for the first).")
    output: DataPath = Field(description="GeoTIFF to write.")


class CogConvert(KModel):
    """Convert a raster into a Cloud Optimized GeoTIFF."""

    input: DataPath = Field(description="Raster to convert.")
    output: DataPath = Field(description="COG to write.")
    compression: Compression = Field(Compression.DEFLATE, description="Compression of the COG.")
    overview_levels: list[Annotated[int, Field(ge=2, le=4096)]] = Field(
        default=[2, 4, 8, 16], max_length=16, description="Overview decimation factors."
    )


class MergeTerrain(KModel):
    """Merge terrain tiles into one raster covering their union."""

    inputs: list[DataPath] = Field(min_length=1, max_length=256, description="Tiles to merge (at most 256).")
    output: DataPath = Field(description="Merged raster to write.")
    nodata: float | None = Field(None, description="Nodata value of the output (default: the inputs').")


class Rehash(KModel):
    """Compute sha256 checksums of datasets' files (or of every file under a prefix)."""

    datasets: list[DatasetName] | None = Field(None, max_length=1000, description="MapDatasets to rehash.")
    path_prefix: DataPath | None = Field(None, description="Hash every file under this directory instead.")

    model_config = KModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.datasets) != has(self.pathPrefix)",
                    "message": "rehash needs exactly one of datasets or pathPrefix",
                }
            ]
        }
    }


class RepairMetadata(KModel):
    """Re-read datasets' files and refresh their metadata (extent, CRS, size, checksum)."""

    datasets: list[DatasetName] = Field(min_length=1, max_length=1000, description="MapDatasets to repair.")


class HyspexVariants(KModel):
    """Report HySpex scenes of a campaign that miss their RGB or Z variant; optionally register
    the missing variants found on disk as MapDatasets."""

    campaign: str = Field(min_length=1, max_length=200, pattern=SAFE_TEXT, description="Campaign to check.")
    create_missing: bool = Field(False, description="Create MapDatasets for variant files found on disk.")


class Inspect(KModel):
    """Fill a dataset's extent, CRS, size and checksum from its file."""

    dataset: DatasetName = Field(description="MapDataset to inspect.")


ServiceName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
CACHE_GRIDS = ("GoogleMapsCompatible", "WGS84")


class CacheSeed(SeedPolicy):
    """Fill a MapService's tile cache (its MapCache seeder) for datasets, zoom levels and an area."""

    service: ServiceName = Field(description="MapService whose tile cache is seeded.")
    datasets: list[DatasetName] | None = Field(
        None, max_length=1000, description="Datasets to seed (default: every dataset the service serves)."
    )


class CachePurge(KModel):
    """Delete tiles from a MapService's tile cache."""

    service: ServiceName = Field(description="MapService whose tile cache is purged.")
    datasets: list[DatasetName] | None = Field(
        None, max_length=1000, description="Datasets to purge (default: every dataset the service serves)."
    )
    keep_current: bool = Field(
        False, description="Keep tiles of each dataset's current version (remove only outdated tiles)."
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


PARAM_FIELDS: dict[str, str] = {
    "nc-to-geotiff": "ncToGeotiff",
    "cog-convert": "cogConvert",
    "merge-terrain": "mergeTerrain",
    "rehash": "rehash",
    "repair-metadata": "repairMetadata",
    "hyspex-variants": "hyspexVariants",
    "inspect": "inspect",
    "cache-seed": "cacheSeed",
    "cache-purge": "cachePurge",
}


class JobNetworkAccess(KModel):
    """The NetworkPolicy the operator creates with the job's pod (where the cluster's network plugin
    enforces NetworkPolicy): no connection to the pod, and none from it except what its type needs
    (cache-seed: DNS and the MapService's MapServer pods; the others work on files only)."""

    enabled: bool = Field(
        True, description="Create the policy (the operator's KMS_NETWORK_POLICIES can turn it off)."
    )


class MapJobSpec(KModel):
    """What to run: the type and its parameters, and how to run it."""

    type: JobType = Field(description="Job type; the parameter block of the same name must be set.")
    nc_to_geotiff: NcToGeotiff | None = Field(None, description="Parameters of nc-to-geotiff.")
    cog_convert: CogConvert | None = Field(None, description="Parameters of cog-convert.")
    merge_terrain: MergeTerrain | None = Field(None, description="Parameters of merge-terrain.")
    rehash: Rehash | None = Field(None, description="Parameters of rehash.")
    repair_metadata: RepairMetadata | None = Field(None, description="Parameters of repair-metadata.")
    hyspex_variants: HyspexVariants | None = Field(None, description="Parameters of hyspex-variants.")
    inspect: Inspect | None = Field(None, description="Parameters of inspect.")
    cache_seed: CacheSeed | None = Field(None, description="Parameters of cache-seed.")
    cache_purge: CachePurge | None = Field(None, description="Parameters of cache-purge.")
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
                    "rule": f"has(self.{field}) == (self.type == '{type_}')",
                    "message": f"type {type_} needs spec.{field}, and only type {type_} may set it",
                    "fieldPath": f".{field}",
                }
                for type_, field in PARAM_FIELDS.items()
            ]
            + [
                {"rule": "!has(oldSelf.type) || self.type == oldSelf.type", "message": "type is immutable"},
            ]
        }
    }

    @model_validator(mode="after")
    def _one_param_block(self) -> MapJobSpec:
        for type_, field in PARAM_FIELDS.items():
            member = getattr(self, _snake(field))
            if (member is not None) != (self.type == type_):
                raise ValueError(f"type {type_} needs spec.{field}, and only type {type_} may set it")
        return self

    @property
    def params(self) -> KModel:
        """The parameter block of this job's type (the active member of the union)."""
        return getattr(self, _snake(PARAM_FIELDS[self.type]))


def _snake(camel: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in camel)


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
