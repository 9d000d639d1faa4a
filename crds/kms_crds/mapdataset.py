"""MapDataset: a raster or vector source, how it is styled and which OGC protocols serve it."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from .common import SAFE_TEXT, Condition, KModel, PrinterColumn, Resource, ResourceMeta, status_field

Keyword = Annotated[str, Field(min_length=1, max_length=100, pattern=SAFE_TEXT)]


class DatasetType(StrEnum):
    raster = "raster"
    vector = "vector"


class Protocol(StrEnum):
    WMS = "WMS"
    WCS = "WCS"
    WFS = "WFS"
    OGCAPI = "OGCAPI"  # OGC API - Features (vectors), at the service's /<service>/ogcapi


class ColorRamp(StrEnum):
    viridis = "viridis"
    magma = "magma"
    terrain = "terrain"
    greys = "greys"
    blues = "blues"
    rdylbu = "rdylbu"


class Variant(StrEnum):
    RGB = "RGB"
    Z = "Z"


class Source(KModel):
    """Where the data is: a path under the service's data volume, or a GDAL-readable URL."""

    path: str | None = Field(
        None,
        description="Path relative to the data volume root, e.g. ocean/sst.tif. No '..', not absolute.",
        max_length=1024,
        pattern=r"^[^/\x00-\x1f\x7f\\][^\x00-\x1f\x7f\\]*$",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!self.split('/').exists(p, p == '..')",
                    "message": "source.path must stay inside the data volume (no '..' segments)",
                }
            ]
        },
    )
    url: str | None = Field(
        None,
        description="An http(s) URL GDAL reads through /vsicurl/ (e.g. a Cloud Optimized GeoTIFF).",
        max_length=2048,
        pattern=r"^https?://[^\s\"'\\]+$",
    )
    layer: str | None = Field(
        None,
        description="For vector sources with several layers: the layer to serve.",
        max_length=256,
        pattern=SAFE_TEXT,
    )
    feature_id: str | None = Field(
        None,
        description="Vector: an attribute whose values are unique per feature, used as the WFS feature "
        "id (gml:id). Default: the feature's index in the source (OGR's FID), stable while the file is.",
        max_length=63,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
    )

    # (each rule sits on the smallest object it reads: the apiserver evaluates every rule on
    # every write, status writes included, and its cost grows with the object it is given)
    model_config = KModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.path) != has(self.url)",
                    "message": "source needs exactly one of path or url",
                }
            ]
        }
    }


class ValueRange(KModel):
    min: float = Field(description="Value mapped to the first colour of the ramp.")
    max: float = Field(description="Value mapped to the last colour of the ramp.")


class VectorClass(KModel):
    """One class of a vector layer: features whose `classItem` attribute equals `value`."""

    name: str = Field(description="Legend label.", max_length=200, pattern=SAFE_TEXT)
    value: str = Field(
        description="Attribute value selecting the features of this class.", max_length=200, pattern=SAFE_TEXT
    )
    color: str = Field(description="Fill colour, #rrggbb.", pattern=r"^#[0-9a-fA-F]{6}$")


