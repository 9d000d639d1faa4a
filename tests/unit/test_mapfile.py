"""The mapfile builder: golden files, loading with mapscript, escaping of user strings, real rendering."""

from __future__ import annotations

import array
import dataclasses
import hashlib
import json
import os
import weakref
from pathlib import Path

import mapscript
import pytest
from osgeo import gdal, ogr, osr

from kms_crds.mapdataset import MapDatasetSpec, MapDatasetStatus, Source, Style, ValueRange, VectorClass
from kms_crds.mapservice import MapServiceSpec
from kms_operator.mapfile import (
    DATA_MOUNT,
    RAMPS,
    DatasetInput,
    build_config,
    build_mapfile,
    layer_name,
    mapfile_hash,
    quote,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "mapfile"

gdal.UseExceptions()
ogr.UseExceptions()


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- fixtures


def raster_ramp() -> DatasetInput:
    spec = MapDatasetSpec.model_validate(
        {
            "type": "raster",
            "source": {"path": "ocean/sst.tif"},
            "identifier": "no.met:sst-2024-01",
            "title": "Sea surface temperature",
            "abstract": "Monthly mean SST.",
            "keywords": ["ocean", "temperature"],
            "projection": "EPSG:4326",
            "protocols": ["WMS", "WCS"],
            "style": {"colorRamp": "viridis", "classes": 5, "range": {"min": 0, "max": 100}, "nodata": -9999},
        }
    )
    status = MapDatasetStatus.model_validate(
        {
            "extent": {"bbox": [-10.0, 50.0, 30.0, 80.0], "crs": "EPSG:4326"},
            "wgs84Bbox": [-10.0, 50.0, 30.0, 80.0],
            "bandCount": 1,
            "valueRange": {"min": -2.5, "max": 31.25},
        }
    )
    return DatasetInput("sst", spec, status)


def raster_rgb() -> DatasetInput:
    spec = MapDatasetSpec.model_validate(
        {
            "type": "raster",
            "source": {"url": "https://example.org/cog/ortho.tif"},
            "identifier": "ortho-2023",
            "title": "Orthophoto 2023",
            "style": {"bands": [1, 2, 3], "opacity": 80},
        }
    )
    status = MapDatasetStatus.model_validate(
        {
            "extent": {"bbox": [500000.0, 6600000.0, 510000.0, 6610000.0], "crs": "EPSG:32632"},
            "wgs84Bbox": [9.0, 59.5, 9.2, 59.6],
            "bandCount": 3,
        }
    )
    return DatasetInput("ortho", spec, status)


def vector_classes() -> DatasetInput:
    spec = MapDatasetSpec.model_validate(
        {
            "type": "vector",
            "source": {"path": "land/cover.gpkg", "layer": "landcover"},
            "identifier": "landcover",
            "title": "Land cover",
            "keywords": ["land"],
            "protocols": ["WMS", "WFS", "OGCAPI"],
            "style": {
                "classItem": "kind",
                "vectorClasses": [
                    {"name": "Forest", "value": "forest", "color": "#228b22"},
                    {"name": "Water", "value": "water", "color": "#1e90ff"},
                ],
                "outlineColor": "#000000",
                "minScaleDenom": 1000,
                "maxScaleDenom": 5000000,
            },
        }
    )
    status = MapDatasetStatus.model_validate(
        {
            "extent": {"bbox": [4.0, 57.0, 31.5, 71.5], "crs": "EPSG:4326"},
            "wgs84Bbox": [4.0, 57.0, 31.5, 71.5],
            "geometryType": "POLYGON",
        }
    )
    return DatasetInput("landcover", spec, status)


SERVICE = MapServiceSpec()
CASES = {
    "raster_ramp": (SERVICE, [raster_ramp()]),
    "raster_rgb": (SERVICE, [raster_rgb()]),
    "vector_classes": (SERVICE, [vector_classes()]),
    "all": (
        MapServiceSpec.model_validate(
            {
                "title": "Norway maps",
                "abstract": "Everything we have.",
                "mapserver": {"maxSize": 2048, "onlineResource": "https://maps.example.org/ocean"},
            }
        ),
        [vector_classes(), raster_rgb(), raster_ramp()],
    ),
}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs; rerun with UPDATE_GOLDEN=1 if the change is intended"


def load(text: str) -> mapscript.mapObj:
    return mapscript.fromstring(text)


def layers(m: mapscript.mapObj) -> list[mapscript.layerObj]:
    return [m.getLayer(i) for i in range(m.numlayers)]


# ---------------------------------------------------------------------------------------------- primitives


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        ("no.met:sst-2024-01", "no.met_sst-2024-01"),
        ("landcover", "landcover"),
        ("2024-scene", "l_2024-scene"),
        ("_x", "_x"),
        ('a"b END\n', "a_b_END_"),
        ("", "l_"),
    ],
)
def test_layer_name(identifier: str, expected: str) -> None:
    assert layer_name(identifier) == expected


