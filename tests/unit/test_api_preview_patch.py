"""Pure parts of the facade's service views, dataset patches and previews; the preview render runs
the real mapserv (Debian's mapserver-bin) on the sample data, no cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kms_api import patching, preview, registry, views
from kms_api.errors import Problem
from kms_crds.mapdataset import MapDatasetSpec
from kms_operator.mapfile import layer_name
from tests.conftest import REPO
from tests.helpers import hack_module
from tests.pixels import drawn


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    hack_module("sample_data").write_samples(root)
    return root


def example(name: str) -> MapDatasetSpec:
    return MapDatasetSpec.model_validate(yaml.safe_load((REPO / "examples" / name).read_text())["spec"])


# ------------------------------------------------------------------ patches


def test_merge_patch_follows_rfc_7386():
    target = {"title": "a", "style": {"color": "#000000", "opacity": 50}, "keywords": ["x"]}
    patch = {"title": "b", "style": {"color": None, "classItem": "k"}, "keywords": ["y", "z"]}
    assert patching.merge(target, patch) == {
        "title": "b",
        "style": {"opacity": 50, "classItem": "k"},
        "keywords": ["y", "z"],
    }
    assert patching.merge(target, {"style": None}) == {"title": "a", "keywords": ["x"]}
    assert target["style"] == {"color": "#000000", "opacity": 50}  # not modified in place


def test_diff_is_the_merge_patch_from_old_to_new():
    old = {"title": "a", "abstract": "x", "style": {"color": "#000000", "opacity": 100}}
    new = {"title": "b", "style": {"color": "#ffffff", "opacity": 100}, "keywords": ["k"]}
    d = patching.diff(old, new)
    assert d == {"title": "b", "abstract": None, "style": {"color": "#ffffff"}, "keywords": ["k"]}
    assert patching.merge(old, d) == new
    assert patching.diff(new, new) == {}


@pytest.mark.parametrize(
    ("header", "version"),
    [(None, None), ("*", None), ('"42"', "42"), ("42", "42"), ('W/"42"', "42")],
)
def test_if_match_versions(header, version):
    assert patching.if_match_version(header) == version


def test_if_match_with_several_versions_or_none_is_refused():
    for header in ('"1", "2"', '""'):
        with pytest.raises(Problem) as e:
            patching.if_match_version(header)
        assert e.value.status == 412


def test_split_and_immutable_fields():
    spec, labels = patching.split({"title": "t", "labels": {"a": "1", "b": None}}, {"b": "2"})
    assert spec == {"title": "t"} and labels == {"a": "1", "b": None}
    assert patching.split({"labels": None}, {"a": "1"}) == ({}, {"a": None})
    assert patching.split({"title": "t"}, {"a": "1"}) == ({"title": "t"}, None)
    for body, field in (({"id": "x"}, "id"), (["title"], None), ({"labels": {"a": 1}}, "labels.a")):
        with pytest.raises(Problem) as e:
            patching.split(body, {})
        assert e.value.status == 422 and e.value.field == field
    old = {"type": "raster", "source": {"path": "a.tif"}, "identifier": "a", "title": "A"}
    patching.check_immutable(old, {**old, "title": "B"})
    for field, value in (("type", "vector"), ("source", {"path": "b.tif"}), ("identifier", "b")):
        with pytest.raises(Problem) as e:
            patching.check_immutable(old, {**old, field: value})
        assert e.value.status == 422 and e.value.field == field


def test_a_patched_spec_takes_camel_case_only():
    base = {"type": "raster", "source": {"path": "a.tif"}, "identifier": "a", "title": "A"}
    ok = registry.parse_create({**base, "style": {"colorRamp": "magma"}}, by_name=False)
    assert ok.style.color_ramp == "magma"
    with pytest.raises(Problem) as e:
        registry.parse_create({**base, "style": {"color_ramp": "magma"}}, by_name=False)
    assert e.value.field == "style.color_ramp"
    with pytest.raises(Problem) as e:
        registry.parse_create({**base, "style": {"color": "red"}}, by_name=False)
    assert e.value.field == "style.color"


# ------------------------------------------------------------------ services


def service(status: dict, tile_wms: bool = False) -> dict:
    spec = {"title": "Ocean", "datasetSelector": {"matchLabels": {"c": "o"}}}
    if tile_wms:
        spec["tileCache"] = {"wms": True}
    return {
        "metadata": {"name": "ocean", "uid": "u", "generation": 2, "creationTimestamp": "t"},
        "spec": spec,
        "status": status,
    }


def test_service_detail_and_urls_from_status():
    status = {
        "url": "http://ocean.ns.svc.cluster.local:8080/",
        "replicas": 2,
        "readyReplicas": 1,
        "datasetCount": 2,
        "datasets": ["a", "b"],
        "configMap": "ocean-mapfile-abc",
        "mapfileHash": "abc",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": "ok"}],
        "tileCache": {"url": "http://t/", "xyz": "http://t/{z}", "configMap": "x"},
    }
    d = views.service_detail(service(status), {"WMS", "WFS"})
    assert d["ready"] and d["reason"] == "Available" and d["datasets"] == ["a", "b"]
    urls = d["urls"]
    assert (
        urls["wms"]
        == "http://ocean.ns.svc.cluster.local:8080/?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetCapabilities"
    )
    assert urls["wfs"].endswith("?SERVICE=WFS&VERSION=2.0.0&REQUEST=GetCapabilities")
    assert urls["wcs"] is None and urls["ogcapi"] is None
    assert urls["tiles"] == {"url": "http://t/", "xyz": "http://t/{z}"}
    # status.urls (OGC API and friends) wins; through the tile cache's WMS there is no WFS/WCS
    status2 = {**status, "urls": {"ogcapi": "http://o/ogcapi/"}, "url": "http://t/wms"}
    urls2 = views.service_urls(service(status2, tile_wms=True), {"WMS", "WFS"})
    assert urls2["ogcapi"] == "http://o/ogcapi/" and urls2["wfs"] is None
    assert views.service_item(service({}))["ready"] is False


# ------------------------------------------------------------------ previews


def test_frame_defaults_and_limits(data_root):
    ds = preview.inspect("sst", example("raster-dataset.yaml"), data_root, [], [])
    assert preview.frame(ds, None, None, None, 2048) == ([-180.0, -90.0, 180.0, 90.0], 512, 256)
    assert preview.frame(ds, [0, 0, 10, 20], None, None, 2048)[1:] == (256, 512)
    assert preview.frame(ds, None, 100, None, 2048)[1:] == (100, 50)
    for args, field in (
        (([0, 0, 10, 20], 4000, None), "width"),
        (([5, 0, 1, 1], None, None), "bbox"),
        (([0, 0, float("inf"), 1], None, None), "bbox"),
    ):
        with pytest.raises(Problem) as e:
            preview.frame(ds, *args, 2048)
        assert e.value.status == 422 and e.value.field == field


def test_inspection_is_confined_to_the_data_root(data_root):
    spec = example("raster-dataset.yaml")
    outside = spec.model_copy(update={"source": spec.source.model_copy(update={"path": "../etc/passwd"})})
    with pytest.raises(Problem) as e:
        preview.inspect("x", outside, data_root, [], [])
    assert e.value.status == 422 and "SourceOutsideDataRoot" in e.value.detail
    with pytest.raises(Problem) as e:
        preview.inspect("x", spec, data_root, ["elsewhere"], [])
    assert "SourceNotAllowed" in e.value.detail and e.value.field == "source.path"


def test_preview_renders_the_operators_layer_with_mapserver(data_root):
    spec = example("raster-dataset.yaml")
    ds = preview.inspect("sst-sample", spec, data_root, [], [])
    text = preview.mapfile(ds)
    assert 'DATA "/data/ocean/sst-sample.tif"' in text and 'NAME "kms_sst-sample"' in text
    area, w, h = preview.frame(ds, None, None, None, 2048)
    png = preview.render(
        preview.mapfile(ds, str(data_root)), layer_name(spec.identifier), area, w, h, preview.Limits()
    )
    img = drawn(png, min_coverage=0.99)
    assert img.shape[:2] == (256, 512)
    assert tuple(img[128, 10][:3]) != tuple(img[128, 500][:3]), "the ramp runs west to east"


def test_a_style_mapserver_cannot_draw_is_named(data_root):
    spec = example("vector-dataset.yaml")
    # (opacity 100: below it MapServer draws the layer into a composite and drops its error)
    style = spec.style.model_copy(update={"class_item": "nosuch", "opacity": 100})
    ds = preview.inspect("z", spec.model_copy(update={"style": style}), data_root, [], [])
    area, w, h = preview.frame(ds, None, 64, None, 2048)
    with pytest.raises(Problem) as e:
        preview.render(
            preview.mapfile(ds, str(data_root)), layer_name(spec.identifier), area, w, h, preview.Limits()
        )
    assert e.value.status == 422 and "Invalid Field name: nosuch" in e.value.detail


def test_error_line_prefers_the_cause():
    stderr = b"msOGRLayerInitItemInfo(): OGR error. Invalid Field name\nmsDrawMap(): Image handling error.\n"
    assert preview.error_line(b"", stderr).startswith("msOGRLayerInitItemInfo()")
    xml = b"<ServiceException>\nmsLoadMap(): Unknown identifier. (FOO)\n</ServiceException>"
    assert preview.error_line(xml, b"") == "msLoadMap(): Unknown identifier. (FOO)"
    assert "status -9" in preview.error_line(b"", b"", -9)
