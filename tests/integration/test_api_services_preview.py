"""Services, previews and dataset patches through the facade, against the real cluster, operator
and MapServer pods: GET /services[/{name}[/mapfile]], POST /datasets/preview (mapserv on this host)
compared with a GetMap of the applied dataset, and PATCH /datasets/{id} with ETag / If-Match."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from kubernetes import client

from tests.helpers import (
    FAST_PROBES,
    REPO,
    create_cr,
    delete_cr,
    get_cr,
    load_yaml_docs,
    service_url,
    wait_condition,
    wait_until,
)
from tests.pixels import drawn, rgba

SERVICE = "previews"


def example_dataset() -> dict:
    """examples/raster-dataset.yaml as it is applied (name, labels, spec)."""
    doc = next(
        d for d in load_yaml_docs(REPO / "examples" / "raster-dataset.yaml") if d["kind"] == "MapDataset"
    )
    return doc


def layer_block(mapfile: str, layer: str) -> str:
    """The LAYER ... END block of `layer` in a mapfile, as written (indentation included)."""
    lines = mapfile.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "LAYER" and lines[i + 1].strip() == f'NAME "{layer}"':
            indent = line[: len(line) - len(line.lstrip())]
            end = next(j for j in range(i + 1, len(lines)) if lines[j] == f"{indent}END")
            return "\n".join(lines[i : end + 1])
    raise AssertionError(f"no LAYER {layer!r} in the mapfile:\n{mapfile[:2000]}")


@pytest.fixture(scope="module")
def served(cluster, facade):
    """The example raster applied as it is (labelled for a MapService of this module), the service
    Ready with its pods answering. Returns (namespace, wms base URL opened from this host)."""
    ns = facade.namespace
    doc = example_dataset()
    doc["metadata"]["labels"] = {"previews": "yes"}
    create_cr(cluster.api, ns, doc)
    create_cr(
        cluster.api,
        ns,
        {
            "apiVersion": "maps.kube-mapserver.io/v1alpha1",
            "kind": "MapService",
            "metadata": {"name": SERVICE},
            "spec": {
                "title": "Previews",
                "datasetSelector": {"matchLabels": {"previews": "yes"}},
                "data": {"persistentVolumeClaim": "map-data"},
                "probes": FAST_PROBES,
            },
        },
    )

    def ready():
        st = (get_cr(cluster.api, ns, "MapService", SERVICE) or {}).get("status") or {}
        ok = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])
        return ok and st.get("datasets") == [doc["metadata"]["name"]]

    wait_until(ready, f"MapService {SERVICE} Ready with the example raster", 240, interval=0.5)
    yield ns, service_url(cluster.api, ns, SERVICE)
    # the facade's namespace is shared with the other API tests (their searches must not find these)
    delete_cr(cluster.api, ns, "MapService", SERVICE)
    delete_cr(cluster.api, ns, "MapDataset", doc["metadata"]["name"])
    for kind, name in (("MapService", SERVICE), ("MapDataset", doc["metadata"]["name"])):
        wait_until(
            lambda k=kind, n=name: get_cr(cluster.api, ns, k, n) is None, f"{kind} {name} deleted", 120
        )


@pytest.fixture
def viewer(facade):
    with facade.client("viewer") as c:
        yield c


@pytest.fixture
def editor(facade):
    with facade.client("editor") as c:
        yield c


def test_services_list_detail_and_live_mapfile(cluster, facade, served, viewer):
    ns, _ = served
    page = viewer.get("/services").json()
    assert SERVICE in [i["name"] for i in page["items"]]
    assert viewer.get("/services", params={"q": "PREVIEW"}).json()["total"] == 1
    d = viewer.get(f"/services/{SERVICE}")
    assert d.status_code == 200, d.text
    svc = d.json()
    cr = get_cr(cluster.api, ns, "MapService", SERVICE)
    assert svc["ready"] is True and svc["reason"] == "Available" and svc["title"] == "Previews"
    assert svc["datasets"] == ["sst-sample"] and svc["datasetCount"] == 1
    assert svc["replicas"] == 1 and svc["readyReplicas"] == 1
    assert svc["configMap"] == cr["status"]["configMap"] and svc["mapfileHash"] == cr["status"]["mapfileHash"]
    assert svc["urls"]["wms"] == cr["status"]["url"] + "?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetCapabilities"
    assert svc["urls"]["wcs"].endswith(
        "SERVICE=WCS&VERSION=2.0.1&REQUEST=GetCapabilities"
    )  # the example offers WCS
    assert svc["urls"]["wfs"] is None and svc["urls"]["tiles"] is None
    assert "Ready" in {c["type"] for c in svc["conditions"]}

    r = viewer.get(f"/services/{SERVICE}/mapfile")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    cm = client.CoreV1Api(cluster.api).read_namespaced_config_map(cr["status"]["configMap"], ns)
    assert r.text == cm.data["service.map"]  # the live one, as the pods read it
    assert 'NAME "kms_sst-sample"' in r.text and r.headers["x-mapfile-hash"] == svc["mapfileHash"]
    assert viewer.get("/services/nope").status_code == 404
    assert viewer.get("/services/nope/mapfile").status_code == 404
    with facade.client() as anonymous:
        assert anonymous.get("/services").status_code == 401
        assert anonymous.get(f"/services/{SERVICE}/mapfile").status_code == 401


def test_preview_is_the_operators_layer_and_the_pixels_of_its_getmap(served, editor, viewer):
    _, wms = served
    doc = example_dataset()
    body = {"id": doc["metadata"]["name"], **doc["spec"]}
    # the layer text: what the operator wrote for the applied dataset
    m = editor.post("/datasets/preview", params={"format": "mapfile"}, json=body)
    assert m.status_code == 200, m.text
    live = viewer.get(f"/services/{SERVICE}/mapfile").text
    assert layer_block(m.text, "kms_sst-sample") == layer_block(live, "kms_sst-sample")

    # the pixels: what the service's MapServer pods answer to the same GetMap
    for params in ({}, {"bbox": "-60,-30,60,30", "width": 300, "height": 150}):
        r = editor.post("/datasets/preview", params=params, json=body)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
        minx, miny, maxx, maxy = (float(v) for v in r.headers["x-preview-bbox"].split(","))
        img = drawn(r.content, min_coverage=0.99)
        h, w = img.shape[:2]
        assert (w, h) == ((512, 256) if not params else (300, 150))
        g = httpx.get(
            wms,
            params={
                "SERVICE": "WMS",
                "VERSION": "1.3.0",
                "REQUEST": "GetMap",
                "LAYERS": "kms_sst-sample",
                "STYLES": "",
                "CRS": "EPSG:4326",
                "BBOX": f"{miny!r},{minx!r},{maxy!r},{maxx!r}",
                "WIDTH": str(w),
                "HEIGHT": str(h),
                "FORMAT": "image/png",
                "TRANSPARENT": "TRUE",
            },
            timeout=30,
        )
        assert g.status_code == 200 and g.content.startswith(b"\x89PNG"), g.text[:500]
        served_px = rgba(g.content)
        assert np.array_equal(img, served_px), f"{int((img != served_px).any(axis=-1).sum())} pixels differ"
    assert viewer.post("/datasets/preview", json=body).status_code == 403  # editors preview


def _namespace_state(cluster, ns: str, data_root) -> tuple:
    """MapDatasets, ConfigMaps (but the mapfiles the operator rolls out for MapServices) and files."""
    custom, core = client.CustomObjectsApi(cluster.api), client.CoreV1Api(cluster.api)
    datasets = custom.list_namespaced_custom_object("maps.kube-mapserver.io", "v1alpha1", ns, "mapdatasets")
    maps = core.list_namespaced_config_map(ns).items
    return (
        sorted(d["metadata"]["name"] for d in datasets["items"]),
        sorted(
            c.metadata.name
            for c in maps
            if not any(o.kind == "MapService" for o in c.metadata.owner_references or [])
        ),
        sorted(str(p.relative_to(data_root)) for p in data_root.rglob("*")),
        sorted(p.name for p in Path(tempfile.gettempdir()).glob("kms-preview-*")),
    )


def test_a_broken_or_invalid_spec_is_422_and_creates_nothing(cluster, facade, editor, data_root):
    ns = facade.namespace
    before = _namespace_state(cluster, ns, data_root)
    base = {"id": "broken-sst", **example_dataset()["spec"]}
    # MapServer cannot draw band 2 of a one-band raster: its own error line comes back
    r = editor.post("/datasets/preview", json={**base, "style": {"bands": [2]}})
    assert r.status_code == 422 and r.json()["field"] == "style", r.text
    assert "msGetGDALBandList()" in r.json()["detail"] and "illegal band" in r.json()["detail"]
    # ... and an attribute the vector source does not have
    zones = next(d for d in load_yaml_docs(REPO / "examples" / "vector-dataset.yaml"))["spec"]
    style = {**zones["style"], "classItem": "nosuch", "opacity": 100}
    r = editor.post("/datasets/preview", json={**zones, "id": "broken-zones", "style": style})
    assert r.status_code == 422 and "Invalid Field name: nosuch" in r.json()["detail"], r.text
    # the validation a CR gets: schema, the CRD's CEL rules (the apiserver's dry run), data root
    for spec, field in (
        ({**base, "style": {"color": "red"}}, "style.color"),
        ({**base, "protocols": ["WFS"]}, "protocols"),
        ({**base, "source": {"path": "../outside.tif"}}, "source.path"),
        ({**base, "source": {"path": "ocean/missing.tif"}}, "source.path"),
        ({**base, "source": {"url": "https://example.org/a.tif"}}, "source.url"),
    ):
        r = editor.post("/datasets/preview", json=spec)
        assert r.status_code == 422 and r.json()["field"] == field, (spec, r.text)
    r = editor.post("/datasets/preview", params={"width": 5000}, json=base)
    assert r.status_code == 422 and r.json()["field"] == "width"
    assert _namespace_state(cluster, ns, data_root) == before  # no CR, no ConfigMap, no file
    assert get_cr(cluster.api, ns, "MapDataset", "broken-sst") is None


def test_patch_changes_the_cr_with_etags_and_refuses_stale_versions(cluster, facade, editor):
    ns = facade.namespace
    r = editor.post(
        "/datasets",
        json={
            "id": "patch-sst",
            "type": "raster",
            "source": {"path": "ocean/sst-sample.tif"},
            "identifier": "patch-sst",
            "title": "Before",
            "style": {"colorRamp": "viridis", "range": {"min": 0, "max": 30}},
            "labels": {"team": "a"},
        },
    )
    assert r.status_code == 201, r.text
    # once the operator has written its status the version stays put; GET's ETag is that version
    wait_condition(cluster.api, ns, "MapDataset", "patch-sst")

    def settled():
        current = get_cr(cluster.api, ns, "MapDataset", "patch-sst")
        tag = editor.get("/datasets/patch-sst").headers["etag"]
        return (current, tag) if tag == f'"{current["metadata"]["resourceVersion"]}"' else None

    current, etag = wait_until(settled, "GET's ETag is the CR's resourceVersion")
    merge = {"Content-Type": "application/merge-patch+json"}
    p = editor.patch(
        "/datasets/patch-sst",
        content=b'{"title": "After", "keywords": ["sea"], "style": {"colorRamp": "magma", "range": null},'
        b' "labels": {"team": null, "shown": "yes"}}',
        headers={**merge, "If-Match": etag},
    )
    assert p.status_code == 200, p.text
    new_etag = p.headers["etag"]
    assert new_etag != etag and p.json()["spec"]["title"] == "After"
    cr = get_cr(cluster.api, ns, "MapDataset", "patch-sst")
    # (the operator may have written the status since: the CR is at that version or later)
    assert int(etag.strip('"')) < int(new_etag.strip('"')) <= int(cr["metadata"]["resourceVersion"])
    assert cr["spec"]["title"] == "After" and cr["spec"]["keywords"] == ["sea"]
    assert cr["spec"]["style"]["colorRamp"] == "magma" and "range" not in cr["spec"]["style"]
    assert cr["metadata"]["labels"] == {"shown": "yes"}
    assert cr["metadata"]["generation"] == current["metadata"]["generation"] + 1
    # the operator does the rest: it reconciles the new generation
    wait_until(
        lambda: (
            (get_cr(cluster.api, ns, "MapDataset", "patch-sst").get("status") or {}).get("observedGeneration")
            == cr["metadata"]["generation"]
        ),
        "the operator observed the patched generation",
    )

    # a stale If-Match: 412, nothing changes
    before = get_cr(cluster.api, ns, "MapDataset", "patch-sst")
    stale = editor.patch("/datasets/patch-sst", json={"title": "Stale"}, headers={"If-Match": etag})
    assert stale.status_code == 412 and stale.json()["field"] == "If-Match", stale.text
    after = get_cr(cluster.api, ns, "MapDataset", "patch-sst")
    assert (
        after["spec"] == before["spec"]
        and after["metadata"]["generation"] == before["metadata"]["generation"]
    )

    # 422 naming the field; immutable fields; wrong media type
    for body, field in (
        ({"style": {"color": "red"}}, "style.color"),
        ({"title": None}, "title"),
        ({"bogus": 1}, "bogus"),
        ({"protocols": ["WFS"]}, "protocols"),  # the CRD's CEL rule, checked by the apiserver
        ({"type": "vector"}, "type"),
        ({"source": {"path": "ocean/zones-sample.geojson"}}, "source"),
        ({"identifier": "other"}, "identifier"),
        ({"id": "other"}, "id"),
    ):
        r = editor.patch("/datasets/patch-sst", json=body)
        assert r.status_code == 422 and r.json()["field"] == field, (body, r.text)
    r = editor.patch("/datasets/patch-sst", content=b'{"title": "x"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert get_cr(cluster.api, ns, "MapDataset", "patch-sst")["spec"] == before["spec"]
    # without If-Match the patch applies to the current version; application/json is accepted too
    r = editor.patch("/datasets/patch-sst", json={"abstract": "Plain JSON"})
    assert r.status_code == 200 and r.json()["spec"]["abstract"] == "Plain JSON"
    assert editor.patch("/datasets/nope", json={"title": "x"}).status_code == 404
    with facade.client("viewer") as viewer:
        assert viewer.patch("/datasets/patch-sst", json={"title": "x"}).status_code == 403
    assert editor.delete("/datasets/patch-sst").status_code == 200