def test_quote() -> None:
    assert quote("plain") == '"plain"'
    assert quote('a "b" \\ c') == '"a \\"b\\" \\\\ c"'
    assert quote("x\ny\tz\x7f\x00") == '"x y z  "'
    assert quote("it's") == '"it\'s"'


def test_hash_is_short_sha256() -> None:
    assert mapfile_hash("MAP END\n") == hashlib.sha256(b"MAP END\n").hexdigest()[:10]
    assert mapfile_hash("x") != mapfile_hash("y")


# ---------------------------------------------------------------------------------------------- golden


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    spec, datasets = CASES[case]
    check_golden(f"{case}.map", build_mapfile("maps", spec, datasets))


def test_config_golden() -> None:
    check_golden("config.conf", build_config("maps"))
    conf = build_config('we"ird\\', '/etc/x "y".map')
    assert '"we\\"ird\\\\" "/etc/x \\"y\\".map"' in conf


def test_deterministic_and_order_independent() -> None:
    spec, datasets = CASES["all"]
    text = build_mapfile("maps", spec, datasets)
    assert build_mapfile("maps", spec, list(reversed(datasets))) == text
    assert mapfile_hash(build_mapfile("maps", spec, datasets)) == mapfile_hash(text)


def test_operator_snapshots_build_the_same_mapfile_one_parsed_dataset_at_a_time() -> None:
    """The operator builds from index snapshots through LayerRefs: same text as from parsed inputs,
    and parsed datasets do not pile up (at most the one written and the one before are alive)."""
    from kms_operator import snapshots

    spec, few = CASES["all"]
    datasets = [
        dataclasses.replace(
            d, name=f"{d.name}-{i}", spec=d.spec.model_copy(update={"identifier": f"{d.spec.identifier}-{i}"})
        )
        for i in range(10)
        for d in few
    ]
    snaps = [
        snapshots.dataset_snapshot(
            {
                "metadata": {"name": d.name, "uid": d.name, "generation": 1},
                "spec": d.spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
                "status": d.status.model_dump(by_alias=True, exclude_none=True, mode="json"),
            }
        )
        for d in datasets
    ]
    loaded: list[weakref.ref] = []
    most = 0

    def counted(ref):
        def load():
            nonlocal most
            ds = ref.load()
            loaded.append(weakref.ref(ds))
            most = max(most, sum(r() is not None for r in loaded))
            return ds

        return dataclasses.replace(ref, load=load)

    refs = [counted(snapshots.layer_ref(s)) for s in snaps]
    assert build_mapfile("maps", spec, refs) == build_mapfile("maps", spec, datasets)
    assert len(loaded) == len(datasets) and most <= 2  # the one being written and the one before
    slims = [snapshots.slim_input(s) for s in snaps]
    assert [(x.name, x.spec.identifier, x.spec.title, x.status.wgs84_bbox) for x in slims] == [
        (d.name, d.spec.identifier, d.spec.title, d.status.wgs84_bbox) for d in datasets
    ]


# ---------------------------------------------------------------------------------------------- mapscript


