"""Real map serving: the mapfiles the operator wrote into ConfigMaps, served by the MapServer pods
of the MapService (Apache + mod_fcgid on the real node) through its Service, checked pixel by pixel."""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET

import httpx
import numpy as np
import pytest
from kubernetes import client
from osgeo import gdal, osr

from kms_operator.mapfile import ramp_colors
from tests.helpers import (
    create_cr,
    delete_data_volumes,
    get_cr,
    host_url,
    make_data_volume,
    service_url,
    share_with_pods,
    wait_condition,
    wait_until,
)
from tests.pixels import drawn, rgba

WMS = "{http://www.opengis.net/wms}"
KNOWN = {
    "nw": 5.0,
    "ne": 15.0,
    "sw": 25.0,
    "se": 35.0,
}  # quadrant values of known.tif (lon 0..10, lat 50..60)
GREYS = ramp_colors("greys", 4)  # classes [0,10) [10,20) [20,30) [30,40]


def write_raster(path, bands: list[np.ndarray], bbox, dtype=gdal.GDT_Float32, nodata=None) -> None:
    h, w = bands[0].shape
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, len(bands), dtype)
    minx, miny, maxx, maxy = bbox
    ds.SetGeoTransform((minx, (maxx - minx) / w, 0, maxy, 0, -(maxy - miny) / h))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    ds.SetProjection(srs.ExportToWkt())
    for i, arr in enumerate(bands, start=1):
        ds.GetRasterBand(i).WriteArray(arr)
        if nodata is not None:
            ds.GetRasterBand(i).SetNoDataValue(nodata)
    ds = None


def polygon(x0, y0, x1, y1):
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def ds_body(name, path, type_="raster", labels=None, **spec):
    return {
        "apiVersion": "maps.kube-mapserver.io/v1alpha1",
        "kind": "MapDataset",
        "metadata": {"name": name, "labels": labels or {"served": "yes"}},
        "spec": {
            "type": type_,
            "source": {"path": path},
            "identifier": f"t:{name}",
            "title": f"Title {name}",
            **spec,
        },
    }


