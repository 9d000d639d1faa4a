"""The tile cache for real: MapCache FastCGI workers (kms_tiles) in front of a real mapserv CGI WMS, the
cache-seed / cache-purge jobs running the real mapcache_seed. No cluster, no mocks."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
from kms_tiles import fastcgi
from kms_tiles.pool import MapCachePool
from kms_tiles.server import Resolver, TileServer, make_handler, single_pool
from tests.helpers import require_tool, wait_until

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
# helpers (bench/tiles_bench.py uses them too)


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


class MapServerWMS:
    """mapserv run as a CGI per request behind a loopback HTTP server on a free port; counts requests."""

    def __init__(self, workdir: Path, raster: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self.mapfile = workdir / "r.map"
        self.config = workdir / "ms.conf"
        self.count = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.mapfile.write_text(
            f"""MAP
  EXTENT -180 -90 180 90
  SIZE 256 256
  PROJECTION "init=epsg:4326" END
  WEB METADATA "wms_enable_request" "*" "wms_srs" "EPSG:4326 EPSG:3857" "wms_title" "t"
    "wms_onlineresource" "{self.url}" END END
  OUTPUTFORMAT NAME "png" DRIVER AGG/PNG MIMETYPE "image/png" IMAGEMODE RGBA EXTENSION "png" END
  LAYER NAME "r" TYPE RASTER STATUS ON DATA "{raster}" PROJECTION "init=epsg:4326" END END
END
"""
        )
        self.config.write_text(f'CONFIG\n  ENV\n    MS_MAP_PATTERN "^{workdir}/"\n  END\nEND\n')
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        wms = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                with wms._lock:
                    wms.count += 1
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "MS_MAPFILE": str(wms.mapfile),
                    "MAPSERVER_CONFIG_FILE": str(wms.config),
                    "REQUEST_METHOD": "GET",
                    "QUERY_STRING": urlsplit(self.path).query,
                    "SERVER_NAME": "127.0.0.1",
                    "SERVER_PORT": str(wms.server.server_address[1]),
                    "GATEWAY_INTERFACE": "CGI/1.1",
                }
                out = subprocess.run([MAPSERV], env=env, stdin=subprocess.DEVNULL, capture_output=True).stdout
                resp = fastcgi.parse_cgi_response(out)
                self.send_response(resp.status)
                for k, v in resp.headers:
                    if k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.body)))
                self.end_headers()
                self.wfile.write(resp.body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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


@contextlib.contextmanager
def tile_server(
    resolve: Resolver,
    health: Callable[[], bool] | None = None,
    on_connection: Callable[[socket.socket], None] | None = None,
) -> Iterator[str]:
    """make_handler(resolve) on a free loopback port in a thread; yields its base URL.
    `on_connection(sock)` sees each accepted connection once the handler has set it up."""
    served = make_handler(resolve, health, access_log=False)

    class Handler(served):  # type: ignore[misc, valid-type]
        def handle(self) -> None:
            if on_connection is not None:
                on_connection(self.connection)
            super().handle()

    server = TileServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


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


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def wait_exited(pids: list[int], timeout: float) -> list[int]:
    """Block until each process has exited (a pidfd turns readable then: no polling, no sleep);
    return those still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    running = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # gone already
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000) and alive(pid):
                running.append(pid)
        finally:
            os.close(fd)
    return running


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


def test_fastcgi_params_encoding_with_long_names_and_values():
    params = {"A": "1", "N" * 200: "v", "LONG": "x" * 70000, "EMPTY": "", "UTF": "äö€"}
    data = fastcgi.encode_params(params)
    assert data[:2] == b"\x01\x01"  # short lengths: one byte each
    assert fastcgi.decode_params(data) == params
    assert fastcgi.encode_params({"N" * 200: ""})[:4] == b"\x80\x00\x00\xc8"  # 4 bytes, high bit set
    stream = fastcgi.stream(fastcgi.PARAMS, 1, data)  # > 65535 bytes: split into records, then the end
    assert stream.endswith(fastcgi.record(fastcgi.PARAMS, 1))
    assert len(fastcgi.record(fastcgi.STDOUT, 1, b"abc")) == 16  # 8-byte header + content padded to 8


def test_cgi_response_parsing():
    r = fastcgi.parse_cgi_response(b"Content-Type: text/plain\nStatus: 404 Not Found\n\nbody\n\nmore")
    assert (r.status, r.headers, r.body) == (404, [("Content-Type", "text/plain")], b"body\n\nmore")
    assert fastcgi.parse_cgi_response(b"Location: /x\r\n\r\n").status == 302
    assert fastcgi.parse_cgi_response(b"Content-Type: a/b\r\n\r\n\r\n\n").body == b"\r\n\n"
    for bad in (b"no blank line", b"Status: abc\r\n\r\n", b": x\r\n\r\n"):
        with pytest.raises(fastcgi.FastCGIError):
            fastcgi.parse_cgi_response(bad)