class Style(KModel):
    """How the dataset is drawn."""

    color_ramp: ColorRamp | None = Field(None, description="Raster: colour ramp for single-band data.")
    classes: int | None = Field(
        None, ge=2, le=64, description="Raster: number of colour classes of the ramp."
    )
    min_classes: int = Field(
        2,
        ge=1,
        le=64,
        description="Smallest number of classes accepted for this dataset (classes >= minClasses).",
    )
    range: ValueRange | None = Field(
        None, description="Raster: data range of the ramp (default: the band's)."
    )
    bands: list[int] | None = Field(
        None, min_length=1, max_length=3, description="Raster: band numbers to draw (3 for RGB), 1-based."
    )
    nodata: float | None = Field(None, description="Raster: value drawn transparent.")
    opacity: int = Field(100, ge=0, le=100, description="Layer opacity in percent.")
    color: str | None = Field(None, pattern=r"^#[0-9a-fA-F]{6}$", description="Vector: fill colour, #rrggbb.")
    outline_color: str | None = Field(
        None, pattern=r"^#[0-9a-fA-F]{6}$", description="Vector: outline colour."
    )
    class_item: str | None = Field(
        None,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Vector: attribute the classes select on.",
    )
    vector_classes: list[VectorClass] | None = Field(None, max_length=256, description="Vector: classes.")
    min_scale_denom: float | None = Field(
        None, ge=0, description="Hide the layer when zoomed out beyond this."
    )
    max_scale_denom: float | None = Field(
        None, ge=0, description="Hide the layer when zoomed in beyond this."
    )

    model_config = KModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.classes) || self.classes >= self.minClasses",
                    "message": "style.classes must be at least style.minClasses",
                    "fieldPath": ".classes",
                },
                {
                    "rule": "!has(self.range) || self.range.min < self.range.max",
                    "message": "style.range.min must be below style.range.max",
                    "fieldPath": ".range",
                },
            ]
        }
    }


class MapDatasetSpec(KModel):
    """A raster or vector source and how it is styled and served."""

    type: DatasetType = Field(description="raster or vector.")
    source: Source = Field(description="Where the data is.")
    identifier: str = Field(
        description="Stable public identifier, e.g. no.met:sst-2024-01. Also the OGC layer name (sanitised).",
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
    )
    title: str = Field(
        description="Human title shown in capabilities.", min_length=1, max_length=500, pattern=SAFE_TEXT
    )
    abstract: str | None = Field(None, description="Longer description.", max_length=4000, pattern=SAFE_TEXT)
    keywords: list[Keyword] | None = Field(
        None, max_length=50, description="Keywords for search and capabilities."
    )
    projection: str | None = Field(
        None,
        pattern=r"^EPSG:[0-9]{4,6}$",
        description="CRS of the data when the file does not say it, e.g. EPSG:4326.",
    )
    style: Style | None = Field(None, description="How the dataset is drawn.")
    variant: Variant | None = Field(None, description="HySpex-style scene variant: RGB or Z (elevation).")
    campaign: str | None = Field(
        None, max_length=200, pattern=SAFE_TEXT, description="HySpex campaign the scene belongs to."
    )
    protocols: list[Protocol] = Field(
        default=[Protocol.WMS],
        min_length=1,
        max_length=4,
        description="OGC services that serve the dataset: WMS; WCS for rasters; WFS and OGCAPI (OGC API "
        "- Features: a collection of the service's /<service>/ogcapi) for vectors.",
    )

    model_config = KModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    # one rule for the three type/protocol pairs: a rule costs the apiserver on
                    # every write (operator/README.md, "Scale"); the message names the one broken
                    "rule": "self.type == 'raster'"
                    " ? !('WFS' in self.protocols) && !('OGCAPI' in self.protocols)"
                    " : !('WCS' in self.protocols)",
                    "messageExpression": "self.type == 'vector' ? 'WCS serves rasters only'"
                    " : 'WFS' in self.protocols ? 'WFS serves vectors only'"
                    " : 'OGC API - Features serves vectors only'",
                    "message": "WCS serves rasters only; WFS and OGCAPI serve vectors only",
                    "fieldPath": ".protocols",
                },
            ]
        }
    }


class Extent(KModel):
    bbox: list[float] = Field(description="minx, miny, maxx, maxy in `crs`.", min_length=4, max_length=4)
    crs: str = Field(description="CRS of the bbox, e.g. EPSG:4326.")


class DatasetTileCache(KModel):
    service: str | None = Field(None, description="MapService whose cache holds the tiles.")
    version: str | None = Field(None, description="Cache version: changes whenever the rendering may change.")
    xyz: str | None = Field(None, description="XYZ tile URL template ({z}/{x}/{y}, web mercator).")
    wmts: str | None = Field(None, description="WMTS GetCapabilities URL.")
    wms: str | None = Field(
        None, description="Tiled WMS GetCapabilities URL (layer name: the dataset's name)."
    )


