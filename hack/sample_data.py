#!/usr/bin/env python3
"""Write the example datasets' files under a data root: `hack/sample_data.py DATA_ROOT`.

ocean/sst-sample.tif: 360x180 Float32 GeoTIFF in EPSG:4326, values rising 0..30 from west to east;
ocean/zones-sample.geojson: two polygons with a `kind` attribute (protected, fishing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def write_samples(root: Path) -> list[Path]:
    import numpy as np
    from osgeo import gdal, osr

    gdal.UseExceptions()
    ocean = root / "ocean"
    ocean.mkdir(parents=True, exist_ok=True)
    tif = ocean / "sst-sample.tif"
    if not tif.exists():
        ds = gdal.GetDriverByName("GTiff").Create(
            str(tif), 360, 180, 1, gdal.GDT_Float32, ["COMPRESS=DEFLATE"]
        )
        ds.SetGeoTransform((-180, 1, 0, 90, 0, -1))
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(4326)
        ds.SetProjection(srs.ExportToWkt())
        values = np.tile(np.linspace(0, 30, 360, dtype="float32"), (180, 1))
        ds.GetRasterBand(1).WriteArray(values)
        ds = None
    geojson = ocean / "zones-sample.geojson"
    if not geojson.exists():
        features = [
            {
                "type": "Feature",
                "properties": {"kind": "protected", "name": "North"},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[0, 50], [20, 50], [20, 70], [0, 70], [0, 50]]],
                },
            },
            {
                "type": "Feature",
                "properties": {"kind": "fishing", "name": "South"},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[0, 20], [20, 20], [20, 40], [0, 40], [0, 20]]],
                },
            },
        ]
        geojson.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return [tif, geojson]


if __name__ == "__main__":
    for p in write_samples(Path(sys.argv[1] if len(sys.argv) > 1 else ".kms/data")):
        print(p)