@pytest.fixture(scope="module")
def served(cluster, operator_process, data_root):
    """One namespace with five datasets of known content and a MapService serving them."""
    ns = f"serve-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(cluster.api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    make_data_volume(cluster.api, ns, data_root)
    d = data_root / ns
    d.mkdir()
    known = np.zeros((100, 100), dtype="float32")
    known[:50, :50], known[:50, 50:], known[50:, :50], known[50:, 50:] = (
        KNOWN["nw"],
        KNOWN["ne"],
        KNOWN["sw"],
        KNOWN["se"],
    )
    write_raster(d / "known.tif", [known], (0, 50, 10, 60))
    red = np.zeros((50, 100), dtype="uint8")
    red[:, :50] = 255
    blue = np.zeros((50, 100), dtype="uint8")
    blue[:, 50:] = 255
    write_raster(d / "rgb.tif", [red, np.zeros_like(red), blue], (20, 50, 30, 55), dtype=gdal.GDT_Byte)
    (d / "zones.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"kind": "protected", "name": "A"},
                        "geometry": polygon(40, 50, 45, 55),
                    },
                    {
                        "type": "Feature",
                        "properties": {"kind": "fishing", "name": "B"},
                        "geometry": polygon(45, 55, 50, 60),
                    },
                ],
            }
        )
    )
    rgb = [np.full((20, 20), v, dtype="uint8") for v in (10, 200, 10)]
    write_raster(d / "scene1_rgb.tif", rgb, (60, 50, 62, 52), dtype=gdal.GDT_Byte)
    write_raster(
        d / "scene1_z.tif", [np.linspace(100, 200, 400, dtype="float32").reshape(20, 20)], (60, 50, 62, 52)
    )
    share_with_pods(d)  # read by the MapServer pods (uid 33)

    create_cr(
        cluster.api,
        ns,
        ds_body(
            "known",
            f"{ns}/known.tif",
            protocols=["WMS", "WCS"],
            style={"colorRamp": "greys", "classes": 4, "range": {"min": 0, "max": 40}},
        ),
    )
    create_cr(cluster.api, ns, ds_body("rgb", f"{ns}/rgb.tif", style={"bands": [1, 2, 3]}))
    create_cr(
        cluster.api,
        ns,
        ds_body(
            "zones",
            f"{ns}/zones.geojson",
            type_="vector",
            protocols=["WMS", "WFS"],
            style={
                "classItem": "kind",
                "vectorClasses": [
                    {"name": "Protected", "value": "protected", "color": "#00ff00"},
                    {"name": "Fishing", "value": "fishing", "color": "#ff8800"},
                ],
            },
        ),
    )
    create_cr(
        cluster.api,
        ns,
        ds_body(
            "scene1-rgb", f"{ns}/scene1_rgb.tif", variant="RGB", campaign="c1", style={"bands": [1, 2, 3]}
        ),
    )
    create_cr(
        cluster.api,
        ns,
        ds_body(
            "scene1-z",
            f"{ns}/scene1_z.tif",
            variant="Z",
            campaign="c1",
            style={"colorRamp": "terrain", "classes": 5},
        ),
    )
    create_cr(
        cluster.api,
        ns,
        {
            "apiVersion": "maps.kube-mapserver.io/v1alpha1",
            "kind": "MapService",
            "metadata": {"name": "maps"},
            "spec": {
                "datasetSelector": {"matchLabels": {"served": "yes"}},
                "title": "Test maps",
                "data": {"persistentVolumeClaim": "map-data"},
            },
        },
    )
    wait_until(
        lambda: (get_cr(cluster.api, ns, "MapService", "maps").get("status") or {}).get("datasetCount") == 5,
        "5 datasets in the mapfile",
        timeout=90,
    )
    wait_condition(cluster.api, ns, "MapService", "maps", timeout=180)  # rolled out, pods ready
    base = service_url(cluster.api, ns, "maps")
    wait_until(
        lambda: (
            b"t_scene1-z"
            in httpx.get(base, params={"SERVICE": "WMS", "REQUEST": "GetCapabilities"}, timeout=10).content
        ),
        "the MapServer pods serve the mapfile with every dataset",
    )
    try:
        yield ns, base
    finally:
        core.delete_namespace(ns)
        delete_data_volumes(cluster.api, ns)


def wms(base, **params) -> httpx.Response:
    q = {"SERVICE": "WMS", "VERSION": "1.3.0", "STYLES": "", **{k.upper(): v for k, v in params.items()}}
    return httpx.get(base, params=q, timeout=30)