class SeededTiles(KModel):
    version: str | None = Field(None, description="Cache version the tiles were seeded for.")
    grid: str | None = Field(None, description="Grid seeded.")
    min_zoom: int | None = Field(None, description="First zoom level seeded.")
    max_zoom: int | None = Field(None, description="Last zoom level seeded.")
    tiles: int | None = Field(None, description="Tiles seeded.")
    bytes: int | None = Field(None, description="Size of the dataset's cached tiles after seeding.")
    job: str | None = Field(None, description="The MapJob that seeded them.")
    time: str | None = Field(None, description="When seeding finished.")


# The status fields (wire names) that hold the inspected shape of the data: what a rendering of the
# dataset depends on besides its spec (the operator's mapfile render key and tile cache versions).
SHAPE_STATUS_FIELDS = ("extent", "wgs84Bbox", "geometryType", "bandCount", "valueRange", "layerName")


class MapDatasetStatus(KModel):
    conditions: list[Condition] | None = Field(
        None,
        description="Ready, Progressing, Degraded, Reconciling, Stalled (True, with the reason, when the "
        "source is missing, unreadable or not allowed: fixed only by a spec change).",
    )
    observed_generation: int | None = Field(
        None, description="The metadata.generation last reconciled (behind it: work in progress)."
    )
    extent: Extent | None = Field(None, description="Extent read from the data, in its own CRS.")
    wgs84_bbox: list[float] | None = Field(
        None, min_length=4, max_length=4, description="Extent in EPSG:4326: minlon, minlat, maxlon, maxlat."
    )
    geometry_type: str | None = Field(
        None, description="Vector: POINT, LINE or POLYGON (read from the data)."
    )
    band_count: int | None = Field(None, description="Raster: number of bands.")
    value_range: ValueRange | None = Field(None, description="Raster: min/max of band 1 (approximate).")
    size: int | None = Field(None, description="Size of the source in bytes (local files).")
    checksum: str | None = Field(None, description="sha256 of the source file, when known (MapJob rehash).")
    served_by: list[str] | None = Field(None, description="MapServices that serve this dataset.")
    layer_name: str | None = Field(None, description="OGC layer name of the dataset.")
    source_layer: str | None = Field(
        None, description="Vector: the source layer served (source.layer or the first)."
    )
    url: str | None = Field(None, description="OGC endpoint (WMS) of the first service that serves it.")
    ogcapi: str | None = Field(
        None,
        description="Vector with protocol OGCAPI: its OGC API - Features collection at the first service "
        "that serves it (items: <ogcapi>/items?f=json).",
    )
    tile_cache: DatasetTileCache | None = Field(
        None, description="The tile cache of the first serving service that has one."
    )
    tile_cache_seeded: SeededTiles | None = Field(
        None, description="The last seeding of this dataset's tiles."
    )


class MapDataset(Resource):
    """A raster or vector source and how it is styled and served."""

    spec: MapDatasetSpec
    status: MapDatasetStatus | None = status_field()

    crd = ResourceMeta(
        kind="MapDataset",
        plural="mapdatasets",
        singular="mapdataset",
        short_names=["mds"],
        printer_columns=[
            PrinterColumn(name="Type", type="string", json_path=".spec.type"),
            PrinterColumn(
                name="Ready", type="string", json_path='.status.conditions[?(@.type=="Ready")].status'
            ),
            PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
            PrinterColumn(name="URL", type="string", json_path=".status.url"),
            PrinterColumn(name="Identifier", type="string", json_path=".spec.identifier", priority=1),
            PrinterColumn(name="OGC API", type="string", json_path=".status.ogcapi", priority=1),
            PrinterColumn(
                name="Reason",
                type="string",
                json_path='.status.conditions[?(@.type=="Ready")].reason',
                priority=1,
            ),
        ],
    )
