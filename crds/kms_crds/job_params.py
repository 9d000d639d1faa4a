"""The parameter models of the MapJob types (one per type, listed in `job_types`) and the path
and name types they share with the runner."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field

from .common import SAFE_TEXT, KModel
from .mapservice import SeedPolicy


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
