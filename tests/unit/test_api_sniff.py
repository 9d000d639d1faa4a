"""kms_api.sniff: the streaming JSON depth scan against a reference at every chunk size, TIFF headers."""

from __future__ import annotations

import json
import random

import pytest

from kms_api import sniff
from kms_api.errors import Problem


def _depth(o) -> int:
    if isinstance(o, dict):
        return 1 + max([_depth(v) for v in o.values()] + [0])
    if isinstance(o, list):
        return 1 + max([_depth(v) for v in o] + [0])
    return 0


def _random_doc(rnd: random.Random, level: int = 0):
    r = rnd.random()
    if level > 6 or r < 0.3:
        return rnd.choice([1, 'a"[{\\', "]}\\\\", "x" * rnd.randint(0, 20), None, "ÆØÅ ✓"])
    if r < 0.65:
        return [_random_doc(rnd, level + 1) for _ in range(rnd.randint(0, 3))]
    return {f'k{i}\\"[': _random_doc(rnd, level + 1) for i in range(rnd.randint(0, 3))}


def test_depth_scan_matches_a_real_parser_across_chunk_boundaries(tmp_path, monkeypatch):
    rnd = random.Random(7)
    path = tmp_path / "doc.json"
    for _ in range(1500):
        doc = {"type": _random_doc(rnd)}
        path.write_bytes(json.dumps(doc, ensure_ascii=rnd.random() < 0.5).encode())
        monkeypatch.setattr(sniff, "CHUNK", rnd.randint(1, 40))
        assert sniff._max_depth(path) == _depth(doc), path.read_bytes()


@pytest.mark.parametrize(
    "raw",
    [b'{"a": [}', b'{"a": "open', b"[[[", b"]]", b'{"a": "\\"}'],
    ids=["bracket", "string", "open", "close", "esc"],
)
def test_depth_scan_reports_unbalanced_input(tmp_path, raw):
    (tmp_path / "x.json").write_bytes(raw)
    assert sniff._max_depth(tmp_path / "x.json") == -1


@pytest.mark.parametrize("big", [False, True], ids=["classic", "bigtiff"])
def test_tiff_shape_and_bomb_ratio(tmp_path, big):
    from osgeo import gdal

    opts = ["TILED=YES", "COMPRESS=DEFLATE", "SPARSE_OK=TRUE"] + (["BIGTIFF=YES"] if big else [])
    small = str(tmp_path / "small.tif")
    gdal.GetDriverByName("GTiff").Create(small, 300, 200, 3, gdal.GDT_UInt16, opts).FlushCache()
    assert sniff._tiff_shape(tmp_path / "small.tif")[:3] == (300, 200, 3)
    sniff.check(tmp_path / "small.tif", ".tif", "image/tiff")
    gdal.GetDriverByName("GTiff").Create(str(tmp_path / "bomb.tif"), 60_000, 60_000, 1, gdal.GDT_Byte, opts)
    with pytest.raises(Problem) as e:
        sniff.check(tmp_path / "bomb.tif", ".tif", None)
    assert e.value.status == 422 and "decompression bomb" in e.value.detail


def test_declared_type_parameters_and_case_are_ignored(tmp_path):
    (tmp_path / "a.geojson").write_bytes(b'{"type": "FeatureCollection", "features": []}')
    sniff.check(tmp_path / "a.geojson", ".geojson", "Application/GEO+JSON; charset=utf-8")
    with pytest.raises(Problem) as e:
        sniff.check(tmp_path / "a.geojson", ".geojson", "image/png")
    assert e.value.status == 415 and e.value.field == "file"