@pytest.mark.parametrize("case", sorted(CASES))
def test_loads_with_mapscript(case: str) -> None:
    spec, datasets = CASES[case]
    m = load(build_mapfile("maps", spec, datasets))
    assert m.name == "maps"
    expected = sorted(datasets, key=lambda d: layer_name(d.spec.identifier))
    assert [lay.name for lay in layers(m)] == [layer_name(d.spec.identifier) for d in expected]
    for lay, ds in zip(layers(m), expected, strict=True):
        assert lay.metadata.get("wms_title") == ds.spec.title
        assert lay.metadata.get("kms_dataset") == ds.name
        assert lay.metadata.get("wms_enable_request") == "*"
        assert lay.template == "ttt"
    assert m.web.metadata.get("wms_title") == (spec.title or "maps")


def test_raster_layer_details() -> None:
    m = load(build_mapfile("maps", SERVICE, [raster_ramp()]))
    lay = m.getLayer(0)
    assert lay.type == mapscript.MS_LAYER_RASTER
    assert lay.data == f"{DATA_MOUNT}/ocean/sst.tif"
    assert lay.metadata.get("wcs_enable_request") == "*"
    assert lay.metadata.get("wfs_enable_request") == "!*"
    assert lay.metadata.get("wms_keywordlist") == "ocean,temperature"
    assert lay.getProcessing(0) == "NODATA=-9999"
    assert lay.numclasses == 5
    assert [lay.getClass(i).name for i in range(5)] == ["0 - 20", "20 - 40", "40 - 60", "60 - 80", "80 - 100"]
    assert lay.getClass(4).getExpressionString() == "([pixel] >= 80 AND [pixel] <= 100)"
    first, last = lay.getClass(0).getStyle(0).color, lay.getClass(4).getStyle(0).color
    assert (first.red, first.green, first.blue) == _rgb(RAMPS["viridis"][0])
    assert (last.red, last.green, last.blue) == _rgb(RAMPS["viridis"][-1])
    assert (m.extent.minx, m.extent.miny, m.extent.maxx, m.extent.maxy) == (-10, 50, 30, 80)


def test_rgb_and_url_source() -> None:
    m = load(build_mapfile("maps", SERVICE, [raster_rgb()]))
    lay = m.getLayer(0)
    assert lay.data == "/vsicurl/https://example.org/cog/ortho.tif"
    assert lay.numclasses == 0
    assert lay.getProcessing(0) == "BANDS=1,2,3"
    assert lay.compositer.opacity == 80
    assert "EPSG:32632" in lay.getProjection()
    assert "EPSG:32632" in m.web.metadata.get("wms_srs").split()
    assert "EPSG:32632" in lay.metadata.get("ows_srs").split()


def test_vector_layer_details() -> None:
    m = load(build_mapfile("maps", SERVICE, [vector_classes()]))
    lay = m.getLayer(0)
    assert lay.type == mapscript.MS_LAYER_POLYGON
    assert lay.connectiontype == mapscript.MS_OGR
    assert lay.connection == f"{DATA_MOUNT}/land/cover.gpkg"
    # the OGR FID as an attribute gives WFS features their id, and stays out of the answers
    assert lay.data == 'SELECT FID AS kms_fid, * FROM "landcover"'
    assert lay.metadata.get("gml_featureid") == "kms_fid"
    assert lay.metadata.get("gml_exclude_items") == lay.metadata.get("wms_exclude_items") == "kms_fid"
    assert lay.classitem == "kind"
    assert [lay.getClass(i).name for i in range(lay.numclasses)] == ["Forest", "Water"]
    assert lay.minscaledenom == 1000 and lay.maxscaledenom == 5000000
    assert lay.metadata.get("wfs_enable_request") == "*"
    assert lay.metadata.get("wcs_enable_request") == "!*"
    assert lay.metadata.get("gml_include_items") == "all"


