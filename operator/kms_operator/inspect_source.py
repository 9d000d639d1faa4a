"""Check a dataset's source and read its extent, size and shape with GDAL/OGR.

Bad input is reported as an InspectError with a CamelCase reason; it never raises anything else
for a file the user controls."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from kms_crds.mapdataset import Extent, MapDatasetSpec, MapDatasetStatus, ValueRange

from .settings import Settings


class InspectError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class Inspection:
    extent: Extent | None = None
    wgs84_bbox: list[float] | None = None
    size: int | None = None
    geometry_type: str | None = None
    source_layer: str | None = None
    band_count: int | None = None
    value_range: ValueRange | None = None
    warnings: list[str] = field(default_factory=list)

    def status(self, layer_name: str) -> MapDatasetStatus:
        """The dataset status fields this inspection fills in (its shape and its layer's name)."""
        return MapDatasetStatus(
            extent=self.extent,
            wgs84_bbox=self.wgs84_bbox,
            geometry_type=self.geometry_type,
            source_layer=self.source_layer,
            band_count=self.band_count,
            value_range=self.value_range,
            size=self.size,
            layer_name=layer_name,
        )


def resolve_path(rel: str, settings: Settings) -> Path:
    """The real file behind `source.path`, refusing anything outside the data root and the allowed roots."""
    if rel.startswith("/") or "\x00" in rel or any(part == ".." for part in rel.split("/")):
        raise InspectError(
            "SourceOutsideDataRoot", f"source.path {rel!r} must be relative and stay inside the data volume"
        )
    root = settings.data_root.resolve()
    real = (root / rel).resolve()  # follows symlinks: a link pointing outside is caught below
    if root != real and root not in real.parents:
        raise InspectError("SourceOutsideDataRoot", f"source.path {rel!r} resolves outside the data volume")
    relreal = real.relative_to(root).as_posix()
    if settings.allowed_roots and not any(
        relreal == r.rstrip("/") or relreal.startswith(r.rstrip("/") + "/") for r in settings.allowed_roots
    ):
        raise InspectError(
            "SourceNotAllowed",
            f"source.path {rel!r} is not under an allowed data root ({', '.join(settings.allowed_roots)})",
        )
    if not real.exists():
        raise InspectError("SourceNotFound", f"source.path {rel!r} does not exist on the data volume")
    return real


def check_url(url: str, settings: Settings) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise InspectError(
            "SourceURLNotAllowed", f"source.url scheme {parts.scheme!r} is not allowed (http/https)"
        )
    if not any(fnmatch.fnmatchcase(host, pattern) for pattern in settings.allowed_url_hosts):
        raise InspectError(
            "SourceURLNotAllowed",
            f"host {host!r} of source.url is not in the operator's allowed URL hosts (KMS_ALLOWED_URL_HOSTS)",
        )
    return "/vsicurl/" + url


def _wgs84(bbox: list[float], wkt: str) -> list[float] | None:
    from osgeo import osr

    src = osr.SpatialReference()
    if not wkt or src.SetFromUserInput(wkt) != 0:
        return None
    dst = osr.SpatialReference()
    dst.ImportFromEPSG(4326)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    minx, miny, maxx, maxy = bbox
    out = osr.CoordinateTransformation(src, dst).TransformBounds(minx, miny, maxx, maxy, 21)
    return [round(v, 8) for v in out]


def _crs_code(wkt: str, fallback: str | None) -> str:
    from osgeo import osr

    if fallback:
        return fallback
    srs = osr.SpatialReference()
    if wkt and srs.SetFromUserInput(wkt) == 0:
        srs.AutoIdentifyEPSG()
        auth, code = srs.GetAuthorityName(None), srs.GetAuthorityCode(None)
        if auth and code:
            return f"{auth}:{code}"
    return "unknown"


def _raster(gdal_path: str, spec: MapDatasetSpec) -> Inspection:
    from osgeo import gdal, osr

    ds = gdal.OpenEx(gdal_path, gdal.OF_RASTER | gdal.OF_READONLY)
    if ds is None:
        raise InspectError(
            "SourceUnreadable", f"GDAL cannot open the source as a raster: {gdal.GetLastErrorMsg()}"
        )
    gt = ds.GetGeoTransform(can_return_null=True)
    if gt is None:
        raise InspectError("SourceNotGeoreferenced", "the raster has no geotransform")
    w, h = ds.RasterXSize, ds.RasterYSize
    xs = [gt[0], gt[0] + gt[1] * w + gt[2] * h]
    ys = [gt[3], gt[3] + gt[4] * w + gt[5] * h]
    bbox = [min(xs), min(ys), max(xs), max(ys)]
    wkt = own_wkt = ds.GetProjection()  # (once: GDAL formats the WKT on every call)
    if not wkt and spec.projection:
        srs = osr.SpatialReference()
        srs.SetFromUserInput(spec.projection)
        wkt = srs.ExportToWkt()
    insp = Inspection(
        extent=Extent(bbox=bbox, crs=_crs_code(own_wkt, spec.projection)),
        band_count=ds.RasterCount,
        wgs84_bbox=_wgs84(bbox, wkt),
    )
    if ds.RasterCount >= 1:
        lo, hi = ds.GetRasterBand(1).ComputeRasterMinMax(True)
        insp.value_range = ValueRange(min=lo, max=hi)
    return insp


_GEOMS = {1: "POINT", 4: "POINT", 2: "LINE", 5: "LINE", 3: "POLYGON", 6: "POLYGON"}


def _vector(gdal_path: str, spec: MapDatasetSpec) -> Inspection:
    from osgeo import gdal, ogr

    ds = gdal.OpenEx(gdal_path, gdal.OF_VECTOR | gdal.OF_READONLY)
    if ds is None:
        raise InspectError(
            "SourceUnreadable", f"OGR cannot open the source as vector data: {gdal.GetLastErrorMsg()}"
        )
    layer = ds.GetLayerByName(spec.source.layer) if spec.source.layer else ds.GetLayer(0)
    if layer is None:
        raise InspectError(
            "SourceLayerNotFound", f"vector layer {spec.source.layer!r} not found in the source"
        )
    minx, maxx, miny, maxy = layer.GetExtent(force=True)
    srs = layer.GetSpatialRef()
    wkt = srs.ExportToWkt() if srs else ""
    if not wkt and spec.projection:
        from osgeo import osr

        s = osr.SpatialReference()
        s.SetFromUserInput(spec.projection)
        wkt = s.ExportToWkt()
    bbox = [minx, miny, maxx, maxy]
    return Inspection(
        extent=Extent(bbox=bbox, crs=_crs_code(srs.ExportToWkt() if srs else "", spec.projection)),
        wgs84_bbox=_wgs84(bbox, wkt),
        geometry_type=_GEOMS.get(ogr.GT_Flatten(layer.GetGeomType()), "POLYGON"),
        source_layer=layer.GetName(),
    )


def inspect_source(spec: MapDatasetSpec, settings: Settings) -> Inspection:
    """Validate the source against the operator's data root and allow-lists, then read it with GDAL."""
    from osgeo import gdal

    gdal.UseExceptions()
    gdal.SetConfigOption("GDAL_HTTP_TIMEOUT", "10")
    if spec.source.path is not None:
        real = resolve_path(spec.source.path, settings)
        gdal_path, size = str(real), (os.path.getsize(real) if real.is_file() else None)
    elif spec.source.url is not None:
        gdal_path, size = check_url(spec.source.url, settings), None
    else:
        raise InspectError("SourceMissing", "source needs a path or a url")
    try:
        insp = _raster(gdal_path, spec) if spec.type == "raster" else _vector(gdal_path, spec)
    except InspectError:
        raise
    except RuntimeError as e:  # GDAL errors with UseExceptions
        raise InspectError("SourceUnreadable", f"GDAL could not read the source: {e}") from None
    insp.size = size
    return insp
