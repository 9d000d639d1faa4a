"""Hostile uploads through the facade: decompression bombs, deeply nested JSON, content that is not
what its name or declared type says. Each is refused with a clear 4xx naming `file`, and leaves no file
on the data volume and no object in the cluster; real data of the same kinds is still accepted."""

from __future__ import annotations

import gzip
import io
import json
import time
import uuid
import zipfile

import pytest
from kubernetes import client

from tests.helpers import wait_until

MAX_UPLOAD_MB = 16
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
)


@pytest.fixture(scope="module")
def fac(facade_factory, operator_process):
    """A facade of its own (upload limit 16 MiB) on the session's data volume, which the operator reads."""
    return facade_factory(KMS_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB), KMS_WATCH_TIMEOUT="5")


def _tiff_bomb(tmp_path) -> bytes:
    """A valid GeoTIFF of 100000 x 100000 pixels (9.3 GiB) whose tiles are all sparse: ~1 MiB on disk."""
    from osgeo import gdal

    path = str(tmp_path / "bomb.tif")
    ds = gdal.GetDriverByName("GTiff").Create(
        path, 100_000, 100_000, 1, gdal.GDT_Byte, ["TILED=YES", "COMPRESS=DEFLATE", "SPARSE_OK=TRUE"]
    )
    ds.SetGeoTransform([0, 0.001, 0, 0, 0, -0.001])
    ds = None
    return (tmp_path / "bomb.tif").read_bytes()


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.tif", b"\0" * (64 * 1024 * 1024))
    return buf.getvalue()