# ---------------------------------------------------------------------------------------------
# serving: pool + HTTP server


def test_tiles_via_tms_xyz_and_wmts_are_cached(
    wms: MapServerWMS, tmp_path: Path, cache_root: Path, locks: Path
):
    config = write_config(
        tmp_path / "mc.xml", mapcache_xml("svc", wms.url, {"ds": ("disk", "v1")}, locks), cache_root
    )
    nodelay: list[int] = []  # TCP_NODELAY of each connection the server accepted

    def accepted(sock: socket.socket) -> None:
        nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    with (
        MapCachePool(str(config), workers=2) as pool,
        tile_server(single_pool(pool), pool.healthy, on_connection=accepted) as url,
    ):
        assert get(url + "/healthz")[0] == 200
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
        status, headers, body = get(url + "/tms/1.0.0/ds@GoogleMapsCompatible/2/1/2.png", method="HEAD")
        assert status == 200 and body == b"" and int(headers["content-length"]) == len(tms)
        last_modified = get(url + "/tms/1.0.0/ds@GoogleMapsCompatible/2/1/2.png")[1]["last-modified"]
        hdr = {"If-Modified-Since": last_modified}
        assert get(url + "/tms/1.0.0/ds@GoogleMapsCompatible/2/1/2.png", hdr)[0] == 304
        assert get(url + "/tms/1.0.0/nope@GoogleMapsCompatible/2/1/2.png")[0] == 400
        assert get(url + "/tms/1.0.0/ds@GoogleMapsCompatible/2/9/2.png")[0] == 404
        assert get(url + "/tms/1.0.0/ds@GoogleMapsCompatible/2/1/2.png", method="POST")[0] == 405
        # the tile is on disk under the dataset's version directory
        assert list((cache_root / "svc" / "ds" / "v1").rglob("*.png"))
        # many concurrent clients
        paths = [f"/tms/1.0.0/ds@GoogleMapsCompatible/3/{x}/{y}.png" for x in range(8) for y in range(4)] * 2
        with ThreadPoolExecutor(16) as ex:
            statuses = list(ex.map(lambda p: get(url + p)[0], paths))
        assert statuses == [200] * len(paths)
        assert pool.requests >= len(paths) + 10 and pool.errors == 0
        # many tiles on one keep-alive connection: one connection accepted for all of them
        accepted_before = len(nodelay)
        conn = http.client.HTTPConnection("127.0.0.1", urlsplit(url).port, timeout=30)
        for _ in range(15):
            conn.request("GET", "/tms/1.0.0/ds@GoogleMapsCompatible/2/1/2.png")
            resp = conn.getresponse()
            assert resp.read() == tms and not resp.will_close
        conn.close()
        assert len(nodelay) == accepted_before + 1
        # the server writes headers and body separately: with Nagle's algorithm on, the body would
        # wait for the client's delayed ACK of the headers (~40 ms per tile). Every connection it
        # accepted has TCP_NODELAY set (the latency itself is a row of bench/tiles_bench.py).
        assert nodelay and all(nodelay), nodelay


def test_routing_by_service_prefix_sets_script_name(
    wms: MapServerWMS, tmp_path: Path, cache_root: Path, locks: Path
):
    """A multi-service front (as hack/local_tilecache.py): /<namespace>/<service>/... -> that pool."""
    config = write_config(
        tmp_path / "mc.xml", mapcache_xml("svc", wms.url, {"ds": ("disk", "v1")}, locks), cache_root
    )
    with MapCachePool(str(config), workers=1) as pool:
        pools = {("default", "svc"): pool}

        def resolve(path: str) -> tuple[MapCachePool, str, str] | None:
            _, ns, svc, *rest = [*path.split("/", 3), ""][:4]
            p = pools.get((ns, svc))
            return (p, f"/{ns}/{svc}", "/" + (rest[0] if rest else "")) if p else None

        with tile_server(resolve) as url:
            status, _, caps = get(f"{url}/default/svc/wmts?SERVICE=WMTS&REQUEST=GetCapabilities")
            assert status == 200
            port = urlsplit(url).port
            assert f"http://127.0.0.1:{port}/default/svc/wmts/1.0.0/ds/default/".encode() in caps
            _, _, caps = get(
                f"{url}/default/svc/wmts?SERVICE=WMTS&REQUEST=GetCapabilities",
                {"Host": "maps.example.org", "X-Forwarded-Proto": "https"},
            )
            assert b"https://maps.example.org/default/svc/wmts/1.0.0/ds/default/" in caps
            assert get(f"{url}/default/svc/tms/1.0.0/ds@GoogleMapsCompatible/0/0/0.png")[0] == 200
            assert get(f"{url}/default/other/tms/1.0.0/ds@GoogleMapsCompatible/0/0/0.png")[0] == 404
            assert get(f"{url}/healthz")[0] == 404  # no health callable: routed like any path


