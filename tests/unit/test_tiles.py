"""The tile cache for real: the operator's kind of MapCache config served by Debian's mapcache (CGI,
the program Apache's mod_mapcache embeds in the tile-cache pods) in front of a real mapserv CGI WMS,
and the cache-seed / cache-purge jobs running the real mapcache_seed. No cluster, no mocks."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from osgeo import gdal, osr

from kms_crds.tilegrids import GRIDS, tile_count
from kms_jobs import cli
from kms_jobs.result import MAX_RESULT_BYTES
from kms_jobs.tilecache import rewrite_cache_root
from tests.helpers import require_tool

gdal.UseExceptions()

MAPSERV = "/usr/bin/mapserv"
MAPCACHE = "/usr/lib/cgi-bin/mapcache"
MAPCACHE_SEED = "/usr/bin/mapcache_seed"


@pytest.fixture(autouse=True, scope="module")
def _tools() -> None:
    """MapServer and MapCache are what this file tests: without them it fails, naming the fix."""
    require_tool(Path(MAPSERV), "mapserv (Debian's mapserver-bin)", "setup")
    require_tool(Path(MAPCACHE), "the mapcache FastCGI binary (Debian's mapcache-cgi)", "setup")
    require_tool(Path(MAPCACHE_SEED), "mapcache_seed (Debian's mapcache-tools)", "setup")


# ---------------------------------------------------------------------------------------------
# helpers


def write_raster(path: Path, bounds: tuple[float, float, float, float] = (-180, -90, 180, 90)) -> Path:
    """An RGB GeoTIFF in EPSG:4326 whose colours vary with x and y (so every tile differs)."""
    width, height = 720, 360
    minx, miny, maxx, maxy = bounds
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    bands = [(xs * 255 // width), (ys * 255 // height), ((xs // 16 + ys // 16) % 2) * 200]
    ds = gdal.GetDriverByName("GTiff").Create(str(path), width, height, 3, gdal.GDT_Byte)
    ds.SetGeoTransform((minx, (maxx - minx) / width, 0, maxy, 0, -(maxy - miny) / height))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    ds.SetProjection(srs.ExportToWkt())
    for i, band in enumerate(bands, 1):
        ds.GetRasterBand(i).WriteArray(band.astype(np.uint8))
    ds = None
    return path


def parse_cgi(out: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """A CGI program's output: (status, headers, body)."""
    sep = min((i, n) for i, n in ((out.find(b"\r\n\r\n"), 4), (out.find(b"\n\n"), 2)) if i >= 0)
    status, headers = 200, []
    for line in out[: sep[0]].decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        else:
            headers.append((name, value.strip()))
    return status, headers, out[sep[0] + sep[1] :]


