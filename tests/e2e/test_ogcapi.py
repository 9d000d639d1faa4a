"""OGC API - Features of the example service, as independent clients see it: OWSLib's Features
client and GDAL's OAPIF driver against the real MapServer pods (Apache + mod_fcgid + MapServer 8's
own OGC API), from the URLs the operator writes into the statuses.

The statuses name in-cluster URLs (http://ocean.<ns>.svc.cluster.local:8080/ocean/ogcapi) and
MapServer writes its links under them, as an in-cluster client needs. This host reaches Services by
ClusterIP only: GDAL, which follows the links itself (collections -> items -> next page), goes
through a small proxy here that opens in-cluster names at their ClusterIP, the way a pod's DNS
would resolve them."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from osgeo import gdal, ogr
from owslib.ogcapi.features import Features

from tests.helpers import wait_until

ZONES = "kms_zones-sample"
KINDS = ["fishing", "protected"]  # examples/vector-dataset.yaml over hack/sample_data.py's zones
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def api(examples) -> str:
    """The service's status.ogcapi (the OGC API root, in-cluster)."""
    want = f"http://ocean.{examples.namespace}.svc.cluster.local:8080/ocean/ogcapi"
    return wait_until(
        lambda: (examples.get("mapservice", "ocean").get("status") or {}).get("ogcapi") == want and want,
        f"MapService ocean status.ogcapi {want}",
    )


@pytest.fixture(scope="module")
def features(examples, api) -> Features:
    return Features(examples.host_url(api), timeout=60)


class _Proxy(BaseHTTPRequestHandler):
    """GET of an absolute in-cluster URL (proxy form), fetched from the Service's ClusterIP with the
    client's Accept header (MapServer answers HTML to a request that names no format)."""

    host_url = staticmethod(lambda url: url)
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        try:
            accept = {"Accept": self.headers["Accept"]} if self.headers["Accept"] else {}
            request = urllib.request.Request(self.host_url(self.path), headers=accept)
            with _NO_PROXY.open(request, timeout=60) as r:
                status, ctype, body = r.status, r.headers.get("Content-Type", ""), r.read()
        except urllib.error.HTTPError as e:
            status, ctype, body = e.code, e.headers.get("Content-Type", ""), e.read()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def cluster_dns_proxy(examples) -> Iterator[type[_Proxy]]:
    """GDAL's HTTP goes through a proxy that resolves in-cluster names like a pod's DNS."""
    handler = type("Proxy", (_Proxy,), {"host_url": staticmethod(examples.host_url), "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    gdal.SetConfigOption("GDAL_HTTP_PROXY", f"127.0.0.1:{server.server_address[1]}")
    try:
        yield handler
    finally:
        gdal.SetConfigOption("GDAL_HTTP_PROXY", None)
        server.shutdown()
        thread.join(timeout=30)


def _get_json(url: str) -> dict:
    with _NO_PROXY.open(url, timeout=60) as r:
        assert "json" in r.headers["Content-Type"], r.headers["Content-Type"]
        return json.load(r)


def test_statuses_name_the_landing_page_and_the_vectors_collection(examples, api):
    zones = f"{api}/collections/{ZONES}"
    wait_until(
        lambda: examples.get("mapdataset", "zones-sample")["status"].get("ogcapi") == zones,
        f"MapDataset zones-sample status.ogcapi {zones}",
    )
    assert examples.get("mapdataset", "sst-sample")["status"].get("ogcapi") is None  # a raster
    wide = examples.k.run("get", "mapservice", "ocean", "-n", examples.namespace, "-o", "wide").stdout
    assert "OGC API" in wide and api in wide, wide


def test_landing_page_and_conformance(examples, api, features):
    landing = features.response  # (OWSLib reads the landing page when it is created)
    assert landing["title"] == "Ocean maps"
    hrefs = [link["href"] for link in landing["links"]]
    assert f"{api}/collections?f=json" in hrefs, hrefs  # links under the status URL
    conforms = features.conformance()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core" in conforms, conforms
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson" in conforms, conforms
    # the HTML pages render from the image's templates
    with _NO_PROXY.open(examples.host_url(api) + "?f=html", timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/html") and b"Ocean maps" in r.read()
        # (MapServer's templates write titles and attribute values unescaped: no script runs there)
        assert "default-src 'none'" in r.headers["Content-Security-Policy"], dict(r.headers)


def test_collections_list_the_example_vector_only(features):
    ids = [c["id"] for c in features.collections()["collections"]]
    assert ids == [ZONES], ids  # the raster is no feature collection
    zones = features.collection(ZONES)
    assert zones["title"] == "Management zones (sample)"
    assert zones["extent"]["spatial"]["bbox"][0] == pytest.approx([0, 20, 20, 70])


def test_items_carry_their_attributes(features):
    items = features.collection_items(ZONES)
    assert items["numberMatched"] == 2
    assert sorted(f["properties"]["kind"] for f in items["features"]) == KINDS
    assert all(set(f["properties"]) == {"kind", "name"} for f in items["features"]), items["features"]


def test_bbox_filters_items(features):
    north = features.collection_items(ZONES, bbox=[-5, 45, 25, 75])
    assert [f["properties"]["kind"] for f in north["features"]] == ["protected"]
    assert features.collection_items(ZONES, bbox=[-100, -50, -90, -40])["features"] == []


def test_limit_and_the_next_link_page_through_every_item(examples, api, features):
    first = features.collection_items(ZONES, limit=1)
    assert first["numberReturned"] == 1 and first["numberMatched"] == 2
    (nxt,) = [link["href"] for link in first["links"] if link["rel"] == "next"]
    assert nxt.startswith(f"{api}/collections/{ZONES}/items?") and parse_qs(urlsplit(nxt).query)["limit"] == [
        "1"
    ]
    second = _get_json(examples.host_url(nxt))
    assert not [link for link in second["links"] if link["rel"] == "next"]  # the last page
    kinds = [f["properties"]["kind"] for page in (first, second) for f in page["features"]]
    assert sorted(kinds) == KINDS


def test_gdal_reads_the_collection_page_by_page(api, cluster_dns_proxy):
    gdal.UseExceptions()
    ds = gdal.OpenEx(f"OAPIF:{api}", gdal.OF_VECTOR, open_options=["PAGE_SIZE=1"])
    assert [ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount())] == [ZONES]
    layer = ds.GetLayerByName(ZONES)
    features = list(layer)
    assert sorted(f["kind"] for f in features) == KINDS
    assert all(f.GetGeometryRef().GetGeometryType() == ogr.wkbPolygon for f in features)
    pages = [u for u in cluster_dns_proxy.seen if f"/collections/{ZONES}/items" in u]
    assert any("offset=1" in u for u in pages), pages  # the second page: MapServer's next link
    layer.SetSpatialFilterRect(-5, 45, 25, 75)
    assert [f["kind"] for f in layer] == ["protected"]


def test_ogcapi_below_an_ingress_path_prefix(examples, api):
    """An ingress path reaches the pod unchanged: <prefix>/<service>/ogcapi/... still answers."""
    base = examples.host_url(api).removesuffix("/ocean/ogcapi")
    doc = _get_json(f"{base}/some/prefix/ocean/ogcapi/collections?f=json")
    assert [c["id"] for c in doc["collections"]] == [ZONES]