def test_long_params_reach_mapcache(wms: MapServerWMS, tmp_path: Path, cache_root: Path, locks: Path):
    config = write_config(
        tmp_path / "mc.xml", mapcache_xml("svc", wms.url, {"ds": ("disk", "v1")}, locks), cache_root
    )
    with MapCachePool(str(config), workers=1) as pool:
        status, _, body = pool.request(
            "GET", "/tms/1.0.0/ds@GoogleMapsCompatible/0/0/0.png", "pad=" + "x" * 100_000,
            {"X-" + "h" * 300: "y" * 1000}, "", "localhost", 80,
        )  # fmt: skip
        assert status == 200 and body.startswith(b"\x89PNG")


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
    with MapCachePool(str(config), workers=1) as pool, tile_server(single_pool(pool)) as url:
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
    with (
        MapCachePool(str(seeded_cfg), workers=1) as seeded,
        MapCachePool(str(fresh_cfg), workers=1) as ondemand,
        tile_server(single_pool(seeded)) as seeded_url,
        tile_server(single_pool(ondemand)) as fresh_url,
    ):
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


# ---------------------------------------------------------------------------------------------
# pool lifecycle


def test_pool_restarts_a_killed_worker_and_close_leaves_nothing(
    wms: MapServerWMS, tmp_path: Path, cache_root: Path, locks: Path
):
    config = write_config(
        tmp_path / "mc.xml", mapcache_xml("svc", wms.url, {"ds": ("disk", "v1")}, locks), cache_root
    )
    pool = MapCachePool(str(config), workers=2)
    try:
        first = pool.pids
        assert len(first) == 2 and pool.healthy()
        os.kill(first[0], signal.SIGKILL)
        wait_until(
            lambda: len(pool.pids) == 2 and first[0] not in pool.pids,
            f"worker {first[0]} replaced (workers now {pool.pids})",
            timeout=10,
            interval=0.02,
        )
        assert pool.restarts == 1 and pool.healthy()
        status, _, _ = pool.request("GET", "/tms/1.0.0/ds@GoogleMapsCompatible/0/0/0.png")
        assert status == 200
        sock_dir = Path(pool.socket_path).parent
        pids = pool.pids
    finally:
        pool.close()
    assert not any(alive(p) for p in pids)
    assert not sock_dir.exists()
    with pytest.raises(fastcgi.FastCGIError):
        pool.request("GET", "/tms/1.0.0/")
    pool.close()  # idempotent


def test_workers_die_with_a_killed_parent(tmp_path: Path, cache_root: Path, locks: Path):
    config = write_config(
        tmp_path / "mc.xml", mapcache_xml("svc", "http://127.0.0.1:9/", {}, locks), cache_root
    )
    code = (
        "import sys, time; from kms_tiles.pool import MapCachePool; "
        f"p = MapCachePool({str(config)!r}, workers=2); print(*p.pids, flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    proc.kill()  # no close(), no cleanup
    proc.wait()
    assert not wait_exited(pids, 5), "workers outlived their killed parent"


def test_pool_with_a_broken_config_is_unhealthy(tmp_path: Path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<mapcache><oops")
    with MapCachePool(str(bad), workers=1) as pool:
        assert not pool.healthy()
        assert not pool.healthy()


def test_server_command_serves_and_stops_on_sigterm(
    wms: MapServerWMS, tmp_path: Path, cache_root: Path, locks: Path
):
    config = write_config(
        tmp_path / "mc.xml", mapcache_xml("svc", wms.url, {"ds": ("disk", "v1")}, locks), cache_root
    )
    cmd = [sys.executable, "-m", "kms_tiles.server", "--config", str(config), "--host", "127.0.0.1"]
    # port 0: the kernel picks a free port and the server logs the one it got ("listening")
    proc = subprocess.Popen([*cmd, "--port", "0", "--workers", "2"], stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    logged: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            logged.append(line)
            lines.put(line)
        lines.put(None)  # EOF: the server exited

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"the server did not log 'listening' within 30 s: {''.join(logged)}")
            assert line is not None, f"the server exited before listening: {''.join(logged)}"
            entry = json.loads(line)
            if entry["msg"] == "listening":
                port = entry["port"]
        url = f"http://127.0.0.1:{port}"
        assert get(url + "/healthz")[0] == 200  # listening, and the pool was started before that
        assert get(url + "/tms/1.0.0/ds@GoogleMapsCompatible/1/0/0.png")[0] == 200
        tasks = Path(f"/proc/{proc.pid}/task").glob("*/children")
        children = [int(p) for t in tasks for p in t.read_text().split()]
        assert len(children) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not any(alive(p) for p in children)
    reader.join(10)
    assert not reader.is_alive()
    logs = [json.loads(line) for line in logged]
    requests = [entry for entry in logs if entry["msg"] == "request"]
    assert any(e["status"] == 200 and e["path"].startswith("/tms/") and "ms" in e for e in requests)
    assert logs[-1]["msg"] == "stopped"
