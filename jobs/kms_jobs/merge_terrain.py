"""merge-terrain: terrain tiles mosaicked into one tiled, deflate-compressed GeoTIFF."""

from __future__ import annotations

from typing import Any

from kms_crds.job_params import MergeTerrain

from .paths import DataRoot, atomic_output
from .rehash import sha256_file
from .result import JobError, Logger

Params = MergeTerrain


def _check_compatible(paths: dict[str, Any]) -> None:
    """All tiles must share CRS and band count (gdalbuildvrt would silently skip the odd ones)."""
    from osgeo import gdal, osr

    first_rel, first_srs, first_bands = None, None, None
    for rel, path in paths.items():
        try:
            ds = gdal.OpenEx(str(path), gdal.OF_RASTER | gdal.OF_READONLY)
        except RuntimeError as e:
            raise JobError(f"input {rel!r} is not a readable raster: {e}") from None
        if ds.GetGeoTransform(can_return_null=True) is None:
            raise JobError(f"input {rel!r} is not georeferenced")
        wkt = ds.GetProjection()
        srs = osr.SpatialReference(wkt=wkt) if wkt else None
        if first_rel is None:
            first_rel, first_srs, first_bands = rel, srs, ds.RasterCount
            continue
        same_crs = (srs is None and first_srs is None) or (
            srs is not None and first_srs is not None and srs.IsSame(first_srs)
        )
        if not same_crs:
            raise JobError(f"input {rel!r} has a different CRS than {first_rel!r}; reproject the tiles first")
        if ds.RasterCount != first_bands:
            raise JobError(f"input {rel!r} has {ds.RasterCount} bands, {first_rel!r} has {first_bands}")


def _predictor(ds) -> int:
    """The GTiff predictor for the data type: 3 (floating point) or 2 (horizontal differencing)."""
    from osgeo import gdal

    data_type = ds.GetRasterBand(1).DataType
    return 3 if data_type in (gdal.GDT_Float32, gdal.GDT_Float64) else 2


def run(params: MergeTerrain, root: DataRoot, log: Logger) -> dict[str, Any]:
    from osgeo import gdal

    inputs = {rel: root.input_file(rel, "input") for rel in params.inputs}
    dst = root.output_file(params.output)
    _check_compatible(inputs)
    vrt_options: dict[str, Any] = {"resolution": "highest"}
    if params.nodata is not None:
        vrt_options.update(srcNodata=params.nodata, VRTNodata=params.nodata)
    log.info("mosaicking", tiles=len(inputs))
    vrt = gdal.BuildVRT("", [str(p) for p in inputs.values()], options=gdal.BuildVRTOptions(**vrt_options))
    if vrt is None:
        raise RuntimeError(f"gdalbuildvrt failed: {gdal.GetLastErrorMsg()}")
    with atomic_output(dst) as tmp:
        out = gdal.Translate(
            str(tmp),
            vrt,
            format="GTiff",
            creationOptions=[
                "TILED=YES",
                "COMPRESS=DEFLATE",
                f"PREDICTOR={_predictor(vrt)}",
                "BIGTIFF=IF_SAFER",
            ],
            callback=log.progress("writing merged raster"),
        )
        if out is None:
            raise RuntimeError(f"GDAL could not write {params.output!r}: {gdal.GetLastErrorMsg()}")
        size = (out.RasterXSize, out.RasterYSize)
        out = None
    vrt = None
    return {
        "output": params.output,
        "checksum": sha256_file(dst),
        "size": dst.stat().st_size,
        "tiles": len(inputs),
        "rasterSize": list(size),
    }
