"""OGC API - Features of a service: the mapfile of the examples answered by the real `mapserv`
(MapServer 8.0, as CGI with PATH_INFO, as the image's Apache runs it), and the URLs the operator
writes into the statuses. Clients (OWSLib, GDAL) against the pods: tests/e2e/test_ogcapi.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from kms_crds.mapdataset import MapDatasetSpec, MapDatasetStatus
from kms_crds.mapservice import MapServiceSpec
from kms_operator import builders
from kms_operator.mapfile import DatasetInput, build_config, build_mapfile
from tests.helpers import hack_module

REPO = Path(__file__).resolve().parents[2]
API = "http://ocean.maps.svc.cluster.local:8080/ocean/ogcapi"  # what the operator passes
ZONES = "kms_zones-sample"
TEMPLATES = "/usr/share/mapserver/ogcapi/templates/html-plain/"  # mapserver-bin; the image's ENV


def _example(name: str) -> MapDatasetSpec:
    return MapDatasetSpec.model_validate(yaml.safe_load((REPO / "examples" / name).read_text())["spec"])


def _datasets() -> list[DatasetInput]:
    """The examples (raster and vector) as the inspection leaves them, and the vector once more
    without OGCAPI."""
    vector = _example("vector-dataset.yaml")
    raster = _example("raster-dataset.yaml")
    world = {"extent": {"bbox": [-180.0, -90.0, 180.0, 90.0], "crs": "EPSG:4326"}, "bandCount": 1}
    zones = {
        "extent": {"bbox": [0.0, 20.0, 20.0, 70.0], "crs": "EPSG:4326"},
        "wgs84Bbox": [0.0, 20.0, 20.0, 70.0],
        "geometryType": "POLYGON",
        "sourceLayer": "zones-sample",
    }
    wfs_only = vector.model_copy(update={"identifier": "kms:wfs-only", "protocols": ["WMS", "WFS"]})
    return [
        DatasetInput("zones-sample", vector, MapDatasetStatus.model_validate(zones)),
        DatasetInput("wfs-only", wfs_only, MapDatasetStatus.model_validate(zones)),
        DatasetInput("sst-sample", raster, MapDatasetStatus.model_validate(world)),
    ]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    """A MapServer CONFIG whose MAPS alias `ocean` is the examples' mapfile over the sample data."""
    root = tmp_path_factory.mktemp("ogcapi")
    hack_module("sample_data").write_samples(root / "data")
    spec = MapServiceSpec.model_validate({"title": "Ocean maps"})
    mapfile = root / "service.map"
    mapfile.write_text(
        build_mapfile("ocean", spec, _datasets(), data_root=str(root / "data"), ogcapi_url=API)
    )
    conf = root / "mapserver.conf"
    conf.write_text(build_config("ocean", str(mapfile)))
    return conf


