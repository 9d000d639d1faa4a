"""cog-convert: a raster as a Cloud Optimized GeoTIFF with the requested overview levels."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kms_crds.job_params import CogConvert

from .paths import DataRoot, atomic_output
from .rehash import sha256_file
from .result import JobError, Logger

Params = CogConvert


def _open_raster(path: Path, rel: str):
    from osgeo import gdal

    try:
        return gdal.OpenEx(str(path), gdal.OF_RASTER | gdal.OF_READONLY)
    except RuntimeError as e:
        raise JobError(f"input {rel!r} is not a readable raster: {e}") from None


def _check_jpeg(src, rel: str) -> None:
    from osgeo import gdal

    types = {src.GetRasterBand(i + 1).DataType for i in range(src.RasterCount)}
    if types != {gdal.GDT_Byte} or src.RasterCount not in (1, 3, 4):
        raise JobError(f"JPEG compression needs 1, 3 or 4 bands of Byte; {rel!r} does not qualify")


def _resampling(src) -> str:
    """NEAREST for paletted (categorical) rasters, AVERAGE otherwise."""
    return "NEAREST" if src.GetRasterBand(1).GetColorTable() is not None else "AVERAGE"


@contextlib.contextmanager
def _config(**options: str) -> Iterator[None]:
    """GDAL config options for the duration of a block (gdal.config_options is GDAL >= 3.7)."""
    from osgeo import gdal

    saved = {k: gdal.GetConfigOption(k) for k in options}
    for k, v in options.items():
        gdal.SetConfigOption(k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            gdal.SetConfigOption(k, v)


def run(params: CogConvert, root: DataRoot, log: Logger) -> dict[str, Any]:
    from osgeo import gdal

    src_path = root.input_file(params.input)
    dst = root.output_file(params.output)
    src = _open_raster(src_path, params.input)
    if src.RasterCount == 0:
        raise JobError(f"input {params.input!r} has no raster bands")
    if params.compression == "JPEG":
        _check_jpeg(src, params.input)
    levels = sorted(set(params.overview_levels))
    options = [f"COMPRESS={params.compression}", "BIGTIFF=IF_SAFER"]
    if params.compression in ("DEFLATE", "ZSTD", "LZW"):
        options.append("PREDICTOR=YES")
    # The COG driver would pick its own power-of-two levels; to honour the requested ones, overviews
    # are built on a VRT of the input (an external .ovr in a temp dir beside the output) and reused.
    dst.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        source: Any = src
        if levels:
            vrt = gdal.Translate(str(workdir / "input.vrt"), src, format="VRT")
            resampling = _resampling(src)
            log.info("building overviews", levels=levels, resampling=resampling)
            with _config(COMPRESS_OVERVIEW="DEFLATE", BIGTIFF_OVERVIEW="IF_SAFER"):
                vrt.BuildOverviews(resampling, levels, callback=log.progress("building overviews"))
            vrt = None
            source = gdal.Open(str(workdir / "input.vrt"))
            options.append("OVERVIEWS=FORCE_USE_EXISTING")
        else:
            options.append("OVERVIEWS=NONE")
        with atomic_output(dst) as tmp:
            out = gdal.Translate(
                str(tmp), source, format="COG", creationOptions=options, callback=log.progress("writing COG")
            )
            if out is None:
                raise RuntimeError(f"GDAL could not write {params.output!r}: {gdal.GetLastErrorMsg()}")
            out = None
        source = src = None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"output": params.output, "checksum": sha256_file(dst), "size": dst.stat().st_size}