def test_feature_ids_come_from_the_named_attribute_or_the_inspected_layer() -> None:
    ds = vector_classes()
    source = ds.spec.source.model_copy(update={"feature_id": "code"})
    own = DatasetInput("own", ds.spec.model_copy(update={"source": source}), ds.status)
    lay = load(build_mapfile("maps", SERVICE, [own])).getLayer(0)
    assert lay.data == "landcover" and lay.metadata.get("gml_featureid") == "code"
    assert lay.metadata.get("gml_exclude_items") is None
    # no layer in the spec: the one the inspection found; none known yet: no id (as before)
    source = ds.spec.source.model_copy(update={"layer": None})
    spec = ds.spec.model_copy(update={"source": source})
    found = DatasetInput("f", spec, ds.status.model_copy(update={"source_layer": "zones"}))
    lay = load(build_mapfile("maps", SERVICE, [found])).getLayer(0)
    assert (
        lay.data == 'SELECT FID AS kms_fid, * FROM "zones"' and lay.metadata.get("gml_featureid") == "kms_fid"
    )
    lay = load(build_mapfile("maps", SERVICE, [DatasetInput("n", spec, ds.status)])).getLayer(0)
    assert not lay.data and lay.metadata.get("gml_featureid") is None


def test_point_and_default_style() -> None:
    ds = vector_classes()
    spec = ds.spec.model_copy(update={"style": None})
    status = ds.status.model_copy(update={"geometry_type": "POINT"})
    m = load(build_mapfile("maps", SERVICE, [DatasetInput("pts", spec, status)]))
    lay = m.getLayer(0)
    assert lay.type == mapscript.MS_LAYER_POINT
    assert lay.numclasses == 1 and lay.getClass(0).name == "Land cover"
    style = lay.getClass(0).getStyle(0)
    assert style.symbolname == "circle" and style.size == 8
    assert (style.color.red, style.color.green, style.color.blue) == (51, 136, 255)


def test_the_map_extent_is_the_union_of_the_layers_within_the_globe() -> None:
    """The root layer's geographic bounding box in capabilities is the map EXTENT (MapServer CGI
    prints it as written): the union of the datasets' WGS84 boxes, never beyond ±180/±90."""
    a, b = raster_ramp(), vector_classes()
    a = DatasetInput(a.name, a.spec, a.status.model_copy(update={"wgs84_bbox": [-180.0004, -91.0, 10, 20]}))
    b = DatasetInput(b.name, b.spec, b.status.model_copy(update={"wgs84_bbox": [5, -10, 30, 80]}))
    assert "EXTENT -180 -90 30 80\n" in build_mapfile("maps", SERVICE, [a, b])


def test_extent_and_projection_defaults() -> None:
    assert "EXTENT -180 -90 180 90" in build_mapfile("maps", SERVICE, [])
    assert "EXTENT 1 2 3 4\n" in build_mapfile("maps", MapServiceSpec(extent=[1, 2, 3, 4]), [raster_ramp()])
    ds = raster_rgb()
    status = MapDatasetStatus.model_validate({"extent": {"bbox": [0, 0, 1, 1], "crs": "LOCAL_CS[...]"}})
    text = build_mapfile("maps", SERVICE, [DatasetInput("x", ds.spec, status)])
    assert "PROJECTION AUTO END" in text
    assert load(text).getLayer(0).getProjection() == "+AUTO"


def test_non_finite_numbers_are_left_out() -> None:
    ds = raster_ramp()
    style = ds.spec.style.model_copy(update={"range": None, "max_scale_denom": float("inf")})
    spec = ds.spec.model_copy(update={"style": style})
    bad = ValueRange.model_construct(min=float("-inf"), max=1.0)
    status = ds.status.model_copy(update={"value_range": bad, "wgs84_bbox": None})
    lay = load(build_mapfile("maps", SERVICE, [DatasetInput("x", spec, status)])).getLayer(0)
    assert lay.maxscaledenom == -1  # unset
    assert lay.getClass(4).getExpressionString() == "([pixel] >= 204 AND [pixel] <= 255)"  # default 0..255


def test_ramp_by_default_for_single_band() -> None:
    spec = MapDatasetSpec(type="raster", source=Source(path="dem.tif"), identifier="dem", title="DEM")
    status = MapDatasetStatus(band_count=1)
    lay = load(build_mapfile("maps", SERVICE, [DatasetInput("dem", spec, status)])).getLayer(0)
    assert lay.numclasses == 8
    assert lay.getClass(7).getExpressionString() == "([pixel] >= 223.125 AND [pixel] <= 255)"