def get(config: Path, path: str, query: str = "f=json", accept: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of `mapserv` answering GET <path>?<query> as a CGI."""
    mapserv = shutil.which("mapserv")
    assert mapserv, "mapserv not on PATH (Debian's mapserver-bin; make setup installs it)"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "MAPSERVER_CONFIG_FILE": str(config),
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": query,
        "PATH_INFO": path,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8080",
        "SCRIPT_NAME": "",
        "OGCAPI_HTML_TEMPLATE_DIRECTORY": TEMPLATES,
    }
    if accept:
        env["HTTP_ACCEPT"] = accept
    out = subprocess.run([mapserv], env=env, capture_output=True, timeout=60, check=True).stdout.decode()
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    headers = dict(line.split(":", 1) for line in head.splitlines() if ":" in line)
    headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
    return int(headers.get("status", "200").split()[0]), headers.get("content-type", ""), body


def get_json(config: Path, path: str, query: str = "f=json") -> dict:
    status, ctype, body = get(config, path, query)
    assert status == 200 and "json" in ctype, (status, ctype, body[:500])
    return json.loads(body)


def _hrefs(doc: dict) -> list[str]:
    return [link["href"] for link in doc.get("links", [])]


def test_landing_page_links_are_absolute_under_the_status_url(config):
    doc = get_json(config, "/ocean/ogcapi")
    assert doc["title"] == "Ocean maps"
    hrefs = _hrefs(doc)
    assert f"{API}/collections?f=json" in hrefs and f"{API}/conformance?f=json" in hrefs, hrefs
    assert all(h.startswith(API) for h in hrefs), hrefs


def test_conformance_names_features_core_and_geojson(config):
    conforms = get_json(config, "/ocean/ogcapi/conformance")["conformsTo"]
    for cls in ("ogcapi-features-1/1.0/conf/core", "ogcapi-features-1/1.0/conf/geojson"):
        assert f"http://www.opengis.net/spec/{cls}" in conforms, conforms


def test_collections_are_the_vectors_with_protocol_ogcapi(config):
    doc = get_json(config, "/ocean/ogcapi/collections")
    assert [c["id"] for c in doc["collections"]] == [ZONES]  # not the raster, not the WFS-only vector
    zones = doc["collections"][0]
    assert zones["title"] == "Management zones (sample)"
    assert zones["extent"]["spatial"]["bbox"] == [[0.0, 20.0, 20.0, 70.0]]
    assert "Warning" not in zones["description"]
    assert f"{API}/collections/{ZONES}/items?f=json" in _hrefs(zones)
    for other in ("kms_wfs-only", "kms_sst-sample"):
        status, _, body = get(config, f"/ocean/ogcapi/collections/{other}/items")
        assert status == 404, body[:300]


def test_items_carry_the_attributes_and_ids_but_not_the_fid_column(config):
    doc = get_json(config, f"/ocean/ogcapi/collections/{ZONES}/items")
    assert doc["type"] == "FeatureCollection" and doc["numberMatched"] == 2
    props = sorted((f["properties"]["kind"], f["properties"]["name"]) for f in doc["features"])
    assert props == [("fishing", "South"), ("protected", "North")]
    assert all(set(f["properties"]) == {"kind", "name"} for f in doc["features"])  # no kms_fid
    assert sorted(f["id"] for f in doc["features"]) == ["0", "1"]
    one = get_json(config, f"/ocean/ogcapi/collections/{ZONES}/items/1")
    assert one["properties"]["kind"] == "fishing"
    assert one["geometry"]["type"] == "Polygon"


def test_bbox_selects_the_features_it_touches(config):
    north = get_json(config, f"/ocean/ogcapi/collections/{ZONES}/items", "f=json&bbox=-5,45,25,75")
    assert [f["properties"]["kind"] for f in north["features"]] == ["protected"]
    assert north["numberMatched"] == 1
    empty = get_json(config, f"/ocean/ogcapi/collections/{ZONES}/items", "f=json&bbox=-100,-50,-90,-40")
    assert empty["features"] == [] and empty["numberMatched"] == 0


def test_limit_pages_through_the_next_link(config):
    seen, query, pages = [], "f=json&limit=1", 0
    while query is not None:
        doc = get_json(config, f"/ocean/ogcapi/collections/{ZONES}/items", query)
        pages += 1
        assert len(doc["features"]) == 1 and doc["numberReturned"] == 1
        seen += [f["properties"]["kind"] for f in doc["features"]]
        nxt = [link["href"] for link in doc["links"] if link["rel"] == "next"]
        query = None
        if nxt:
            parts = urlsplit(nxt[0])
            assert nxt[0].startswith(f"{API}/collections/{ZONES}/items?"), nxt
            assert parse_qs(parts.query)["limit"] == ["1"]
            query = parts.query
    assert pages == 2 and sorted(seen) == ["fishing", "protected"]


def test_html_pages_render_from_the_images_templates(config):
    status, ctype, body = get(config, f"/ocean/ogcapi/collections/{ZONES}/items", "f=html")
    assert status == 200 and ctype.startswith("text/html"), (status, body[:300])
    assert "protected" in body
    # a client asking for JSON in its Accept header gets JSON without f=
    status, ctype, body = get(config, "/ocean/ogcapi/collections", "", accept="application/json")
    assert status == 200 and ctype == "application/json" and json.loads(body)["collections"]


# ---------------------------------------------------------------------------------------------- URLs


def test_status_urls():
    spec = MapServiceSpec()
    assert builders.ogcapi_url("ocean", "maps", spec) == API
    vector = {"type": "vector", "identifier": "kms:zones-sample", "protocols": ["WMS", "OGCAPI"]}
    template = "http://{name}.{namespace}.svc.cluster.local:8080/"
    assert builders.collection_url("ocean", "maps", spec, template, vector) == f"{API}/collections/{ZONES}"
    assert builders.collection_url("ocean", "maps", spec, template, {**vector, "protocols": ["WMS"]}) is None
    assert builders.collection_url("ocean", "maps", spec, template, {**vector, "type": "raster"}) is None
    ingress = MapServiceSpec.model_validate(
        {"ingress": {"host": "maps.example.org", "path": "/sea", "tlsSecretName": "t"}}
    )
    assert builders.ogcapi_url("ocean", "maps", ingress) == "https://maps.example.org/sea/ocean/ogcapi"
    public = MapServiceSpec.model_validate({"mapserver": {"onlineResource": "https://x.example/wms/"}})
    assert builders.ogcapi_url("ocean", "maps", public) == "https://x.example/wms/ocean/ogcapi"


def test_the_images_apache_routes_ogcapi_paths_below_any_prefix():
    """The ScriptAliasMatch of images/mapserver: PATH_INFO /<alias>/ogcapi/... also below an ingress
    path; every other path (WMS, WFS, WCS) reaches MS_MAPFILE without PATH_INFO."""
    conf = (REPO / "images/mapserver/rootfs/etc/apache2/conf-available/kms-mapserver.conf").read_text()
    pattern, target = re.search(r'^ScriptAliasMatch "([^"]*ogcapi[^"]*)" (\S+)$', conf, re.M).groups()

    def path_info(url_path: str) -> str | None:
        m = re.match(pattern, url_path)
        return (
            m.expand(target.replace("$1", r"\1")).removeprefix("/usr/local/bin/mapserv-fcgi") if m else None
        )

    assert path_info("/ocean/ogcapi") == "/ocean/ogcapi"
    assert path_info("/ocean/ogcapi/collections/x/items") == "/ocean/ogcapi/collections/x/items"
    assert path_info("/sea/ocean/ogcapi/collections") == "/ocean/ogcapi/collections"
    assert path_info("/a/b/ocean/ogcapi/collections/ogcapi/items") == "/ocean/ogcapi/collections/ogcapi/items"
    assert path_info("/") is None and path_info("/sea/") is None and path_info("/ogcapi") is None
    # MapServer's HTML templates write titles and attribute values unescaped (a title <script>...
    # comes out as is): the pages get a policy under which no script runs
    csp = re.search(
        r'<LocationMatch "/ogcapi\(/\|\$\)">\s*Header always set Content-Security-Policy "([^"]*)"', conf
    )
    assert csp and "default-src 'none'" in csp.group(1) and "script-src" not in csp.group(1), conf
