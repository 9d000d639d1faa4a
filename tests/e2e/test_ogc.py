"""The example service as an independent OGC client (OWSLib) sees it, from the MapService's
Service: real MapServer pods behind Apache + mod_fcgid, every layer rendered and checked pixel by pixel."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from osgeo import gdal
from owslib.wcs import WebCoverageService
from owslib.wfs import WebFeatureService
from owslib.wms import WebMapService

from tests.pixels import drawn, hex_rgb

LAYERS = {"kms_sst-sample", "kms_zones-sample"}
PROTECTED, FISHING = "#2ca25f", "#fdae6b"  # examples/vector-dataset.yaml


@pytest.fixture(scope="module")
def base(examples) -> str:
    return examples.service_url("ocean")


@pytest.fixture(scope="module")
def wms(base) -> WebMapService:
    return WebMapService(base, version="1.3.0", timeout=60)


def test_capabilities_list_every_example_layer_with_a_valid_extent(wms):
    assert set(wms.contents) >= LAYERS, sorted(wms.contents)
    for name in LAYERS:
        minx, miny, maxx, maxy = wms[name].boundingBoxWGS84
        assert -180 <= minx < maxx <= 180 and -90 <= miny < maxy <= 90, (name, wms[name].boundingBoxWGS84)
    root = wms.contents[next(iter(wms.contents))].parent
    if root is not None and root.boundingBoxWGS84:
        minx, miny, maxx, maxy = root.boundingBoxWGS84
        assert -90 <= miny < maxy <= 90, f"root layer latitude out of range: {root.boundingBoxWGS84}"


def _getmap(wms: WebMapService, layers: list[str], srs: str, bbox, size=(360, 180)) -> bytes:
    r = wms.getmap(layers=layers, styles=[""] * len(layers), srs=srs, bbox=bbox, size=size,
                   format="image/png", transparent=True)  # fmt: skip
    body = r.read()
    assert body[:8] == b"\x89PNG\r\n\x1a\n", body[:300]
    return body


def _merc(lon: float, lat: float) -> tuple[float, float]:
    r = 6378137.0
    return r * math.radians(lon), r * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_every_layer_renders_in_4326(wms, layer):
    # OWSLib takes lon/lat (it sends 1.3.0 lat/lon itself); 360x180 pixels: x = lon + 180, y = 90 - lat
    img = _getmap(wms, [layer], "EPSG:4326", (-180, -90, 180, 90))
    if layer == "kms_zones-sample":
        drawn(img, 0.005, at={(190, 30): PROTECTED, (190, 60): FISHING, (80, 90): None})
    else:
        drawn(img, 0.9)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_every_layer_renders_in_3857(wms, layer):
    half = 20037508.342789244
    size = 256
    img = _getmap(wms, [layer], "EPSG:3857", (-half, -half, half, half), size=(size, size))

    def px(lon, lat):
        x, y = _merc(lon, lat)
        return int((x + half) / (2 * half) * size), int((half - y) / (2 * half) * size)

    if layer == "kms_zones-sample":
        drawn(img, 0.002, at={px(10, 60): PROTECTED, px(10, 30): FISHING, px(-100, 0): None})
    else:
        drawn(img, 0.5)


def test_raster_and_vector_in_one_getmap_as_the_readme_map(wms):
    world = (-180, -90, 180, 90)
    both = drawn(_getmap(wms, ["kms_sst-sample", "kms_zones-sample"], "EPSG:4326", world), 0.9)
    raster = drawn(_getmap(wms, ["kms_sst-sample"], "EPSG:4326", world), 0.9)
    # the zones are drawn 80 % opaque over the raster; elsewhere the raster alone shows
    for (x, y), colour in (((190, 30), PROTECTED), ((190, 60), FISHING)):
        blend = 0.8 * np.array(hex_rgb(colour)) + 0.2 * raster[y, x, :3]
        assert np.abs(both[y, x, :3] - blend).max() <= 12, (x, y, both[y, x], blend)
    assert (both[90, 80] == raster[90, 80]).all()


def test_wfs_getfeature_returns_both_zones(base):
    wfs = WebFeatureService(base, version="2.0.0", timeout=60)
    assert "ms:kms_zones-sample" in wfs.contents, list(wfs.contents)
    gml = ET.fromstring(wfs.getfeature(typename=["ms:kms_zones-sample"]).read())
    kinds = sorted(el.text for el in gml.iter() if el.tag.endswith("}kind"))
    assert kinds == ["fishing", "protected"], ET.tostring(gml)[:500]


def test_wcs_getcoverage_returns_the_source_values(base, tmp_path):
    wcs = WebCoverageService(base, version="2.0.1", timeout=60)
    name = next(iter(wcs.contents))
    assert "sst" in name, list(wcs.contents)
    r = wcs.getCoverage(identifier=[name], format="image/tiff",
                        subsets=[("Long", 0, 90), ("Lat", 0, 45)])  # fmt: skip
    out = tmp_path / "cov.tif"
    out.write_bytes(r.read())
    ds = gdal.Open(str(out))
    assert ds is not None, out.read_bytes()[:300]
    values = ds.GetRasterBand(1).ReadAsArray()
    # the sample rises 0..30 from west to east: longitudes 0..90 hold about 15..22.5
    assert float(values.min()) > 14 and float(values.max()) < 23.5, (values.min(), values.max())
