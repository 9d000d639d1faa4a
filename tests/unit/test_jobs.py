"""The job runner (kms_jobs) run for real on small files generated with GDAL; no cluster."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from osgeo import gdal, osr

from kms_jobs import cli
from kms_jobs.paths import atomic_output
from kms_jobs.result import MAX_RESULT_BYTES, fit

gdal.UseExceptions()

NODATA = -9999.0


# ---------------------------------------------------------------------------------------------
# helpers


@pytest.fixture
def root(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    return data


@pytest.fixture
def term(tmp_path: Path) -> Path:
    return tmp_path / "term.log"


class Run:
    def __init__(self, code: int, result: dict[str, Any], stdout: str, stderr: str):
        self.code, self.result, self.stdout, self.stderr = code, result, stdout, stderr


@pytest.fixture
def job(root: Path, term: Path, capsys: pytest.CaptureFixture[str]):
    """Run `kube-mapserver-job <type> --params-json ...` in-process; the result is the termination log."""

    def run(job_type: str, params: dict[str, Any] | str) -> Run:
        if term.exists():
            term.unlink()
        raw = params if isinstance(params, str) else json.dumps(params)
        argv = [job_type, "--params-json", raw, "--data-root", str(root), "--termination-log", str(term)]
        code = cli.main(argv)
        out, err = capsys.readouterr()
        text = term.read_text()
        assert len(text.encode()) <= MAX_RESULT_BYTES
        return Run(code, json.loads(text), out, err)

    return run


def srs_wkt(epsg: int) -> str:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    return srs.ExportToWkt()


def write_tif(
    path: Path,
    array: np.ndarray,
    geotransform: tuple[float, ...],
    epsg: int = 4326,
    nodata: float | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    bands = array[None] if array.ndim == 2 else array
    dtype = gdal.GDT_Byte if array.dtype == np.uint8 else gdal.GDT_Float32
    ds = gdal.GetDriverByName("GTiff").Create(
        str(path), bands.shape[2], bands.shape[1], bands.shape[0], dtype
    )
    ds.SetGeoTransform(geotransform)
    ds.SetProjection(srs_wkt(epsg))
    for i, band in enumerate(bands, 1):
        ds.GetRasterBand(i).WriteArray(band)
        if nodata is not None:
            ds.GetRasterBand(i).SetNoDataValue(nodata)
    ds = None
    return path


NC_TEMP = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)


def write_netcdf(path: Path) -> Path:
    """A CF NetCDF with variables temp and precip over (time=3, lat=4, lon=5), 1-degree cells from
    (20E, 14N), EPSG:4326, _FillValue -9999."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = gdal.GetDriverByName("netCDF").CreateMultiDimensional(str(path))
    rg = ds.GetRootGroup()
    f64 = gdal.ExtendedDataType.Create(gdal.GDT_Float64)
    f32 = gdal.ExtendedDataType.Create(gdal.GDT_Float32)
    dims = []
    for name, kind, direction, values in (
        ("time", "TEMPORAL", None, [0.0, 1.0, 2.0]),
        ("lat", "HORIZONTAL_Y", "NORTH", [13.5, 12.5, 11.5, 10.5]),
        ("lon", "HORIZONTAL_X", "EAST", [20.5, 21.5, 22.5, 23.5, 24.5]),
    ):
        dim = rg.CreateDimension(name, kind, direction, len(values))
        rg.CreateMDArray(name, [dim], f64).Write(np.array(values))
        dims.append(dim)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    for name, data in (("temp", NC_TEMP), ("precip", NC_TEMP * 10)):
        var = rg.CreateMDArray(name, dims, f32)
        var.SetSpatialRef(srs)
        var.SetNoDataValueDouble(NODATA)
        var.Write(data)
    var = rg = ds = None
    return path


