"""The MapJob types, declared once. Everything that lists job types derives it from `JOB_TYPES`: the
CRD model (`mapjob`: the `spec.type` enum, one parameter block per type, its CEL rules), the facade
(one typed creation route per type that has `api_route`), the operator (how a type's parameters
reach the runner, its NetworkPolicy, the volume it mounts) and the runner (`kube-mapserver-job
<type>` calls `runner`). Adding a type: a parameter model (`job_params`), an entry here, and the
runner module in `kms_jobs` (see `operator/README.md`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .common import KModel
from .job_params import (
    CachePurge,
    CacheSeed,
    CogConvert,
    HyspexVariants,
    Inspect,
    MergeTerrain,
    NcToGeotiff,
    Rehash,
    RepairMetadata,
)


class Inputs(StrEnum):
    """What a type's parameters name, i.e. how the operator turns them into the runner's."""

    files = "files"  # files under the data volume: passed to the runner unchanged
    datasets = "datasets"  # MapDatasets (`dataset_fields`): the runner gets {"paths": {name: file}}
    campaign = "campaign"  # a HySpex campaign: the runner gets its datasets (name, variant, file)
    tile_cache = "tile-cache"  # a MapService's tile cache: its MapCache config; the cache volume mounted


@dataclass(frozen=True)
class JobTypeInfo:
    """One job type."""

    name: str  # spec.type, the runner's subcommand, the facade route /jobs/<name>
    field: str  # the spec's parameter block (camelCase)
    params: type[KModel]  # the parameter block's model
    description: str  # one line
    inputs: Inputs
    runner: str  # "<module>:<function>" in kms_jobs, called as function(params, root, log)
    dataset_fields: tuple[str, ...] = ()  # parameters (snake_case) naming MapDatasets
    writes_output: bool = False  # writes params.output (spec.output can register it as a MapDataset)
    writes_status: bool = False  # writes results into MapDatasets' status (checksum, metadata, cache)
    mapserver_egress: bool = False  # its pod talks to the MapService's MapServer (NetworkPolicy egress)
    api_route: bool = True  # the facade offers POST /jobs/<name> (else only other routes create it)

    @property
    def attr(self) -> str:
        """The parameter block's attribute on `MapJobSpec` (snake_case)."""
        return "".join("_" + c.lower() if c.isupper() else c for c in self.field)

    @property
    def cache_volume(self) -> bool:
        """It works on the tile cache volume (mounted at the runner's --cache-root), not the data root."""
        return self.inputs is Inputs.tile_cache


JOB_TYPES: tuple[JobTypeInfo, ...] = (
    JobTypeInfo(
        "nc-to-geotiff",
        "ncToGeotiff",
        NcToGeotiff,
        "Extract one variable (and time step) of a NetCDF file into a GeoTIFF.",
        Inputs.files,
        "nc_to_geotiff:run",
        writes_output=True,
    ),
    JobTypeInfo(
        "cog-convert",
        "cogConvert",
        CogConvert,
        "Convert a raster into a Cloud Optimized GeoTIFF.",
        Inputs.files,
        "cog_convert:run",
        writes_output=True,
    ),
    JobTypeInfo(
        "merge-terrain",
        "mergeTerrain",
        MergeTerrain,
        "Merge terrain tiles into one raster covering their union.",
        Inputs.files,
        "merge_terrain:run",
        writes_output=True,
    ),
    JobTypeInfo(
        "rehash",
        "rehash",
        Rehash,
        "Compute sha256 checksums of datasets' files (or of every file under a prefix).",
        Inputs.datasets,  # or, with pathPrefix instead of datasets, files
        "rehash:run",
        dataset_fields=("datasets",),
        writes_status=True,
    ),
    JobTypeInfo(
        "repair-metadata",
        "repairMetadata",
        RepairMetadata,
        "Re-read datasets' files and refresh their metadata (extent, CRS, size, checksum).",
        Inputs.datasets,
        "metadata:run",
        dataset_fields=("datasets",),
        writes_status=True,
    ),
    JobTypeInfo(
        "hyspex-variants",
        "hyspexVariants",
        HyspexVariants,
        "Report HySpex scenes missing their RGB or Z variant; optionally register the ones on disk.",
        Inputs.campaign,
        "hyspex:run",
    ),
    JobTypeInfo(
        "inspect",
        "inspect",
        Inspect,
        "Fill a dataset's extent, CRS, size and checksum from its file.",
        Inputs.datasets,
        "metadata:run",
        dataset_fields=("dataset",),
        writes_status=True,
    ),
    JobTypeInfo(
        "cache-seed",
        "cacheSeed",
        CacheSeed,
        "Fill a MapService's tile cache for datasets, zoom levels and an area.",
        Inputs.tile_cache,
        "tilecache:seed",
        writes_status=True,
        mapserver_egress=True,
        api_route=False,  # POST /cache/... and the operator's automatic seeding
    ),
    JobTypeInfo(
        "cache-purge",
        "cachePurge",
        CachePurge,
        "Delete tiles from a MapService's tile cache.",
        Inputs.tile_cache,
        "tilecache:purge",
        writes_status=True,
        api_route=False,  # DELETE /cache/... and the operator's automatic purging
    ),
)
BY_NAME: dict[str, JobTypeInfo] = {t.name: t for t in JOB_TYPES}


def job_type(name: str) -> JobTypeInfo:
    """The type called `name` (KeyError for an unknown one)."""
    return BY_NAME[name]


def named_datasets(info: JobTypeInfo, params: KModel) -> list[str] | None:
    """The MapDatasets the parameters name (None when they name none, e.g. rehash by pathPrefix)."""
    values = [getattr(params, f) for f in info.dataset_fields]
    if all(v is None for v in values):
        return None
    names: list[str] = []
    for v in values:
        names += [v] if isinstance(v, str) else list(v or [])
    return names
