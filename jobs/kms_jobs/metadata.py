"""repair-metadata and inspect: extent, CRS, WGS84 bbox, size and checksum of datasets' files."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from .paths import DataRoot, DatasetPaths
from .rehash import sha256_file
from .result import JobError, Logger

Params = DatasetPaths

# OGR geometry type (flattened) -> the MapDataset geometryType
_GEOMETRY = {1: "POINT", 4: "POINT", 2: "LINE", 5: "LINE", 3: "POLYGON", 6: "POLYGON"}


def _srs(wkt: str):
    from osgeo import osr

    if not wkt:
        return None
    srs = osr.SpatialReference()
    if srs.SetFromUserInput(wkt) != 0:
        return None
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def crs_code(srs) -> str:
    """`AUTH:code` (e.g. EPSG:4326) of a CRS, or "unknown"."""
    if srs is None:
        return "unknown"
    srs = srs.Clone()
    if srs.GetAuthorityCode(None) is None:
        with contextlib.suppress(RuntimeError):  # raises when no EPSG code matches
            srs.AutoIdentifyEPSG()
    auth, code = srs.GetAuthorityName(None), srs.GetAuthorityCode(None)
    return f"{auth}:{code}" if auth and code else "unknown"


def wgs84_bbox(bbox: list[float], srs) -> list[float] | None:
    from osgeo import osr

    if srs is None:
        return None
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    wgs84.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    try:
        bounds = osr.CoordinateTransformation(srs, wgs84).TransformBounds(*bbox, 21)
    except RuntimeError:  # e.g. an extent outside the CRS's area of use
        return None
    return [round(v, 8) for v in bounds]


def _raster(ds, what: str) -> dict[str, Any]:
    gt = ds.GetGeoTransform(can_return_null=True)
    if gt is None:
        raise JobError(f"{what} is a raster without georeferencing (no geotransform)")
    w, h = ds.RasterXSize, ds.RasterYSize
    xs = [gt[0] + gt[1] * px + gt[2] * py for px, py in ((0, 0), (w, 0), (0, h), (w, h))]
    ys = [gt[3] + gt[4] * px + gt[5] * py for px, py in ((0, 0), (w, 0), (0, h), (w, h))]
    bbox = [min(xs), min(ys), max(xs), max(ys)]
    srs = _srs(ds.GetProjection())
    return {"bbox": bbox, "srs": srs, "bandCount": ds.RasterCount}


def _vector(ds, what: str) -> dict[str, Any]:
    from osgeo import ogr

    if ds.GetLayerCount() == 0:
        raise JobError(f"{what} has no vector layers")
    layer = ds.GetLayer(0)
    try:
        minx, maxx, miny, maxy = layer.GetExtent(force=True)
    except RuntimeError as e:
        raise JobError(f"{what}: cannot compute the extent of layer {layer.GetName()!r}: {e}") from None
    ref = layer.GetSpatialRef()
    srs = _srs(ref.ExportToWkt()) if ref is not None else None
    geometry = _GEOMETRY.get(ogr.GT_Flatten(layer.GetGeomType()))
    out: dict[str, Any] = {"bbox": [minx, miny, maxx, maxy], "srs": srs}
    if geometry:
        out["geometryType"] = geometry
    return out


def describe(path: Path, what: str) -> dict[str, Any]:
    """Metadata of one file: a raster if GDAL opens it as one, else a vector, else JobError."""
    from osgeo import gdal

    info: dict[str, Any] | None = None
    errors = []
    for flag, reader in ((gdal.OF_RASTER, _raster), (gdal.OF_VECTOR, _vector)):
        try:
            ds = gdal.OpenEx(str(path), flag | gdal.OF_READONLY)
        except RuntimeError as e:
            errors.append(str(e))
            continue
        info = reader(ds, what)
        break
    if info is None:
        raise JobError(f"{what} is neither a raster nor vector data GDAL can read ({errors[-1]})")
    srs = info.pop("srs")
    bbox = [round(v, 9) for v in info.pop("bbox")]
    meta: dict[str, Any] = {"extent": {"bbox": bbox, "crs": crs_code(srs)}}
    wgs84 = wgs84_bbox(bbox, srs)
    if wgs84 is not None:
        meta["wgs84Bbox"] = wgs84
    meta["size"] = path.stat().st_size
    meta["checksum"] = sha256_file(path)
    meta.update(info)
    return meta


def run(params: DatasetPaths, root: DataRoot, log: Logger) -> dict[str, Any]:
    files = {name: root.input_file(rel, f"dataset {name}") for name, rel in params.paths.items()}
    metadata: dict[str, Any] = {}
    progress = log.progress("reading metadata")
    for i, (name, path) in enumerate(files.items(), 1):
        metadata[name] = describe(path, f"dataset {name} ({params.paths[name]!r})")
        progress(i / len(files))
    return {"count": len(metadata), "metadata": metadata}
