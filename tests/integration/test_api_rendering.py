"""The facade's rendering routes: extent.geojson from status, thumbnail.png rendered by the
MapServer pods of the MapService that serves the dataset (the facade opens its status URL, a
cluster DNS name, through the test's cluster_dns_proxy), cached."""

from __future__ import annotations

import pytest

from tests.helpers import FAST_PROBES, create_cr, get_cr, wait_until
from tests.pixels import drawn


@pytest.fixture
def viewer(facade):
    with facade.client("viewer") as c:
        yield c


def test_extent_geojson_and_thumbnail(cluster, facade, viewer):
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
                "probes": FAST_PROBES,
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

    first = wait_until(png, "thumbnail rendered by the serving MapService's pods", 180)
    assert first.headers["content-type"] == "image/png" and first.headers["x-cache"] == "miss"
    img = drawn(first.content, min_coverage=0.9)  # the sample covers the whole world
    assert img.shape[:2] == (100, 200)
    assert tuple(img[50, 10][:3]) != tuple(img[50, 190][:3]), "the colour ramp runs west to east"
    again = viewer.get("/datasets/thumb/thumbnail.png", params={"width": 200})
    assert again.content == first.content and again.headers["x-cache"] == "hit"
    assert viewer.get("/datasets/nope/extent.geojson").status_code == 404
    assert viewer.get("/datasets/thumb/thumbnail.png", params={"width": 5000}).status_code == 422