class CGIServer:
    """A CGI program (Debian's mapserv or mapcache) run once per request behind a loopback HTTP
    server on a free port, as Apache runs it; counts requests. `env` is added to each request's."""

    def __init__(self, program: str, env: dict[str, str]):
        self.program, self.env = program, env
        self.count = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        cgi = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with cgi._lock:
                    cgi.count += 1
                url = urlsplit(self.path)
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "REQUEST_METHOD": "GET",
                    "PATH_INFO": url.path,
                    "SCRIPT_NAME": "",
                    "QUERY_STRING": url.query,
                    "SERVER_NAME": "127.0.0.1",
                    "SERVER_PORT": str(cgi.server.server_address[1]),
                    "GATEWAY_INTERFACE": "CGI/1.1",
                    **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in self.headers.items()},
                    **cgi.env,
                }
                run = subprocess.run([cgi.program], env=env, stdin=subprocess.DEVNULL, capture_output=True)
                status, headers, body = parse_cgi(run.stdout)
                self.send_response(status)
                for k, v in headers:
                    if k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MapServerWMS(CGIServer):
    """mapserv (CGI) serving one raster layer `r` as WMS."""

    def __init__(self, workdir: Path, raster: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self.mapfile = workdir / "r.map"
        self.config = workdir / "ms.conf"
        super().__init__(
            MAPSERV, {"MS_MAPFILE": str(self.mapfile), "MAPSERVER_CONFIG_FILE": str(self.config)}
        )
        self.env["PATH_INFO"] = ""  # mapserv would take a path's first segment as a MAPS alias
        self.mapfile.write_text(
            f"""MAP
  EXTENT -180 -90 180 90
  SIZE 256 256
  PROJECTION "init=epsg:4326" END
  WEB METADATA "wms_enable_request" "*" "wms_srs" "EPSG:4326 EPSG:3857" "wms_title" "t"
    "wms_onlineresource" "{self.url}" END END
  OUTPUTFORMAT NAME "png" DRIVER AGG/PNG MIMETYPE "image/png" IMAGEMODE RGBA EXTENSION "png" END
  LAYER NAME "r" TYPE RASTER STATUS ON DATA "{raster}" PROJECTION "EPSG:4326" END END
END
"""
        )
        self.config.write_text(f'CONFIG\n  ENV\n    MS_MAP_PATTERN "^{workdir}/"\n  END\nEND\n')


@contextlib.contextmanager
def mapcache(config: Path) -> Iterator[CGIServer]:
    """Debian's mapcache binary serving `config` (run as CGI per request: the same program that
    Apache's mod_mapcache embeds in the tile-cache pods)."""
    server = CGIServer(MAPCACHE, {"MAPCACHE_CONFIG_FILE": str(config)})
    try:
        yield server
    finally:
        server.close()


def mapcache_xml(
    service: str, wms_url: str, tilesets: dict[str, tuple[str, str]], lock_dir: Path, expires: int = 3600
) -> str:
    """A MapCache config like the operator's: `tilesets` maps a dataset name to (storage, version) with
    storage "disk" or "sqlite"; caches live under /var/cache/mapcache/<service>/<dataset>/<version>."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<mapcache>']
    for name, (storage, version) in tilesets.items():
        prefix = f"/var/cache/mapcache/{service}/{name}/{version}"
        if storage == "disk":
            parts.append(f'<cache name="c-{name}" type="disk"><base>{prefix}</base><symlink_blank/></cache>')
        else:
            parts.append(f'<cache name="c-{name}" type="sqlite3"><dbfile>{prefix}.sqlite3</dbfile></cache>')
        parts.append(
            f'<source name="s-{name}" type="wms"><getmap><params><FORMAT>image/png</FORMAT><LAYERS>r</LAYERS>'
            f"<TRANSPARENT>true</TRANSPARENT></params></getmap><http><url>{wms_url}</url>"
            "<connection_timeout>5</connection_timeout><timeout>30</timeout></http></source>"
        )
        parts.append(
            f'<tileset name="{name}"><source>s-{name}</source><cache>c-{name}</cache>'
            "<grid>GoogleMapsCompatible</grid><grid>WGS84</grid><format>PNG</format>"
            f"<metatile>1 1</metatile><metabuffer>0</metabuffer><expires>{expires}</expires></tileset>"
        )
    parts.append(
        '<format name="PNG" type="PNG"><compression>fast</compression></format>'
        "<default_format>PNG</default_format>"
        '<service type="wms" enabled="true"><full_wms>assemble</full_wms></service>'
        '<service type="wmts" enabled="true"/><service type="tms" enabled="true"/>'
        '<service type="gmaps" enabled="true"/><service type="kml" enabled="false"/>'
        '<service type="demo" enabled="false"/>'
        f"<errors>report</errors><lock_dir>{lock_dir}</lock_dir><threaded_fetching>true</threaded_fetching>"
        "</mapcache>"
    )
    return "\n".join(parts)


def write_config(path: Path, xml: str, cache_root: Path) -> Path:
    """The served config: /var/cache/mapcache moved to `cache_root` (as the seeder does)."""
    path.write_text(rewrite_cache_root(xml, str(cache_root)))
    return path


def get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def wms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MapServerWMS]:
    workdir = tmp_path_factory.mktemp("wms")
    server = MapServerWMS(workdir, write_raster(workdir / "r.tif"))
    yield server
    server.close()


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    root.mkdir()
    return root


@pytest.fixture
def locks(tmp_path: Path) -> Path:
    d = tmp_path / "locks"
    d.mkdir()
    return d


class JobRun:
    def __init__(self, code: int, result: dict[str, Any], stderr: str):
        self.code, self.result, self.stderr = code, result, stderr


@pytest.fixture
def job(tmp_path: Path, cache_root: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., JobRun]:
    """Run `kube-mapserver-job <type> --params-json ... --cache-root <cache_root>` in-process."""
    term = tmp_path / "term.log"

    def run(job_type: str, params: dict[str, Any], root: Path | None = None) -> JobRun:
        argv = [job_type, "--params-json", json.dumps(params), "--data-root", str(tmp_path)]
        argv += ["--cache-root", str(root or cache_root), "--termination-log", str(term)]
        code = cli.main(argv)
        _, err = capsys.readouterr()
        text = term.read_text()
        assert len(text.encode()) <= MAX_RESULT_BYTES
        return JobRun(code, json.loads(text), err)

    return run


# ---------------------------------------------------------------------------------------------
# FastCGI client


# ---------------------------------------------------------------------------------------------
# serving: pool + HTTP server


def test_tiles_via_tms_xyz_and_wmts_are_cached(
    wms: MapServerWMS, tmp_path: Path, cache_root: Path, locks: Path
):
    """The operator's kind of MapCache config, served by MapCache itself: one rendering per tile,
    the same tile under TMS, XYZ and WMTS, HTTP caching, and errors for unknown tilesets and tiles."""
    config = write_config(
        tmp_path / "mc.xml", mapcache_xml("svc", wms.url, {"ds": ("disk", "v1")}, locks), cache_root
    )
    with mapcache(config) as server:
        url = server.url.rstrip("/")
        before = wms.count
        status, headers, tms = get(url + "/tms/1.0.0/ds@GoogleMapsCompatible/2/1/2.png")
        assert status == 200 and headers["content-type"] == "image/png" and tms.startswith(b"\x89PNG")
        assert wms.count == before + 1
        assert get(url + "/tms/1.0.0/ds@GoogleMapsCompatible/2/1/2.png")[2] == tms  # a cache hit
        assert wms.count == before + 1
        # XYZ counts rows from the top, TMS from the bottom; WMTS is XYZ too
        assert get(url + "/gmaps/ds@GoogleMapsCompatible/2/1/1.png")[2] == tms
        assert get(url + "/wmts/1.0.0/ds/default/GoogleMapsCompatible/2/1/1.png")[2] == tms
        kvp = "SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=ds&STYLE=default&FORMAT=image/png"
        kvp += "&TILEMATRIXSET=GoogleMapsCompatible&TILEMATRIX=2&TILEROW=1&TILECOL=1"
        assert get(f"{url}/wmts?{kvp}")[2] == tms
        assert wms.count == before + 1
        other = get(url + "/tms/1.0.0/ds@GoogleMapsCompatible/2/1/1.png")[2]
        assert other != tms and wms.count == before + 2  # a different tile is rendered
        last_modified = get(url + "/tms/1.0.0/ds@GoogleMapsCompatible/2/1/2.png")[1]["last-modified"]
        hdr = {"If-Modified-Since": last_modified}
        assert get(url + "/tms/1.0.0/ds@GoogleMapsCompatible/2/1/2.png", hdr)[0] == 304
        assert get(url + "/tms/1.0.0/nope@GoogleMapsCompatible/2/1/2.png")[0] == 400
        assert get(url + "/tms/1.0.0/ds@GoogleMapsCompatible/2/9/2.png")[0] == 404
        # the tile is on disk under the dataset's version directory
        assert list((cache_root / "svc" / "ds" / "v1").rglob("*.png"))


def test_sqlite_cache_serves_and_seeds(
    wms: MapServerWMS, tmp_path: Path, cache_root: Path, locks: Path, job: Callable[..., JobRun]
):
    xml = mapcache_xml("svc", wms.url, {"sq": ("sqlite", "v3")}, locks)
    r = job(
        "cache-seed", {"service": "svc", "configXml": xml, "tilesets": ["sq"], "minZoom": 0, "maxZoom": 1}
    )
    assert r.code == 0, r.stderr
    assert r.result["tiles"] == 5 and r.result["bytes"] > 0
    db = cache_root / "svc" / "sq" / "v3.sqlite3"
    assert db.is_file()
    config = write_config(tmp_path / "mc.xml", xml, cache_root)
    with mapcache(config) as server:
        url = server.url.rstrip("/")
        before = wms.count
        assert get(url + "/gmaps/sq@GoogleMapsCompatible/1/1/0.png")[0] == 200  # seeded: no rendering
        assert wms.count == before
        assert get(url + "/gmaps/sq@GoogleMapsCompatible/2/1/0.png")[0] == 200  # rendered and stored
        assert get(url + "/gmaps/sq@GoogleMapsCompatible/2/1/0.png")[0] == 200
        assert wms.count == before + 1


# ---------------------------------------------------------------------------------------------
# seeding


def test_seeded_tiles_equal_tiles_rendered_on_demand(
    wms: MapServerWMS, tmp_path: Path, cache_root: Path, locks: Path, job: Callable[..., JobRun]
):
    xml = mapcache_xml("svc", wms.url, {"ds": ("disk", "v1")}, locks)
    params = {
        "service": "svc",
        "configXml": xml,
        "tilesets": ["ds"],
        "minZoom": 0,
        "maxZoom": 3,
        "threads": 2,
    }
    r = job("cache-seed", params)
    assert r.code == 0, r.stderr
    assert r.result["tiles"] == tile_count("GoogleMapsCompatible", 0, 3) == 85
    assert r.result["expectedTiles"] == 85 and r.result["failedTiles"] == 0
    assert r.result["levels"] == [0, 1, 2, 3] and r.result["grid"] == "GoogleMapsCompatible"
    assert r.result["bytes"] > 0 and r.result["tilesPerSecond"] > 0 and r.result["tilesets"] == ["ds"]
    progress = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    assert any(p.get("msg") == "seeding" and "progress" in p for p in progress)

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    seeded_cfg = write_config(tmp_path / "seeded.xml", xml, cache_root)
    fresh_cfg = write_config(tmp_path / "fresh.xml", xml, fresh)
    tiles = ["0/0/0", "1/0/1", "2/3/0", "3/2/5", "3/7/7"]
    with mapcache(seeded_cfg) as seeded, mapcache(fresh_cfg) as ondemand:
        seeded_url, fresh_url = seeded.url.rstrip("/"), ondemand.url.rstrip("/")
        before = wms.count
        from_seed = [get(f"{seeded_url}/tms/1.0.0/ds@GoogleMapsCompatible/{t}.png") for t in tiles]
        assert wms.count == before  # every seeded tile came from the cache
        rendered = [get(f"{fresh_url}/tms/1.0.0/ds@GoogleMapsCompatible/{t}.png") for t in tiles]
        assert wms.count == before + len(tiles)
    for (s1, _, b1), (s2, _, b2) in zip(from_seed, rendered, strict=True):
        assert s1 == s2 == 200 and b1 == b2

    again = job("cache-seed", params)  # everything exists: nothing to seed
    assert again.code == 0 and again.result["tiles"] == 0


@pytest.mark.parametrize(
    ("grid", "zooms", "extent"),
    [
        ("GoogleMapsCompatible", (0, 6), None),
        ("GoogleMapsCompatible", (0, 9), [-10, -10, 50, 40]),
        ("GoogleMapsCompatible", (3, 12), [10.5, 45.2, 11.3, 46.0]),
        ("GoogleMapsCompatible", (0, 8), [-180, -90, 180, 90]),
        ("GoogleMapsCompatible", (0, 10), [-0.0001, -0.0001, 0.0001, 0.0001]),
        ("GoogleMapsCompatible", (0, 7), [0, 0, 45, 40.97989806962013]),  # on tile edges
        ("WGS84", (0, 6), None),
        ("WGS84", (0, 5), [0, 0, 90, 45]),
        ("WGS84", (2, 9), [-73.5, 40.2, -71.1, 41.9]),
        ("WGS84", (0, 8), [179.9, 89.9, 180, 90]),
    ],
)
def test_tile_count_matches_mapcache_seed(
    grid: str, zooms: tuple[int, int], extent: list[float] | None, tmp_path: Path, locks: Path
):
    """Delete mode with --force walks exactly the tiles a seed would, without rendering any."""
    xml = mapcache_xml("svc", "http://127.0.0.1:9/", {"ds": ("disk", "v1")}, locks)
    config = write_config(tmp_path / "mc.xml", xml, tmp_path)
    cmd = ["mapcache_seed", "-c", str(config), "-t", "ds", "-g", grid, "-z", f"{zooms[0]},{zooms[1]}"]
    cmd += ["-m", "delete", "-f", "-q"]
    if extent is not None:
        cmd += ["-e", ",".join(repr(v) for v in GRIDS[grid].from_wgs84(extent))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    seeded = int(out.split("metatiles (")[1].split(" ")[0]) if "metatiles (" in out else 0
    assert tile_count(grid, *zooms, extent) == seeded


def test_tile_count_rejects_bad_input():
    assert tile_count("WGS84", 0, 0) == 2 and tile_count("GoogleMapsCompatible", 0, 0) == 1
    assert tile_count("GoogleMapsCompatible", 18, 18) == 4**18
    for args in [("g", 0, 1), ("WGS84", 0, 18), ("WGS84", 3, 2), ("WGS84", -1, 2)]:
        with pytest.raises(ValueError):
            tile_count(*args)
    for extent in ([0, 0, 0, 1], [0, 0, 1], [-181, 0, 1, 1], [0, 0, 1, float("nan")]):
        with pytest.raises(ValueError):
            tile_count("WGS84", 0, 1, extent)


def test_seed_with_an_extent_seeds_only_that_area(
    wms: MapServerWMS, tmp_path: Path, cache_root: Path, locks: Path, job: Callable[..., JobRun]
):
    xml = mapcache_xml("svc", wms.url, {"a": ("disk", "v1"), "b": ("sqlite", "v2")}, locks)
    extent = [5.0, 45.0, 15.0, 55.0]
    params = {"service": "svc", "configXml": xml, "tilesets": ["a", "b"], "grid": "WGS84", "minZoom": 2}
    r = job("cache-seed", {**params, "maxZoom": 4, "extent": extent, "threads": 3})
    assert r.code == 0, r.stderr
    assert r.result["tiles"] == r.result["expectedTiles"] == 2 * tile_count("WGS84", 2, 4, extent) == 8
    assert len(list((cache_root / "svc" / "a" / "v1").rglob("*.png"))) == 4


def test_seed_failure_exits_1_with_the_reason(
    tmp_path: Path, cache_root: Path, locks: Path, job: Callable[..., JobRun], monkeypatch
):
    monkeypatch.setenv("KMS_SEED_SOURCE_WAIT", "0")  # no waiting for a source that never comes
    with socket.socket() as s:  # a port nothing listens on: bound, not listening, held while used
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
        xml = mapcache_xml("svc", dead, {"ds": ("disk", "v1")}, locks)
        r = job("cache-seed", {"service": "svc", "configXml": xml, "tilesets": ["ds"], "maxZoom": 1})
    assert r.code == 1
    assert "mapcache_seed failed for tileset 'ds'" in r.result["error"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"tilesets": ["nope"]}, "unknown tileset 'nope' (the configuration has: ds)"),
        ({"maxZoom": 19}, "maxZoom <= 18"),
        ({"grid": "WGS84", "maxZoom": 18}, "maxZoom <= 17"),
        ({"grid": "EPSG:3857"}, "grid"),
        ({"minZoom": 3, "maxZoom": 2}, "minZoom <= maxZoom"),
        ({"extent": [10, 10, 5, 20]}, "minlon < maxlon"),
        ({"extent": [0, 0, 1]}, "extent"),
        ({"threads": 9}, "threads"),
        ({"service": "../x"}, "not a plain name"),
        ({"service": "other"}, "is not under"),
        ({"configXml": "<mapcache><oops"}, "not valid XML"),
        ({"configXml": "<x/>"}, "must be a <mapcache> document"),
    ],
)
def test_seed_bad_input_exits_2(
    change: dict[str, Any], expected: str, locks: Path, job: Callable[..., JobRun]
):
    xml = mapcache_xml("svc", "http://127.0.0.1:9/", {"ds": ("disk", "v1")}, locks)
    params = {"service": "svc", "configXml": xml, "tilesets": ["ds"], "maxZoom": 2, **change}
    r = job("cache-seed", params)
    assert r.code == 2, r.result
    assert expected in r.result["error"]


def test_seed_refuses_a_grid_the_tileset_lacks_and_a_missing_cache_root(
    locks: Path, tmp_path: Path, job: Callable[..., JobRun]
):
    xml = mapcache_xml("svc", "http://127.0.0.1:9/", {"ds": ("disk", "v1")}, locks)
    xml = xml.replace("<grid>WGS84</grid>", "")
    r = job(
        "cache-seed", {"service": "svc", "configXml": xml, "tilesets": ["ds"], "grid": "WGS84", "maxZoom": 1}
    )
    assert r.code == 2 and "not configured for grid WGS84" in r.result["error"]
    r = job("cache-purge", {"service": "svc", "datasets": {"ds": None}}, root=tmp_path / "missing")
    assert r.code == 2 and "cache root" in r.result["error"]


# ---------------------------------------------------------------------------------------------
# purging


def _fill(d: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)


def test_purge_keeps_the_current_version_only(cache_root: Path, tmp_path: Path, job: Callable[..., JobRun]):
    svc = cache_root / "svc"
    _fill(
        svc / "a", {"v1/a/g/00/0.png": b"x" * 10, "v1/a/g/01/1.png": b"x" * 20, "v2/a/g/00/0.png": b"y" * 5}
    )
    _fill(svc / "a", {"v0.sqlite3": b"z" * 7, "v2.sqlite3": b"k" * 3, "v2.sqlite3-wal": b"w"})
    _fill(svc / "b", {"v9/t.png": b"b" * 100, "v9.sqlite3": b"q" * 50})
    _fill(svc / "c", {"v1/t.png": b"c"})
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"keep me")
    (svc / "a" / "v1" / "link.png").symlink_to(outside)
    r = job("cache-purge", {"service": "svc", "datasets": {"a": "v2", "b": None, "gone": None}})
    assert r.code == 0, r.stderr
    assert r.result == {"type": "cache-purge", "removedFiles": 6, "bytes": 10 + 20 + 7 + 150, "datasets": 2}
    assert sorted(p.name for p in (svc / "a").iterdir()) == ["v2", "v2.sqlite3", "v2.sqlite3-wal"]
    assert (svc / "a" / "v2" / "a" / "g" / "00" / "0.png").read_bytes() == b"y" * 5
    assert not (svc / "b").exists()
    assert (svc / "c" / "v1" / "t.png").exists()  # not named: untouched
    assert outside.read_bytes() == b"keep me"  # a symlink is removed, never followed


@pytest.mark.parametrize(
    "params",
    [
        {"service": "svc", "datasets": {"a/b": None}},
        {"service": "svc", "datasets": {"..": None}},
        {"service": "svc", "datasets": {"": None}},
        {"service": "svc", "datasets": {"a": "../v1"}},
        {"service": "svc", "datasets": {"a": ""}},
        {"service": "..", "datasets": {"a": None}},
        {"service": "a/b", "datasets": {"a": None}},
        {"service": "svc", "datasets": {}},
    ],
)
def test_purge_bad_names_exit_2(params: dict[str, Any], cache_root: Path, job: Callable[..., JobRun]):
    _fill(cache_root / "svc" / "a", {"v1/t.png": b"x"})
    r = job("cache-purge", params)
    assert r.code == 2 and r.result["error"].startswith("invalid params")
    assert (cache_root / "svc" / "a" / "v1" / "t.png").exists()