def getmap(base, layers, bbox, crs="EPSG:4326", w=100, h=100) -> np.ndarray:
    r = wms(
        base,
        request="GetMap",
        layers=layers,
        crs=crs,
        bbox=",".join(map(str, bbox)),
        width=w,
        height=h,
        format="image/png",
        transparent="TRUE",
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/png"), r.text[:500]
    return rgba(r.content)


def test_capabilities_list_every_dataset_with_title_crs_and_extent(served):
    _, base = served
    r = wms(base, request="GetCapabilities")
    root = ET.fromstring(r.content)
    layers = {
        lyr.findtext(f"{WMS}Name"): lyr for lyr in root.iter(f"{WMS}Layer") if lyr.findtext(f"{WMS}Name")
    }
    assert {"t_known", "t_rgb", "t_zones", "t_scene1-rgb", "t_scene1-z"} <= set(layers)
    known = layers["t_known"]
    assert known.findtext(f"{WMS}Title") == "Title known"
    crs = {c.text for c in known.iter(f"{WMS}CRS")} | {c.text for c in root.iter(f"{WMS}CRS")}
    assert {"EPSG:4326", "EPSG:3857"} <= crs
    geo = known.find(f"{WMS}EX_GeographicBoundingBox")
    got = [
        float(geo.findtext(f"{WMS}{k}"))
        for k in ("westBoundLongitude", "southBoundLatitude", "eastBoundLongitude", "northBoundLatitude")
    ]
    assert got == pytest.approx([0, 50, 10, 60])
    bbox = next(b for b in known.iter(f"{WMS}BoundingBox") if b.get("CRS") == "EPSG:4326")
    # WMS 1.3.0 EPSG:4326 is latitude first
    assert [float(bbox.get(k)) for k in ("minx", "miny", "maxx", "maxy")] == pytest.approx([50, 0, 60, 10])


@pytest.mark.parametrize(
    "quadrant,pixel,klass",
    [("nw", (25, 25), 0), ("ne", (25, 75), 1), ("sw", (75, 25), 2), ("se", (75, 75), 3)],
)
def test_getmap_4326_pixels_follow_the_colour_ramp(served, quadrant, pixel, klass):
    _, base = served
    img = getmap(base, "t_known", (50, 0, 60, 10))
    assert tuple(img[pixel][:3]) == GREYS[klass] and img[pixel][3] == 255, quadrant


def test_getmap_is_transparent_outside_the_data(served):
    _, base = served
    img = getmap(base, "t_known", (50, -10, 60, 10), w=200)
    assert img[50, 50][3] == 0, "west of the raster must be transparent"
    assert img[50, 150][3] == 255


def test_getmap_3857_pixels(served):
    _, base = served
    t = osr.CoordinateTransformation(*(_srs(c) for c in (4326, 3857)))
    (x0, y0, _), (x1, y1, _) = t.TransformPoint(0, 50), t.TransformPoint(10, 60)
    img = getmap(base, "t_known", (x0, y0, x1, y1), crs="EPSG:3857", w=100, h=100)
    for (lon, lat), klass in (((2.5, 57.5), 0), ((7.5, 57.5), 1), ((2.5, 52.5), 2), ((7.5, 52.5), 3)):
        x, y, _ = t.TransformPoint(lon, lat)
        col, row = int((x - x0) / (x1 - x0) * 100), int((y1 - y) / (y1 - y0) * 100)
        assert tuple(img[row, col][:3]) == GREYS[klass], (lon, lat)


def _srs(code: int) -> osr.SpatialReference:
    s = osr.SpatialReference()
    s.ImportFromEPSG(code)
    s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return s


def test_several_layers_in_one_getmap(served):
    _, base = served
    # lon 0..50, lat 50..60, 1 pixel = 0.5 degree
    img = getmap(base, "t_known,t_rgb,t_zones", (50, 0, 60, 50), w=100, h=20)
    drawn(img, min_coverage=0.3)
    assert tuple(img[5, 5][:3]) == GREYS[0]  # known, NW quadrant (lon 2.5, lat 57.5)
    assert tuple(img[15, 45][:3]) == (255, 0, 0)  # rgb left half (lon 22.5, lat 52.5)
    assert tuple(img[15, 55][:3]) == (0, 0, 255)  # rgb right half (lon 27.5)
    assert tuple(img[15, 85][:3]) == (0, 255, 0)  # zones: protected (lon 42.5, lat 52.5)
    assert tuple(img[5, 95][:3]) == (255, 136, 0)  # zones: fishing (lon 47.5, lat 57.5)
    assert img[15, 65][3] == 0  # between rgb and zones: nothing


def test_hyspex_pair_is_drawn(served):
    _, base = served
    img = getmap(base, "t_scene1-rgb", (50, 60, 52, 62), w=20, h=20)
    assert tuple(img[10, 10][:3]) == (10, 200, 10)
    z = getmap(base, "t_scene1-z", (50, 60, 52, 62), w=20, h=20)
    assert z[10, 10][3] == 255 and tuple(z[2, 2][:3]) != tuple(z[18, 18][:3]), "ramp over elevation"


def test_getfeatureinfo_returns_the_raster_value(served):
    _, base = served
    r = wms(
        base,
        request="GetFeatureInfo",
        layers="t_known",
        query_layers="t_known",
        crs="EPSG:4326",
        bbox="50,0,60,10",
        width=100,
        height=100,
        i=75,
        j=25,
        info_format="application/vnd.ogc.gml",
    )
    assert r.status_code == 200
    values = [e.text for e in ET.fromstring(r.content).iter() if e.tag.endswith("value_0")]
    assert values and float(values[0]) == KNOWN["ne"], r.text[:800]


def test_wfs_getfeature_returns_features_with_attributes(served):
    _, base = served
    r = httpx.get(
        base,
        params={"SERVICE": "WFS", "VERSION": "2.0.0", "REQUEST": "GetFeature", "TYPENAMES": "t_zones"},
        timeout=30,
    )
    assert r.status_code == 200, r.text[:500]
    root = ET.fromstring(r.content)
    kinds = sorted(e.text for e in root.iter() if e.tag.endswith("}kind"))
    assert kinds == ["fishing", "protected"], r.text[:800]


def test_wcs_getcoverage_returns_the_source_values(served):
    _, base = served
    r = httpx.get(
        base,
        params={
            "SERVICE": "WCS",
            "VERSION": "2.0.1",
            "REQUEST": "GetCoverage",
            "COVERAGEID": "t_known",
            "FORMAT": "image/tiff",
        },
        timeout=30,
    )
    assert r.status_code == 200 and r.content[:2] in (b"II", b"MM"), r.text[:500]
    gdal.FileFromMemBuffer("/vsimem/c.tif", r.content)
    try:
        arr = gdal.Open("/vsimem/c.tif").ReadAsArray()
    finally:
        gdal.Unlink("/vsimem/c.tif")
    assert arr.shape == (100, 100)
    assert arr[25, 25] == KNOWN["nw"] and arr[25, 75] == KNOWN["ne"] and arr[75, 75] == KNOWN["se"]


def test_wfs_and_wcs_are_only_enabled_where_asked(served):
    _, base = served
    r = httpx.get(
        base,
        params={
            "SERVICE": "WCS",
            "VERSION": "2.0.1",
            "REQUEST": "GetCoverage",
            "COVERAGEID": "t_rgb",
            "FORMAT": "image/tiff",
        },
        timeout=30,
    )
    assert b"ExceptionReport" in r.content


@pytest.mark.parametrize(
    "params,needle",
    [
        (
            {
                "request": "GetMap",
                "layers": "nope",
                "crs": "EPSG:4326",
                "bbox": "0,0,1,1",
                "width": 10,
                "height": 10,
                "format": "image/png",
            },
            b"LayerNotDefined",
        ),
        (
            {
                "request": "GetMap",
                "layers": "t_known",
                "crs": "EPSG:4326",
                "bbox": "abc",
                "width": 10,
                "height": 10,
                "format": "image/png",
            },
            b"ServiceException",
        ),
        (
            {
                "request": "GetMap",
                "layers": "t_known",
                "crs": "EPSG:4326",
                "bbox": "50,0,60,10",
                "width": 100000,
                "height": 100000,
                "format": "image/png",
            },
            b"ServiceException",
        ),
        (
            {
                "request": "GetMap",
                "layers": "t_known",
                "crs": "EPSG:4326",
                "bbox": "50,0,60,10",
                "width": 10,
                "height": 10,
                "format": "application/x-evil",
            },
            b"ServiceException",
        ),
    ],
    ids=["unknown-layer", "bad-bbox", "huge-size", "bad-format"],
)
def test_bad_requests_get_ogc_exceptions(served, params, needle):
    _, base = served
    r = wms(base, **params)
    assert needle in r.content, r.content[:500]
    assert wms(base, request="GetCapabilities").status_code == 200, "server still answers"


def test_status_urls_work(cluster, served):
    """Status URLs name the in-cluster Service (what pods and an ingress-less client use); the same
    URL with the Service's ClusterIP answers from this host."""
    ns, _ = served
    svc = get_cr(cluster.api, ns, "MapService", "maps")
    assert svc["status"]["url"] == f"http://maps.{ns}.svc.cluster.local:8080/"
    obj = wait_condition(cluster.api, ns, "MapDataset", "known")
    assert obj["status"]["url"].startswith(svc["status"]["url"])
    r = httpx.get(host_url(cluster.api, obj["status"]["url"]), timeout=30)
    assert r.status_code == 200 and b"WMS_Capabilities" in r.content