def test_capabilities_respect_protocols(tmp_path: Path) -> None:
    (tmp_path / "ocean").mkdir()
    _geotiff(tmp_path / "ocean" / "sst.tif")  # WCS capabilities read the coverage's file
    spec, datasets = CASES["all"]
    m = load(build_mapfile("maps", spec, datasets, data_root=str(tmp_path)))
    wms = dispatch(m, "SERVICE=WMS&VERSION=1.3.0&REQUEST=GetCapabilities")
    for name in ("landcover", "no.met_sst-2024-01", "ortho-2023"):
        assert f"<Name>{name}</Name>" in wms
    assert "https://maps.example.org/ocean" in wms
    wfs = dispatch(m, "SERVICE=WFS&VERSION=2.0.0&REQUEST=GetCapabilities")
    assert "landcover" in wfs and "sst" not in wfs and "ortho" not in wfs
    wcs = dispatch(m, "SERVICE=WCS&VERSION=2.0.1&REQUEST=GetCapabilities")
    assert "no.met_sst-2024-01" in wcs and "landcover" not in wcs and "ortho" not in wcs


def dispatch(m: mapscript.mapObj, query: str) -> str:
    req = mapscript.OWSRequest()
    req.loadParamsFromURL(query)
    mapscript.msIO_installStdoutToBuffer()
    try:
        m.OWSDispatch(req)
        return mapscript.msIO_getStdoutBufferBytes().decode()
    finally:
        mapscript.msIO_resetHandlers()


# ---------------------------------------------------------------------------------------------- injection

EVIL = 'a "b" END\nINCLUDE "/etc/passwd"'
WEIRD = EVIL + " back\\slash \\\" it's ÆØÅ ✓ 🗺️\t\x7fend"


def clean(text: str) -> str:
    return "".join(" " if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)


def test_injection_is_escaped() -> None:
    raster = MapDatasetSpec.model_construct(
        type="raster",
        source=Source.model_construct(path='evil" END LAYER.tif'),
        identifier='x" END LAYER NAME "y',
        title=WEIRD,
        abstract=WEIRD,
        keywords=[WEIRD, "ok"],
        projection='EPSG:4326" END',
        style=Style.model_construct(nodata=float("nan")),
        protocols=["WMS"],
    )
    vector = MapDatasetSpec.model_construct(
        type="vector",
        source=Source.model_construct(path="v.geojson", layer=EVIL),
        identifier="vec",
        title="V",
        style=Style.model_construct(
            class_item="kind",
            vector_classes=[VectorClass.model_construct(name=EVIL, value='say "hi" \\ END', color="#ff0000")],
            outline_color='#000000" END',
        ),
        protocols=["WMS", "WFS"],
    )
    service = MapServiceSpec().model_copy(update={"title": WEIRD, "abstract": EVIL})  # skips validation
    datasets = [
        DatasetInput('na"me', raster, MapDatasetStatus(extent={"bbox": [0, 0, 1, 1], "crs": 'EPSG:1" END'})),
        DatasetInput("vec", vector, MapDatasetStatus(geometry_type="POLYGON")),
    ]
    text = build_mapfile('svc" END', service, datasets)
    assert "\nINCLUDE" not in text and "\t" not in text
    m = load(text)
    assert m.numlayers == 2
    assert m.name == 'svc" END'
    assert m.web.metadata.get("wms_title") == clean(WEIRD)
    assert m.web.metadata.get("wms_abstract") == clean(EVIL)
    vec, ras = m.getLayer(0), m.getLayer(1)
    assert ras.name == layer_name('x" END LAYER NAME "y')
    assert ras.metadata.get("wms_title") == clean(WEIRD)
    assert ras.metadata.get("wms_abstract") == clean(WEIRD)
    assert ras.metadata.get("wms_keywordlist") == clean(WEIRD) + ",ok"
    assert ras.metadata.get("kms_dataset") == 'na"me'
    assert ras.data == f'{DATA_MOUNT}/evil" END LAYER.tif'
    assert ras.getProcessing(0) == "NODATA=nan"
    assert ras.getProjection() == "+AUTO"  # an invalid CRS is ignored, not written
    assert vec.data == 'SELECT FID AS kms_fid, * FROM "' + clean(EVIL).replace('"', '""') + '"'
    assert vec.getClass(0).name == clean(EVIL)
    # mapscript shows the parsed string between quotes without escaping it
    assert vec.getClass(0).getExpressionString() == '"say "hi" \\ END"'