def write_geojson(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    features = [
        {"type": "Feature", "properties": {"n": 1}, "geometry": {"type": "Polygon", "coordinates": ring}}
        for ring in (
            [[[5, 58], [7, 58], [7, 60], [5, 60], [5, 58]]],
            [[[8, 61], [11, 61], [11, 62.5], [8, 62.5], [8, 61]]],
        )
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def epsg_of(ds) -> str:
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    return f"{srs.GetAuthorityName(None)}:{srs.GetAuthorityCode(None)}"


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


# ---------------------------------------------------------------------------------------------
# nc-to-geotiff


def test_nc_to_geotiff_extracts_the_time_step_with_georeferencing(job, root: Path):
    write_netcdf(root / "nc" / "sst.nc")
    run = job(
        "nc-to-geotiff", {"input": "nc/sst.nc", "variable": "temp", "timeIndex": 1, "output": "out/t1.tif"}
    )
    assert run.code == 0, run.stderr
    out = root / "out" / "t1.tif"
    assert run.result == {
        "type": "nc-to-geotiff",
        "output": "out/t1.tif",
        "checksum": sha256(out),
        "size": out.stat().st_size,
    }
    assert json.loads(run.stdout) == run.result
    ds = gdal.Open(str(out))
    assert ds.GetDriver().ShortName == "GTiff" and ds.RasterCount == 1
    np.testing.assert_array_equal(ds.ReadAsArray(), NC_TEMP[1])
    assert ds.GetGeoTransform() == pytest.approx((20.0, 1.0, 0.0, 14.0, 0.0, -1.0))
    assert epsg_of(ds) == "EPSG:4326"
    assert ds.GetRasterBand(1).GetNoDataValue() == NODATA
    assert leftovers(out.parent) == []


def test_nc_to_geotiff_unknown_variable_lists_the_variables(job, root: Path):
    write_netcdf(root / "sst.nc")
    run = job("nc-to-geotiff", {"input": "sst.nc", "variable": "salt", "output": "out.tif"})
    assert run.code == 2
    assert "error: variable 'salt' not found in 'sst.nc'; variables: precip, temp" in run.stderr
    assert run.result["type"] == "nc-to-geotiff"
    assert "variables: precip, temp" in run.result["error"]
    assert not (root / "out.tif").exists()


def test_nc_to_geotiff_time_index_out_of_range(job, root: Path):
    write_netcdf(root / "sst.nc")
    run = job("nc-to-geotiff", {"input": "sst.nc", "variable": "precip", "timeIndex": 3, "output": "o.tif"})
    assert run.code == 2
    assert "timeIndex 3 is out of range" in run.result["error"] and "3 time steps" in run.result["error"]
    assert not (root / "o.tif").exists()


def test_nc_to_geotiff_rejects_a_non_netcdf_input(job, root: Path):
    write_tif(root / "x.tif", np.zeros((2, 2), np.float32), (0, 1, 0, 0, 0, -1))
    run = job("nc-to-geotiff", {"input": "x.tif", "variable": "temp", "output": "o.tif"})
    assert run.code == 2 and "is not a readable NetCDF file" in run.result["error"]


# ---------------------------------------------------------------------------------------------
# cog-convert


def test_cog_convert_writes_a_valid_cog_with_the_requested_overviews(job, root: Path):
    values = np.random.default_rng(7).random((1024, 1024)).astype(np.float32)
    write_tif(root / "in" / "big.tif", values, (10.0, 0.001, 0, 60.0, 0, -0.001), nodata=NODATA)
    params = {
        "input": "in/big.tif",
        "output": "cog/big.tif",
        "compression": "DEFLATE",
        "overviewLevels": [2, 4],
    }
    run = job("cog-convert", params)
    assert run.code == 0, run.stderr
    out = root / "cog" / "big.tif"
    assert run.result["output"] == "cog/big.tif" and run.result["checksum"] == sha256(out)
    info = gdal.Info(str(out), format="json")
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    assert info["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"] == "DEFLATE"
    assert info["bands"][0]["block"] == [512, 512]
    ds = gdal.Open(str(out))
    band = ds.GetRasterBand(1)
    assert [band.GetOverview(i).XSize for i in range(band.GetOverviewCount())] == [512, 256]
    np.testing.assert_array_equal(ds.ReadAsArray(), values)
    assert band.GetNoDataValue() == NODATA
    assert ds.GetGeoTransform() == pytest.approx((10.0, 0.001, 0, 60.0, 0, -0.001))
    assert leftovers(out.parent) == [] and sorted(p.name for p in out.parent.iterdir()) == ["big.tif"]
    # progress is logged as JSON lines, at most every 10% per step
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    steps = [line for line in lines if "progress" in line]
    assert {line["msg"] for line in steps} == {"building overviews", "writing COG"}
    for msg in ("building overviews", "writing COG"):
        fractions = [line["progress"] for line in steps if line["msg"] == msg]
        assert fractions[-1] == 1.0 and len(fractions) <= 11


def test_cog_convert_defaults_and_overwrite(job, root: Path):
    values = (np.arange(600 * 700) % 251).astype(np.uint8).reshape(600, 700)
    write_tif(root / "b.tif", values, (0, 10, 0, 6000, 0, -10), epsg=32633)
    (root / "b.cog.tif").write_bytes(b"old")
    run = job("cog-convert", {"input": "b.tif", "output": "b.cog.tif"})
    assert run.code == 0, run.stderr
    ds = gdal.Open(str(root / "b.cog.tif"))
    assert gdal.Info(ds, format="json")["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    assert ds.GetRasterBand(1).GetOverviewCount() >= 1
    np.testing.assert_array_equal(ds.ReadAsArray(), values)


def test_cog_convert_jpeg_needs_byte_bands(job, root: Path):
    write_tif(root / "f.tif", np.zeros((8, 8), np.float32), (0, 1, 0, 0, 0, -1))
    run = job("cog-convert", {"input": "f.tif", "output": "f.cog.tif", "compression": "JPEG"})
    assert run.code == 2 and "JPEG compression needs" in run.result["error"]
    assert not (root / "f.cog.tif").exists() and leftovers(root) == []


# ---------------------------------------------------------------------------------------------
# merge-terrain


def test_merge_terrain_covers_the_union_and_respects_nodata(job, root: Path):
    west = np.full((10, 10), 100.0, np.float32)
    west[0, 0] = NODATA  # stays nodata: nothing else covers it
    east = np.full((10, 10), 200.0, np.float32)
    east[:, :2] = NODATA  # overlaps the west tile's last two columns: must not blank them
    write_tif(root / "tiles" / "w.tif", west, (5.0, 0.1, 0, 61.0, 0, -0.1), nodata=NODATA)
    write_tif(root / "tiles" / "e.tif", east, (5.8, 0.1, 0, 61.0, 0, -0.1), nodata=NODATA)
    params = {"inputs": ["tiles/w.tif", "tiles/e.tif"], "output": "dem/merged.tif", "nodata": NODATA}
    run = job("merge-terrain", params)
    assert run.code == 0, run.stderr
    out = root / "dem" / "merged.tif"
    assert run.result["checksum"] == sha256(out) and run.result["rasterSize"] == [18, 10]
    ds = gdal.Open(str(out))
    assert ds.RasterXSize == 18 and ds.RasterYSize == 10
    assert ds.GetGeoTransform() == pytest.approx((5.0, 0.1, 0, 61.0, 0, -0.1))
    assert epsg_of(ds) == "EPSG:4326"
    band = ds.GetRasterBand(1)
    assert band.GetNoDataValue() == NODATA
    got = band.ReadAsArray()
    assert got[0, 0] == NODATA
    assert (got[:, 1:10] == 100.0).all() and (got[1:, 0] == 100.0).all()
    assert (got[:, 10:] == 200.0).all()
    assert band.GetBlockSize() == [256, 256]
    assert gdal.Info(ds, format="json")["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"] == "DEFLATE"


def test_merge_terrain_refuses_mixed_crs(job, root: Path):
    write_tif(root / "a.tif", np.ones((4, 4), np.float32), (0, 1, 0, 4, 0, -1), epsg=4326)
    write_tif(root / "b.tif", np.ones((4, 4), np.float32), (4, 1, 0, 4, 0, -1), epsg=32633)
    run = job("merge-terrain", {"inputs": ["a.tif", "b.tif"], "output": "m.tif"})
    assert run.code == 2 and "different CRS" in run.result["error"]
    assert not (root / "m.tif").exists()


# ---------------------------------------------------------------------------------------------
# rehash


def test_rehash_datasets_is_stable_and_matches_hashlib(job, root: Path):
    a = root / "a" / "one.bin"
    a.parent.mkdir()
    a.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # several 1 MiB chunks
    b = root / "two.txt"
    b.write_text("hello\n")
    params = {"paths": {"one": "a/one.bin", "two": "two.txt"}}
    first, second = job("rehash", params), job("rehash", params)
    assert first.code == second.code == 0
    assert first.result == second.result
    assert first.result["checksums"] == {"one": sha256(a), "two": sha256(b)}
    assert first.result["count"] == 2 and "truncated" not in first.result


def test_rehash_path_prefix_lists_every_file_recursively(job, root: Path):
    for rel in ("set/x.tif", "set/sub/y.tif", "set/sub/deeper/z.json", "other/no.tif"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    run = job("rehash", {"pathPrefix": "set"})
    assert run.code == 0, run.stderr
    assert list(run.result["checksums"]) == ["set/sub/deeper/z.json", "set/sub/y.tif", "set/x.tif"]
    assert run.result["checksums"]["set/x.tif"] == sha256(root / "set/x.tif")


def test_rehash_of_many_files_is_truncated_to_fit_the_termination_log(job, root: Path, term: Path):
    (root / "many").mkdir()
    for i in range(300):
        (root / "many" / f"file-{i:04d}.bin").write_bytes(str(i).encode())
    run = job("rehash", {"pathPrefix": "many"})
    assert run.code == 0
    assert len(term.read_bytes()) <= 4096
    assert run.result["truncated"] is True and run.result["count"] == 300
    kept = run.result["checksums"]
    assert 10 < len(kept) < 300
    assert kept["many/file-0000.bin"] == sha256(root / "many" / "file-0000.bin")
    assert json.loads(run.stdout) == run.result


def test_rehash_needs_exactly_one_of_paths_or_prefix(job):
    run = job("rehash", {})
    assert run.code == 2 and "exactly one of paths or pathPrefix" in run.result["error"]


# ---------------------------------------------------------------------------------------------
# inspect / repair-metadata


@pytest.mark.parametrize("job_type", ["inspect", "repair-metadata"])
def test_metadata_of_a_raster_and_a_vector(job, root: Path, job_type: str):
    tif = write_tif(root / "r" / "dem.tif", np.ones((20, 40), np.float32), (5.0, 0.05, 0, 62.0, 0, -0.05))
    geojson = write_geojson(root / "v" / "lakes.geojson")
    run = job(job_type, {"paths": {"dem": "r/dem.tif", "lakes": "v/lakes.geojson"}})
    assert run.code == 0, run.stderr
    assert run.result["type"] == job_type and run.result["count"] == 2
    dem, lakes = run.result["metadata"]["dem"], run.result["metadata"]["lakes"]
    assert dem["extent"]["crs"] == "EPSG:4326"
    assert dem["extent"]["bbox"] == pytest.approx([5.0, 61.0, 7.0, 62.0])
    assert dem["wgs84Bbox"] == pytest.approx([5.0, 61.0, 7.0, 62.0])
    assert dem["size"] == tif.stat().st_size and dem["checksum"] == sha256(tif)
    assert dem["bandCount"] == 1 and "geometryType" not in dem
    assert lakes["extent"] == {"bbox": [5.0, 58.0, 11.0, 62.5], "crs": "EPSG:4326"}
    assert lakes["wgs84Bbox"] == pytest.approx([5.0, 58.0, 11.0, 62.5])
    assert lakes["size"] == geojson.stat().st_size and lakes["checksum"] == sha256(geojson)
    assert lakes["geometryType"] == "POLYGON" and "bandCount" not in lakes


def test_inspect_projected_raster_gets_a_wgs84_bbox(job, root: Path):
    write_tif(root / "utm.tif", np.ones((10, 10), np.float32), (500000, 100, 0, 6700000, 0, -100), 32633)
    run = job("inspect", {"paths": {"utm": "utm.tif"}})
    meta = run.result["metadata"]["utm"]
    assert meta["extent"] == {"bbox": [500000.0, 6699000.0, 501000.0, 6700000.0], "crs": "EPSG:32633"}
    west, south, east, north = meta["wgs84Bbox"]
    assert 14.99 < west <= 15.0 < east < 15.03 and 60.4 < south < north < 60.45


def test_inspect_fails_on_an_unreadable_file_naming_the_dataset(job, root: Path):
    write_geojson(root / "ok.geojson")
    (root / "notes.txt").write_text("not geodata\n")
    run = job("inspect", {"paths": {"ok": "ok.geojson", "notes": "notes.txt"}})
    assert run.code == 2
    assert run.result["error"].startswith("dataset notes ('notes.txt') is neither a raster nor vector")


# ---------------------------------------------------------------------------------------------
# hyspex-variants


def test_hyspex_variants_report(job, root: Path):
    for rel in ("hs/c1/scene1_rgb.tif", "hs/c1/scene1_z.tif", "hs/c1/Scene2-RGB.tif", "hs/c1/scene2_Z.tif"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "hs/c2").mkdir(parents=True)
    (root / "hs/c2/scene3-z.tif").write_bytes(b"x")
    (root / "hs/c2/scene3.tif").write_bytes(b"x")  # no variant token: not a candidate
    datasets = [
        {
            "name": "scene1-rgb",
            "identifier": "hyspex:scene1_rgb",
            "variant": "RGB",
            "path": "hs/c1/scene1_rgb.tif",
        },
        {"name": "scene1-z", "identifier": "hyspex:scene1_Z", "variant": None, "path": "hs/c1/scene1_z.tif"},
        {
            "name": "scene2-rgb",
            "identifier": "hyspex:scene2-rgb",
            "variant": "RGB",
            "path": "hs/c1/Scene2-RGB.tif",
        },
        {"name": "scene3-z", "identifier": "hyspex:scene3-z", "variant": "Z", "path": "hs/c2/scene3-z.tif"},
    ]
    run = job("hyspex-variants", {"campaign": "fjord-2024", "datasets": datasets})
    assert run.code == 0, run.stderr
    assert run.result == {
        "type": "hyspex-variants",
        "campaign": "fjord-2024",
        "scenes": 3,
        "complete": 1,
        "missing": [
            {
                "scene": "hyspex:scene2",
                "missing": "Z",
                "dataset": "scene2-rgb",
                "candidate": "hs/c1/scene2_Z.tif",
            },
            {"scene": "hyspex:scene3", "missing": "RGB", "dataset": "scene3-z", "candidate": None},
        ],
    }


# ---------------------------------------------------------------------------------------------
# safety and failure handling


@pytest.mark.parametrize("where", ["dotdot", "absolute", "symlink", "output"])
def test_paths_outside_the_data_root_are_refused(job, root: Path, tmp_path: Path, where: str):
    outside = write_tif(tmp_path / "outside.tif", np.ones((4, 4), np.float32), (0, 1, 0, 4, 0, -1))
    write_tif(root / "in.tif", np.ones((4, 4), np.float32), (0, 1, 0, 4, 0, -1))
    (root / "link.tif").symlink_to(outside)
    params = {
        "dotdot": {"input": "../outside.tif", "output": "o.tif"},
        "absolute": {"input": str(outside), "output": "o.tif"},
        "symlink": {"input": "link.tif", "output": "o.tif"},
        "output": {"input": "in.tif", "output": "sub/../../escaped.tif"},
    }[where]
    run = job("cog-convert", params)
    assert run.code == 2
    assert "outside the data root" in run.result["error"]
    assert "error: " in run.stderr and "outside the data root" in run.stderr
    assert run.result["type"] == "cog-convert"
    assert not (root / "o.tif").exists() and not (tmp_path / "escaped.tif").exists()


def test_symlinks_outside_the_root_are_refused_by_rehash_and_inspect(job, root: Path, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s")
    (root / "dir").mkdir()
    (root / "dir" / "ok.txt").write_text("ok")
    (root / "dir" / "leak.txt").symlink_to(secret)
    assert "outside the data root" in job("rehash", {"pathPrefix": "dir"}).result["error"]
    assert "outside the data root" in job("inspect", {"paths": {"x": "dir/leak.txt"}}).result["error"]
    assert "outside the data root" in job("rehash", {"pathPrefix": "/etc"}).result["error"]


def test_missing_input_fails_without_creating_the_output(job, root: Path, term: Path):
    for job_type, params in (
        ("cog-convert", {"input": "nope.tif", "output": "new/o.tif"}),
        ("merge-terrain", {"inputs": ["nope.tif"], "output": "new/o.tif"}),
        ("nc-to-geotiff", {"input": "nope.nc", "variable": "t", "output": "new/o.tif"}),
    ):
        run = job(job_type, params)
        assert run.code == 2, job_type
        assert run.result == {"type": job_type, "error": "input file 'nope.tif' does not exist"} or (
            run.result["error"] == "input file 'nope.nc' does not exist"
        )
        assert run.stderr.rstrip().endswith(f"error: {run.result['error']}")
        assert run.stdout == ""
        assert json.loads(term.read_text()) == run.result
        assert not (root / "new").exists()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("{not json", "--params-json is not valid JSON"),
        ("[1]", "--params-json must be a JSON object"),
        ({"input": "a.tif"}, "invalid params: output: Field required"),
        ({"input": "a.tif", "output": "b.tif", "extra": 1}, "extra: Extra inputs are not permitted"),
        ({"input": "a.tif", "output": "b.tif", "compression": "GZIP"}, "compression: Input should be"),
    ],
)
def test_invalid_params(job, params, expected: str):
    run = job("cog-convert", params)
    assert run.code == 2
    assert expected in run.result["error"]


def test_unexpected_failure_exits_1_with_the_message(job, root: Path, monkeypatch):
    def boom(params, data_root, log):
        raise ValueError("disk on fire")

    monkeypatch.setitem(cli.JOBS, "rehash", (cli.JOBS["rehash"][0], boom))
    run = job("rehash", {"pathPrefix": "x"})
    assert run.code == 1
    assert run.result == {"type": "rehash", "error": "ValueError: disk on fire"}
    assert "error: ValueError: disk on fire" in run.stderr


def test_missing_data_root_is_bad_input(tmp_path: Path, term: Path):
    argv = ["rehash", "--params-json", '{"pathPrefix": "x"}', "--data-root", str(tmp_path / "nope")]
    assert cli.main([*argv, "--termination-log", str(term)]) == 2
    assert "data root" in json.loads(term.read_text())["error"]


def test_environment_overrides_the_defaults(root: Path, term: Path, monkeypatch, capsys):
    (root / "f.txt").write_text("f")
    monkeypatch.setenv("KMS_DATA_ROOT", str(root))
    monkeypatch.setenv("KMS_TERMINATION_LOG", str(term))
    assert cli.main(["rehash", "--params-json", '{"paths": {"f": "f.txt"}}']) == 0
    assert json.loads(term.read_text())["checksums"] == {"f": sha256(root / "f.txt")}
    assert cli.main(["--help"]) == 0
    assert "kube-mapserver-job" in capsys.readouterr().out


def test_unwritable_termination_log_still_reports_on_stdout(root: Path, tmp_path: Path, capsys):
    (root / "f.txt").write_text("f")
    argv = ["rehash", "--params-json", '{"paths": {"f": "f.txt"}}', "--data-root", str(root)]
    assert cli.main([*argv, "--termination-log", str(tmp_path / "no" / "dir" / "log")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["checksums"]["f"] == sha256(root / "f.txt")
    assert "cannot write the termination log" in err


def test_atomic_output_leaves_nothing_behind_on_failure(tmp_path: Path):
    final = tmp_path / "deep" / "out.tif"
    with pytest.raises(RuntimeError), atomic_output(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert not final.exists() and list(final.parent.iterdir()) == []
    with atomic_output(final) as tmp:
        tmp.write_bytes(b"whole")
    assert final.read_bytes() == b"whole" and [p.name for p in final.parent.iterdir()] == ["out.tif"]


def test_fit_keeps_small_results_and_cuts_the_largest_list():
    small = {"type": "rehash", "checksums": {"a": "sha256:0"}}
    assert fit(small) is small
    big = {"type": "inspect", "metadata": {f"ds-{i}": {"size": i, "x": "y" * 50} for i in range(500)}}
    cut = fit(big)
    size = len(json.dumps(cut, separators=(",", ":")).encode())
    assert cut["truncated"] is True and size <= 4096 and size > 4096 - 200
    assert list(cut["metadata"]) == [f"ds-{i}" for i in range(len(cut["metadata"]))]
    assert len(fit({"type": "x", "error": "e" * 10000})["error"]) <= 2000
