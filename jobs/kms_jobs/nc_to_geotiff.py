"""nc-to-geotiff: one variable and time step of a NetCDF file as a GeoTIFF."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kms_crds.job_params import NcToGeotiff

from .paths import DataRoot, atomic_output
from .rehash import sha256_file
from .result import JobError, Logger

Params = NcToGeotiff


def variable_names(path: Path, rel: str) -> tuple[list[str], list[str]]:
    """(gridded data variables, all variables) of a NetCDF file; JobError if it is not NetCDF."""
    from osgeo import gdal

    try:
        ds = gdal.OpenEx(str(path), gdal.OF_MULTIDIM_RASTER, allowed_drivers=["netCDF"])
    except RuntimeError as e:
        raise JobError(f"{rel!r} is not a readable NetCDF file: {e}") from None
    group = ds.GetRootGroup()
    dims = {d.GetName() for d in group.GetDimensions() or []}
    everything = sorted(group.GetMDArrayNames() or [])
    grids = [n for n in everything if n not in dims and group.OpenMDArray(n).GetDimensionCount() >= 2]
    return grids, everything


def _open_variable(path: Path, rel: str, variable: str):
    from osgeo import gdal

    grids, everything = variable_names(path, rel)
    if variable not in everything:
        raise JobError(f"variable {variable!r} not found in {rel!r}; variables: {', '.join(grids) or 'none'}")
    if variable not in grids:
        raise JobError(
            f"variable {variable!r} of {rel!r} is not a 2-D grid; "
            f"gridded variables: {', '.join(grids) or 'none'}"
        )
    try:
        src = gdal.Open(f'NETCDF:"{path}":{variable}')
    except RuntimeError as e:
        raise JobError(f"cannot open variable {variable!r} of {rel!r}: {e}") from None
    extra = (src.GetMetadataItem("NETCDF_DIM_EXTRA") or "{}").strip("{}")
    if "," in extra:
        raise JobError(
            f"variable {variable!r} of {rel!r} has several non-spatial dimensions ({extra}); "
            "only one (time) is supported"
        )
    return src


def run(params: NcToGeotiff, root: DataRoot, log: Logger) -> dict[str, Any]:
    from osgeo import gdal

    src_path = root.input_file(params.input)
    dst = root.output_file(params.output)
    src = _open_variable(src_path, params.input, params.variable)
    steps = src.RasterCount
    if params.time_index >= steps:
        raise JobError(
            f"timeIndex {params.time_index} is out of range: variable {params.variable!r} has {steps} "
            f"time step{'s' if steps != 1 else ''} (0..{steps - 1})"
        )
    if src.GetGeoTransform(can_return_null=True) is None:
        log.warning(f"variable {params.variable!r} has no georeferencing; writing pixel coordinates")
    band = params.time_index + 1
    log.info("extracting", variable=params.variable, timeIndex=params.time_index, bands=steps)
    with atomic_output(dst) as tmp:
        out = gdal.Translate(
            str(tmp),
            src,
            format="GTiff",
            bandList=[band],
            creationOptions=["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"],
            callback=log.progress("translating"),
        )
        if out is None:
            raise RuntimeError(f"GDAL could not write {params.output!r}: {gdal.GetLastErrorMsg()}")
        nodata = src.GetRasterBand(band).GetNoDataValue()
        if nodata is not None:
            out.GetRasterBand(1).SetNoDataValue(nodata)
        out.FlushCache()
        out = None
    src = None
    return {"output": params.output, "checksum": sha256_file(dst), "size": dst.stat().st_size}
