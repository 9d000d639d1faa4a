"""The example service as an independent OGC client (OWSLib) sees it, from the MapService's
Service: real MapServer pods behind Apache + mod_fcgid, every layer rendered and checked pixel by pixel."""

from __future__ import annotations

import math
import urllib.request
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


WMS_NS = {"1.3.0": "{http://www.opengis.net/wms}", "1.1.1": ""}


def _geo_bbox(layer: ET.Element, version: str) -> tuple[float, ...]:
    """A capabilities Layer's geographic bounding box as (west, south, east, north)."""
    ns = WMS_NS[version]
    if version == "1.3.0":
        box = layer.find(f"{ns}EX_GeographicBoundingBox")
        assert box is not None, ET.tostring(layer)[:300]
        return tuple(
            float(box.findtext(f"{ns}{k}"))
            for k in ("westBoundLongitude", "southBoundLatitude", "eastBoundLongitude", "northBoundLatitude")
        )
    box = layer.find("LatLonBoundingBox")
    assert box is not None, ET.tostring(layer)[:300]
    return tuple(float(box.get(k)) for k in ("minx", "miny", "maxx", "maxy"))


@pytest.mark.parametrize("version", ["1.3.0", "1.1.1"])
def test_the_root_layer_bbox_is_the_union_of_its_layers(base, wms, version):
    # a GetMap of another shape first: a server that kept map state between requests shows it here
    _getmap(wms, sorted(LAYERS)[:1], "EPSG:4326", (-180, -90, 180, 90), size=(256, 256))
    url = f"{base}?SERVICE=WMS&VERSION={version}&REQUEST=GetCapabilities"
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=60) as r:
        doc = ET.fromstring(r.read())
    ns = WMS_NS[version]
    root = doc.find(f"{ns}Capability/{ns}Layer")
    layers = [lay for lay in root.iter(f"{ns}Layer") if lay is not root and lay.find(f"{ns}Name") is not None]
    assert {lay.findtext(f"{ns}Name") for lay in layers} >= LAYERS
    boxes = [_geo_bbox(lay, version) for lay in layers]
    union = (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
    west, south, east, north = got = _geo_bbox(root, version)
    assert -180 <= west < east <= 180 and -90 <= south < north <= 90, got
    assert got == pytest.approx(union, abs=1e-6), (got, union)


def _getmap(wms: WebMapService, layers: list[str], srs: str, bbox, size=(360, 180)) -> bytes:
    r = wms.getmap(layers=layers, styles=[""] * len(layers), srs=srs, bbox=bbox, size=size,
                   format="image/png", transparent=True)  # fmt: skip
    body = r.read()
    assert body[:8] == b"\x89PNG\r\n\x1a\n", body[:300]
    return body


def _merc(lon: float, lat: float) -> tuple[float, float]:
    r = 6378137.0
    return r * math.radians(lon), r * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


def _named_layers(wms: WebMapService) -> list[str]:
    """Every layer the capabilities name (the datasets' layers and the root, which draws them all)."""
    return sorted(wms.contents)


def test_every_layer_of_the_capabilities_renders_in_4326(wms):
    # OWSLib takes lon/lat (it sends 1.3.0 lat/lon itself); 360x180 pixels: x = lon + 180, y = 90 - lat
    for layer in _named_layers(wms):
        img = _getmap(wms, [layer], "EPSG:4326", (-180, -90, 180, 90))
        if layer == "kms_zones-sample":
            drawn(img, 0.005, at={(190, 30): PROTECTED, (190, 60): FISHING, (80, 90): None})
        else:  # the raster covers the world, alone or under the zones
            drawn(img, 0.9)


def test_every_layer_of_the_capabilities_renders_in_3857(wms):
    half = 20037508.342789244
    size = 256

    def px(lon, lat):
        x, y = _merc(lon, lat)
        return int((x + half) / (2 * half) * size), int((half - y) / (2 * half) * size)

    for layer in _named_layers(wms):
        img = _getmap(wms, [layer], "EPSG:3857", (-half, -half, half, half), size=(size, size))
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


GML = "{http://www.opengis.net/gml}"
GML32 = "{http://www.opengis.net/gml/3.2}"


@pytest.mark.parametrize("version", ["2.0.0", "1.1.0"])
def test_wfs_features_have_stable_ids_and_the_answer_validates(base, version):
    wfs = WebFeatureService(base, version=version, timeout=60)
    # (OWSLib names 2.0.0 types with their prefix, 1.1.0 types without)
    assert "kms_zones-sample" in {t.split(":")[-1] for t in wfs.contents}, list(wfs.contents)
    for typename in wfs.contents:
        bodies = [wfs.getfeature(typename=[typename]).read() for _ in range(2)]
        assert b"will not validate" not in bodies[0], bodies[0][:600]
        ids = []
        for body in bodies:
            gml = ET.fromstring(body)
            tag = "{http://mapserver.gis.umn.edu/mapserver}" + typename.split(":")[-1]
            features = [el for el in gml.iter() if el.tag == tag]
            assert features, body[:600]
            ids.append([f.get(f"{GML32}id") or f.get(f"{GML}id") for f in features])
        assert all(ids[0]) and len(set(ids[0])) == len(ids[0]), ids[0]
        assert ids[0] == ids[1]  # stable from one request to the next
        assert b"kms_fid" not in bodies[0]  # the id attribute stays out of the answer


def test_wfs_getfeature_returns_both_zones(base):
    wfs = WebFeatureService(base, version="2.0.0", timeout=60)
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