def _feature(i: int) -> dict:
    return {
        "type": "Feature",
        "properties": {"n": i},
        "geometry": {"type": "Point", "coordinates": [i % 360 - 180, (i // 360) % 180 - 90]},
    }


def hostile(tmp_path, data_root) -> list[tuple[str, str, bytes, str | None]]:
    """(label, file name, bytes, declared content type or None for the client's guess)."""
    zeros_gz = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    deep = b'{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"a": '
    deep += b"[" * 5000 + b"]" * 5000 + b'}, "geometry": null}]}'
    tiff = (data_root / "ocean" / "sst-sample.tif").read_bytes()
    geojson = (data_root / "ocean" / "zones-sample.geojson").read_bytes()
    return [
        ("gzip bomb (64 MiB of zeros) named .tif", "bomb.tif", zeros_gz, None),
        ("gzip bomb named .geojson", "bomb.geojson", zeros_gz, None),
        ("gzip bomb declared application/gzip", "bomb.tif", zeros_gz, "application/gzip"),
        ("zip bomb named .gpkg", "bomb.gpkg", _zip_bomb(), None),
        ("zip bomb named .zip", "bomb.zip", _zip_bomb(), "application/zip"),
        ("sparse 100000x100000 GeoTIFF (decompression bomb)", "sparse.tif", _tiff_bomb(tmp_path), None),
        ("JSON nested 5000 deep", "deep.geojson", deep, "application/geo+json"),
        ("brackets only, 200000 deep", "brackets.json", b"{" + b"[" * 200_000, None),
        ("PNG bytes named .tif", "picture.tif", PNG + b"\0" * 1000, None),
        ("PNG bytes named .tiff, declared image/tiff", "picture.tiff", PNG, "image/tiff"),
        ("a real GeoTIFF declared image/png", "real.tif", tiff, "image/png"),
        ("a real GeoJSON declared text/html", "real.geojson", geojson, "text/html"),
        ("plain text named .geojson", "notes.geojson", b"just some notes, not JSON\n", "text/plain"),
        ("a JSON array named .geojson", "array.geojson", b"[1, 2, 3]", None),
        ("a JSON object that is not GeoJSON", "object.json", b'{"hello": "world"}', None),
        ("an unterminated JSON string", "open.geojson", b'{"type": "Feature", "x": "abc', None),
        ("a GeoTIFF header with a garbage IFD", "header.tif", b"II*\x00\xff\xff\xff\xff" + b"\0" * 64, None),
        ("text named .nc", "data.nc", b"netcdf is not this\n", None),
        ("text named .fgb", "data.fgb", b"flatgeobuf is not this\n", None),
        ("an HTML page named .gpkg", "page.gpkg", b"<html><script>alert(1)</script></html>", "text/html"),
    ]


def _state(cluster, fac, data_root) -> tuple[set[str], set[str]]:
    d = data_root / "uploads"
    files = {p.name for p in d.iterdir()} if d.exists() else set()
    objs = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
        "maps.kube-mapserver.io", "v1alpha1", fac.namespace, "mapdatasets"
    )["items"]
    return files, {o["metadata"]["name"] for o in objs}


def test_hostile_uploads_are_refused_and_leave_nothing(cluster, fac, data_root, tmp_path, capsys):
    cases = hostile(tmp_path, data_root)
    before = _state(cluster, fac, data_root)
    tag = uuid.uuid4().hex[:6]
    server_errors, slowest, codes = 0, 0.0, {}
    with fac.client("editor") as editor:
        for i, (label, name, data, ctype) in enumerate(cases):
            assert len(data) < MAX_UPLOAD_MB * 1024 * 1024, label  # inside the limit: the content decides
            stem, ext = name.rsplit(".", 1)
            part = (f"{stem}-{tag}-{i}.{ext}", data) + ((ctype,) if ctype else ())
            t0 = time.monotonic()
            r = editor.post("/datasets/upload", files={"file": part}, data={"title": label})
            slowest = max(slowest, time.monotonic() - t0)
            server_errors += r.status_code >= 500
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            assert r.status_code in (415, 422), f"{label}: HTTP {r.status_code} {r.text[:300]}"
            body = r.json()
            assert body["field"] == "file" and body["detail"], (label, body)
        after = _state(cluster, fac, data_root)
        assert after == before, f"left behind: files {after[0] - before[0]}, datasets {after[1] - before[1]}"
        assert not any(n.startswith(".upload-") for n in after[0]), "a partial upload was left"
        assert editor.get("/health").status_code == 200
    with capsys.disabled():
        print(
            f"\n[security] hostile uploads: inputs tried={len(cases)}, "
            f"refused {dict(sorted(codes.items()))}, "
            f"server errors={server_errors}, files left=0, datasets created=0, slowest {slowest:.2f}s"
        )


def test_real_files_of_each_kind_are_still_accepted(cluster, fac, data_root, capsys):
    """The checks refuse only what is wrong: real data, a big FeatureCollection within the limit too."""
    tag = uuid.uuid4().hex[:6]
    many = {"type": "FeatureCollection", "features": [_feature(i) for i in range(60_000)]}
    many_bytes = json.dumps(many).encode()
    assert len(many_bytes) < MAX_UPLOAD_MB * 1024 * 1024
    cases = [
        (f"sst-{tag}.tif", (data_root / "ocean" / "sst-sample.tif").read_bytes(), "image/tiff"),
        (f"zones-{tag}.geojson", (data_root / "ocean" / "zones-sample.geojson").read_bytes(), None),
        (f"many-{tag}.geojson", many_bytes, "application/geo+json"),
    ]
    ids = []
    with fac.client("editor") as editor:
        t0 = time.monotonic()
        for name, data, ctype in cases:
            part = (name, data) + ((ctype,) if ctype else ())
            r = editor.post("/datasets/upload", files={"file": part})
            assert r.status_code == 201, f"{name}: {r.text}"
            ids.append(r.json()["id"])
        for id_ in ids:
            wait_until(lambda i=id_: editor.get(f"/datasets/{i}").json()["ready"], f"{id_} Ready", 90)
        elapsed = time.monotonic() - t0
        for id_ in ids:
            assert editor.delete(f"/datasets/{id_}").status_code == 200
    for name, _, _ in cases:
        (data_root / "uploads" / name).unlink(missing_ok=True)
    with capsys.disabled():
        print(
            f"\n[security] real uploads accepted: {len(cases)} (GeoTIFF, GeoJSON, 60000 features in "
            f"{len(many_bytes) / 1024**2:.1f} MiB), all Ready in {elapsed:.1f}s"
        )
