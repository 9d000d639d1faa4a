"""Dataset routes against the real cluster and operator: CR writes, cache reads, uploads, reports."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from tests.helpers import create_cr, get_cr, wait_until


def spec(id_: str, identifier: str | None = None, path: str = "ocean/sst-sample.tif", **extra) -> dict:
    return {
        "id": id_,
        "type": "raster",
        "source": {"path": path},
        "identifier": identifier or id_,
        "title": f"Title of {id_}",
        **extra,
    }


@pytest.fixture
def editor(facade):
    with facade.client("editor") as c:
        yield c


def uploads(data_root) -> set[str]:
    d = data_root / "uploads"
    return {p.name for p in d.iterdir()} if d.exists() else set()


def test_register_get_list_and_delete(cluster, facade, editor):
    r = editor.post(
        "/datasets", json=spec("reg-sst", keywords=["ocean", "temperature"], labels={"team": "a"})
    )
    assert r.status_code == 201, r.text
    assert r.json()["id"] == "reg-sst" and r.json()["spec"]["source"]["path"] == "ocean/sst-sample.tif"
    # the client sees its own write at once (from the cache, fed by the write response)
    assert editor.get("/datasets/reg-sst").status_code == 200
    cr = get_cr(cluster.api, facade.namespace, "MapDataset", "reg-sst")
    assert cr["spec"]["identifier"] == "reg-sst" and cr["metadata"]["labels"] == {"team": "a"}
    ready = wait_until(
        lambda: (d := editor.get("/datasets/reg-sst").json())["ready"] and d, "dataset Ready via the facade"
    )
    assert ready["status"]["wgs84Bbox"] == [-180.0, -90.0, 180.0, 90.0]
    page = editor.get("/datasets", params={"q": "TEMPERATURE"}).json()
    assert [i["id"] for i in page["items"]] == ["reg-sst"] and page["total"] == 1
    assert page["items"][0]["keywords"] == ["ocean", "temperature"] and page["items"][0]["ready"] is True
    assert "status" not in page["items"][0]  # light items

    r = editor.post("/datasets", json=spec("reg-sst"))
    assert r.status_code == 409 and r.json()["field"] == "id"
    assert editor.delete("/datasets/reg-sst").json() == {"id": "reg-sst", "deleted": True}
    assert editor.get("/datasets/reg-sst").status_code == 404
    assert editor.delete("/datasets/reg-sst").status_code == 404
    wait_until(lambda: get_cr(cluster.api, facade.namespace, "MapDataset", "reg-sst") is None, "CR deleted")


def test_a_dataset_applied_with_kubectl_is_listed(cluster, facade, editor):
    create_cr(
        cluster.api,
        facade.namespace,
        {
            "apiVersion": "maps.kube-mapserver.io/v1alpha1",
            "kind": "MapDataset",
            "metadata": {"name": "gitops-zones"},
            "spec": {
                "type": "vector",
                "source": {"path": "ocean/zones-sample.geojson"},
                "identifier": "gitops-zones",
                "title": "Zones",
            },
        },
    )
    wait_until(lambda: editor.get("/datasets/gitops-zones").status_code == 200, "watch delivers the CR")
    items = editor.get("/datasets", params={"type": "vector", "q": "gitops"}).json()["items"]
    assert [i["id"] for i in items] == ["gitops-zones"]


def test_pagination_sort_and_filters(facade, editor):
    tag = uuid.uuid4().hex[:6]
    for i in range(5):
        extra = {"campaign": f"camp-{tag}"} if i % 2 else {}
        r = editor.post("/datasets", json=spec(f"pg-{tag}-{i}", title=f"{chr(ord('e') - i)} title", **extra))
        assert r.status_code == 201, r.text
    page = editor.get("/datasets", params={"q": tag, "limit": 2, "offset": 1, "sort": "-id"}).json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [i["id"] for i in page["items"]] == [f"pg-{tag}-3", f"pg-{tag}-2"]
    by_title = editor.get("/datasets", params={"q": tag, "sort": "title"}).json()["items"]
    assert next(i["id"] for i in by_title) == f"pg-{tag}-4"
    camp = editor.get("/datasets", params={"campaign": f"camp-{tag}"}).json()
    assert {i["id"] for i in camp["items"]} == {f"pg-{tag}-1", f"pg-{tag}-3"}
    assert editor.get("/datasets", params={"limit": 0}).status_code == 422
    r = editor.get("/datasets", params={"sort": "bogus"})
    assert r.status_code == 422 and r.json()["field"] == "sort"
    wait_until(
        lambda: editor.get("/datasets", params={"q": tag, "ready": True}).json()["total"] == 5, "all Ready"
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"source": {"path": "ocean/missing.tif"}}, "source.path"),
        ({"source": {"path": "../etc/passwd"}}, "source.path"),
        ({"source": {"path": "ocean/sst-sample.tif", "url": "https://example.org/a.tif"}}, "source"),
        ({"identifier": "bad identifier!"}, "identifier"),
        ({"type": "pointcloud"}, "type"),
        ({"protocols": ["WFS"]}, "protocols"),
        ({"style": {"classes": 4, "minClasses": 8}}, "style.classes"),
        ({"unknownField": 1}, "unknownField"),
        ({"id": "Not_A_DNS_Name"}, "id"),
    ],
)
def test_bad_input_names_the_field_and_creates_nothing(cluster, facade, editor, body, field):
    name = f"bad-{uuid.uuid4().hex[:6]}"
    r = editor.post("/datasets", json={**spec(name), **body})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field, r.json()
    assert get_cr(cluster.api, facade.namespace, "MapDataset", name) is None


def test_allowed_roots_and_colormap_minimum_come_from_config(facade_factory):
    fac = facade_factory()
    with fac.client("admin") as admin:
        admin.post(
            "/config", json={"allowedDataRoots": ["terrain"], "minColormapClasses": 6}
        ).raise_for_status()
        r = admin.post("/datasets", json=spec("outside"))
        assert r.status_code == 422 and r.json()["field"] == "source.path"
        assert "allowed data root" in r.json()["detail"]
        admin.post("/config", json={"allowedDataRoots": ["ocean"]}).raise_for_status()
        r = admin.post("/datasets", json=spec("few-classes", style={"colorRamp": "viridis", "classes": 4}))
        assert r.status_code == 422 and r.json()["field"] == "style.classes"
        assert admin.post("/datasets", json=spec("inside", style={"classes": 6})).status_code == 201


# ------------------------------------------------------------------ uploads


def test_upload_geojson_registers_a_ready_dataset(facade, editor, data_root):
    body = (data_root / "ocean" / "zones-sample.geojson").read_bytes()
    name = f"zones-{uuid.uuid4().hex[:6]}.geojson"
    r = editor.post(
        "/datasets/upload",
        files={"file": (name, body, "application/geo+json")},
        data={"title": "Uploaded zones", "keywords": "zones, upload"},
    )
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["spec"]["type"] == "vector" and d["spec"]["source"]["path"] == f"uploads/{name}"
    assert d["spec"]["keywords"] == ["zones", "upload"]
    assert (data_root / "uploads" / name).read_bytes() == body
    wait_until(
        lambda: editor.get(f"/datasets/{d['id']}").json()["ready"], "uploaded dataset Ready", timeout=60
    )
    # same file name again: 409, the first file untouched
    r = editor.post(
        "/datasets/upload", files={"file": (name, b"{}", "application/json")}, data={"id": "other"}
    )
    assert r.status_code == 409 and (data_root / "uploads" / name).read_bytes() == body


@pytest.mark.parametrize(
    "filename",
    ["../evil.tif", "a/b.tif", ".hidden.tif", "ctrl\x01.tif", "script.sh", "noext", "back\\slash.tif"],
)
def test_upload_rejects_unsafe_names(facade, editor, data_root, filename):
    before = uploads(data_root)
    r = editor.post("/datasets/upload", files={"file": (filename, b"data", "application/octet-stream")})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "file"
    assert uploads(data_root) == before


def test_oversize_upload_is_413_and_leaves_nothing(cluster, facade_factory, data_root):
    fac = facade_factory()
    with fac.client("admin") as admin:
        admin.post("/config", json={"maxUploadMb": 1}).raise_for_status()
        before = uploads(data_root)
        big = b"x" * (3 * 1024 * 1024)
        r = admin.post("/datasets/upload", files={"file": ("big.tif", big, "image/tiff")}, data={"id": "big"})
        assert r.status_code == 413, r.text
        assert r.json()["field"] == "file"

        def chunks():  # no Content-Length: the limit must hold while streaming
            yield b'--BOUNDARY\r\nContent-Disposition: form-data; name="id"\r\n\r\nbig-streamed\r\n'
            yield b'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="big2.tif"\r\n'
            yield b"Content-Type: image/tiff\r\n\r\n"
            for _ in range(24):
                yield b"y" * (128 * 1024)
            yield b"\r\n--BOUNDARY--\r\n"

        r = admin.post(
            "/datasets/upload",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=BOUNDARY"},
        )
        assert r.status_code == 413, r.text
        assert uploads(data_root) == before  # no partial file
        assert get_cr(cluster.api, fac.namespace, "MapDataset", "big") is None
        assert get_cr(cluster.api, fac.namespace, "MapDataset", "big-streamed") is None


def test_upload_with_invalid_fields_leaves_no_file(cluster, facade, editor, data_root):
    before = uploads(data_root)
    r = editor.post(
        "/datasets/upload",
        files={"file": ("fine.geojson", b"{}", "application/json")},
        data={"identifier": "not valid!"},
    )
    assert r.status_code == 422 and r.json()["field"] == "identifier"
    r = editor.post("/datasets/upload", files={"file": ("fine.geojson", b"{}")}, data={"colour": "red"})
    assert r.status_code == 422 and r.json()["field"] == "colour"
    assert uploads(data_root) == before
    assert editor.post("/datasets/upload", content=b"not multipart").status_code == 422


# ------------------------------------------------------------------ reports and maintenance


def test_duplicates_by_identifier_source_and_checksum(facade, editor):
    tag = uuid.uuid4().hex[:6]
    for body in (
        spec(f"dup-a-{tag}", f"dup-ident-{tag}"),
        spec(f"dup-b-{tag}", f"dup-ident-{tag}"),
        spec(f"dup-c-{tag}", f"dup-other-{tag}"),
    ):
        assert editor.post("/datasets", json=body).status_code == 201
    names = [f"dup-a-{tag}", f"dup-b-{tag}", f"dup-c-{tag}"]
    report = editor.get("/datasets/duplicates").json()
    assert {"key": f"dup-ident-{tag}", "datasets": names[:2]} in report["byIdentifier"]
    same_source = next(g for g in report["bySource"] if g["key"] == "path:ocean/sst-sample.tif")
    assert set(names) <= set(same_source["datasets"])
    # checksums come from a rehash MapJob run by the real runner
    r = editor.post("/datasets/maintenance/rehash", json={"datasets": names})
    assert r.status_code == 202, r.text
    job = r.json()["jobs"][0]
    assert job["type"] == "rehash" and job["state"] == "in-progress"
    wait_until(
        lambda: editor.get(f"/jobs/{job['id']}").json()["state"] == "success", "rehash job", timeout=90
    )

    def grouped():
        groups = editor.get("/datasets/duplicates").json()["byChecksum"]
        return next((g for g in groups if set(names) <= set(g["datasets"])), None)

    group = wait_until(grouped, "checksum group", timeout=30)
    assert group["key"].startswith("sha256:")
    r = editor.post("/datasets/maintenance/rehash", json={"datasets": ["no-such-dataset"]})
    assert r.status_code == 422 and r.json()["field"] == "datasets"


def test_hyspex_missing_variants(facade, editor):
    camp = f"hyspex-{uuid.uuid4().hex[:6]}"
    for ident in ("scene1_rgb", "scene1_z", "scene2-rgb", "scene3_Z"):
        body = spec(f"{camp}-{ident.lower().replace('_', '-')}", f"{camp}.{ident}", campaign=camp)
        assert editor.post("/datasets", json=body).status_code == 201, ident
    body = spec(f"{camp}-explicit", f"{camp}.scene4", campaign=camp, variant="Z")
    assert editor.post("/datasets", json=body).status_code == 201
    report = editor.get("/datasets/hyspex-missing-variants", params={"campaign": camp}).json()
    assert [c["campaign"] for c in report["campaigns"]] == [camp]
    scenes = {s["scene"]: s for s in report["campaigns"][0]["scenes"]}
    assert set(scenes) == {f"{camp}.scene2", f"{camp}.scene3", f"{camp}.scene4"}
    assert scenes[f"{camp}.scene2"]["missing"] == ["Z"] and scenes[f"{camp}.scene2"]["present"] == ["RGB"]
    assert scenes[f"{camp}.scene3"]["missing"] == ["RGB"]
    assert scenes[f"{camp}.scene4"]["missing"] == ["RGB"]


def test_prune_missing_dry_run_then_delete(cluster, facade, editor, data_root):
    tag = uuid.uuid4().hex[:6]
    path = data_root / "prune" / f"{tag}.geojson"
    path.parent.mkdir(exist_ok=True)
    path.write_text((data_root / "ocean" / "zones-sample.geojson").read_text())
    body = {**spec(f"prune-{tag}", path=f"prune/{tag}.geojson"), "type": "vector"}
    assert editor.post("/datasets", json=body).status_code == 201
    wait_until(lambda: editor.get(f"/datasets/prune-{tag}").json()["ready"], "Ready before the file goes")
    path.unlink()
    # the operator notices on its next inspection: a spec change makes it look again
    from tests.helpers import patch_cr

    patch_cr(cluster.api, facade.namespace, "MapDataset", f"prune-{tag}", {"spec": {"title": "gone"}})
    wait_until(
        lambda: editor.get(f"/datasets/prune-{tag}").json()["reason"] == "SourceNotFound", "SourceNotFound"
    )
    r = editor.post("/datasets/maintenance/prune-missing", json={"dryRun": True})
    assert f"prune-{tag}" in r.json()["datasets"] and r.json()["dryRun"] is True
    assert editor.get(f"/datasets/prune-{tag}").status_code == 200
    r = editor.post("/datasets/maintenance/prune-missing", json={"dryRun": False})
    assert f"prune-{tag}" in r.json()["datasets"]
    assert editor.get(f"/datasets/prune-{tag}").status_code == 404


def test_resync_runs_a_repair_metadata_job_and_applies_its_result(facade, editor, data_root):
    name = f"resync-{uuid.uuid4().hex[:6]}"
    assert editor.post("/datasets", json=spec(name)).status_code == 201
    r = editor.post("/datasets/maintenance/resync", json={"datasets": [name]})
    assert r.status_code == 202, r.text
    jobs = r.json()["jobs"]
    assert [j["type"] for j in jobs] == ["repair-metadata"] and jobs[0]["state"] == "in-progress"

    def finished():
        j = editor.get(f"/jobs/{jobs[0]['id']}").json()
        return j if j["state"] != "in-progress" else None

    done = wait_until(finished, "the repair-metadata job finished", timeout=90)
    assert done["state"] == "success" and done["phase"] == "Succeeded", done
    # the runner read the file itself (the sample: 360x180 one-band Float32 GeoTIFF, EPSG:4326, world)
    tif = data_root / "ocean" / "sst-sample.tif"
    checksum = "sha256:" + hashlib.sha256(tif.read_bytes()).hexdigest()
    result = done["result"]
    assert result["type"] == "repair-metadata" and result["count"] == 1, result
    assert set(result["metadata"]) == {name}, result
    meta = result["metadata"][name]
    assert meta["extent"]["crs"] == "EPSG:4326", meta
    assert meta["extent"]["bbox"] == pytest.approx([-180.0, -90.0, 180.0, 90.0]), meta
    assert meta["wgs84Bbox"] == pytest.approx([-180.0, -90.0, 180.0, 90.0]), meta
    assert meta["bandCount"] == 1 and meta["size"] == tif.stat().st_size, meta
    assert meta["checksum"] == checksum, meta
    # ... and the operator wrote that result into the dataset's status
    status = wait_until(
        lambda: (d := editor.get(f"/datasets/{name}").json()["status"] or {}).get("checksum") and d,
        "the job's checksum in the dataset's status",
        timeout=30,
    )
    assert status["checksum"] == checksum and status["size"] == tif.stat().st_size, status
