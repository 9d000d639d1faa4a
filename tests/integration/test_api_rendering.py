"""The facade's rendering routes: extent.geojson from status, thumbnail.png rendered by the
MapService that serves the dataset (the loopback dev server here), cached."""

from __future__ import annotations

import pytest
from osgeo import gdal

from tests.helpers import create_cr, get_cr, wait_until


@pytest.fixture
def viewer(facade):
    with facade.client("viewer") as c:
        yield c


def test_extent_geojson_and_thumbnail(cluster, facade, viewer, local_mapserver):
    ns = facade.namespace
    create_cr(
        cluster.api,
        ns,
        {
            "apiVersion": "maps.kube-mapserver.io/v1alpha1",
            "kind": "MapDataset",
            "metadata": {"name": "thumb", "labels": {"thumbs": "yes"}},
            "spec": {
                "type": "raster",
                "source": {"path": "ocean/sst-sample.tif"},
                "identifier": "thumb",
                "title": "Thumb",
                "style": {"colorRamp": "viridis", "range": {"min": 0, "max": 30}},
            },
        },
    )
    assert viewer.get("/datasets/thumb/thumbnail.png").status_code in (404, 409)  # not served yet
    create_cr(
        cluster.api,
        ns,
        {
            "apiVersion": "maps.kube-mapserver.io/v1alpha1",
            "kind": "MapService",
            "metadata": {"name": "thumbs"},
            "spec": {
                "datasetSelector": {"matchLabels": {"thumbs": "yes"}},
                "data": {"persistentVolumeClaim": "map-data"},
            },
        },
    )
    wait_until(
        lambda: (get_cr(cluster.api, ns, "MapDataset", "thumb").get("status") or {}).get("url"),
        "dataset served",
        60,
    )

    r = viewer.get("/datasets/thumb/extent.geojson")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    feature = r.json()
    assert feature["bbox"] == [-180, -90, 180, 90]
    assert feature["geometry"]["coordinates"][0][0] == [-180, -90]

    def png():
        resp = viewer.get("/datasets/thumb/thumbnail.png", params={"width": 200})
        return resp if resp.status_code == 200 else None

    first = wait_until(png, "thumbnail rendered by the serving MapService", 60)
    assert first.headers["content-type"] == "image/png" and first.headers["x-cache"] == "miss"
    gdal.FileFromMemBuffer("/vsimem/thumb.png", first.content)
    try:
        img = gdal.Open("/vsimem/thumb.png")
        assert (img.RasterXSize, img.RasterYSize) == (200, 100)
        left, right = img.ReadAsArray(10, 50, 1, 1).ravel(), img.ReadAsArray(190, 50, 1, 1).ravel()
        assert tuple(left[:3]) != tuple(right[:3]), "the colour ramp runs west to east"
    finally:
        gdal.Unlink("/vsimem/thumb.png")
    again = viewer.get("/datasets/thumb/thumbnail.png", params={"width": 200})
    assert again.content == first.content and again.headers["x-cache"] == "hit"
    assert viewer.get("/datasets/nope/extent.geojson").status_code == 404
    assert viewer.get("/datasets/thumb/thumbnail.png", params={"width": 5000}).status_code == 422