# ---------------------------------------------------------------------------------------------- rendering


def _geotiff(path: Path) -> None:
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 10, 10, 1, gdal.GDT_Float32)
    ds.SetGeoTransform([0, 1, 0, 10, 0, -1])
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    ds.SetProjection(srs.ExportToWkt())
    row = [10.0] * 5 + [90.0] * 5  # left half 10, right half 90
    ds.GetRasterBand(1).WriteRaster(0, 0, 10, 10, array.array("f", row * 10).tobytes())
    ds.FlushCache()


def _pixels(png: Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(left, right) RGBA samples from the middle row of a rendered image."""
    ds = gdal.Open(str(png))
    w, h = ds.RasterXSize, ds.RasterYSize

    def at(x: int) -> tuple[int, ...]:
        return tuple(ds.ReadRaster(x, h // 2, 1, 1))  # one Byte per band

    return at(w // 4), at(3 * w // 4)


def test_raster_classification_renders(tmp_path: Path) -> None:
    _geotiff(tmp_path / "halves.tif")
    spec = MapDatasetSpec.model_validate(
        {
            "type": "raster",
            "source": {"path": "halves.tif"},
            "identifier": "halves",
            "title": "Halves",
            "style": {"colorRamp": "greys", "classes": 2, "range": {"min": 0, "max": 100}},
        }
    )
    status = MapDatasetStatus(
        extent={"bbox": [0, 0, 10, 10], "crs": "EPSG:4326"}, wgs84_bbox=[0, 0, 10, 10], band_count=1
    )
    m = load(build_mapfile("maps", SERVICE, [DatasetInput("halves", spec, status)], data_root=str(tmp_path)))
    assert m.getLayer(0).data == str(tmp_path / "halves.tif")
    m.draw().save(str(tmp_path / "out.png"))
    left, right = _pixels(tmp_path / "out.png")
    assert left != right
    assert left == (*_rgb(RAMPS["greys"][0]), 255)
    assert right == (*_rgb(RAMPS["greys"][-1]), 255)


def test_vector_classes_render_with_escaped_values(tmp_path: Path) -> None:
    odd = 'say "hi" \\ it\'s'
    features = [
        {
            "type": "Feature",
            "properties": {"kind": odd},
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [5, 0], [5, 10], [0, 10], [0, 0]]]},
        },
        {
            "type": "Feature",
            "properties": {"kind": "plain"},
            "geometry": {"type": "Polygon", "coordinates": [[[5, 0], [10, 0], [10, 10], [5, 10], [5, 0]]]},
        },
    ]
    (tmp_path / "v.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    spec = MapDatasetSpec.model_validate(
        {
            "type": "vector",
            "source": {"path": "v.geojson"},
            "identifier": "v",
            "title": "V",
            "style": {
                "classItem": "kind",
                "vectorClasses": [
                    {"name": "odd", "value": odd, "color": "#ff0000"},
                    {"name": "plain", "value": "plain", "color": "#0000ff"},
                ],
            },
        }
    )
    status = MapDatasetStatus(
        extent={"bbox": [0, 0, 10, 10], "crs": "EPSG:4326"},
        wgs84_bbox=[0, 0, 10, 10],
        geometry_type="POLYGON",
    )
    m = load(build_mapfile("maps", SERVICE, [DatasetInput("v", spec, status)], data_root=str(tmp_path)))
    m.draw().save(str(tmp_path / "out.png"))
    left, right = _pixels(tmp_path / "out.png")
    assert left == (255, 0, 0, 255)
    assert right == (0, 0, 255, 255)
