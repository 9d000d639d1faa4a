"""Tile cache figures: latency through kube-mapserver-tiles (uncached vs cached, p50/p95), cached
throughput with concurrent clients, and mapcache_seed throughput (cache-seed job) on a test raster.
Real mapserv (CGI) WMS + real MapCache FastCGI workers on loopback; nothing else.

    .venv/bin/python -m bench.tiles_bench [--requests 200] [--max-zoom 8] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kms_crds.tilegrids import GRIDS, tile_count
from kms_jobs import tilecache
from kms_jobs.result import Logger
from kms_tiles.pool import MapCachePool
from kms_tiles.server import single_pool
from tests.unit.test_tiles import MapServerWMS, mapcache_xml, tile_server, write_config, write_raster

GRID = "GoogleMapsCompatible"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def tiles_in(extent: list[float], z: int, n: int) -> list[str]:
    """Up to `n` TMS paths `z/x/y` covering `extent` (WGS84) at level z."""
    g = GRIDS[GRID]
    minx, miny, maxx, maxy = g.limits(z, g.from_wgs84(extent))
    return [f"{z}/{x}/{y}" for y in range(miny, maxy) for x in range(minx, maxx)][:n]


def timed_gets(base: str, paths: list[str]) -> list[float]:
    """Sequential GETs on one keep-alive connection; milliseconds each."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    out = []
    try:
        for p in paths:
            t = time.perf_counter()
            conn.request("GET", p)
            resp = conn.getresponse()
            body = resp.read()
            out.append((time.perf_counter() - t) * 1000)
            if resp.status != 200 or not body:
                raise RuntimeError(f"GET {p}: {resp.status}")
    finally:
        conn.close()
    return out


def concurrent_throughput(base: str, paths: list[str], clients: int, seconds: float) -> float:
    """Requests per second with `clients` keep-alive clients cycling over cached `paths`."""
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def client(i: int) -> None:
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        k = i
        while time.monotonic() < stop:
            conn.request("GET", paths[k % len(paths)])
            conn.getresponse().read()
            counts[i] += 1
            k += 1
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - started)


def run(args: argparse.Namespace) -> dict[str, Any]:
    extent = [float(v) for v in args.extent.split(",")]
    with tempfile.TemporaryDirectory(prefix="kms-tiles-bench-") as tmp:
        work = Path(tmp)
        wms = MapServerWMS(work / "wms", write_raster(work / "r.tif", tuple(extent)))  # type: ignore[arg-type]
        (work / "locks").mkdir()
        xml = mapcache_xml("bench", wms.url, {"ds": ("disk", "v1")}, work / "locks")
        results: dict[str, Any] = {}
        try:
            serve_root = work / "serve"
            serve_root.mkdir()
            config = write_config(work / "serve.xml", xml, serve_root)
            paths = [f"/tms/1.0.0/ds@{GRID}/{t}.png" for t in tiles_in(extent, args.zoom, args.requests)]
            with (
                MapCachePool(str(config), workers=args.workers) as pool,
                tile_server(single_pool(pool)) as url,
            ):
                before = wms.count
                uncached = timed_gets(url, paths)
                rendered = wms.count - before
                cached = timed_gets(url, paths)
                assert wms.count - before == rendered == len(paths), "cached requests must not render"
                direct = []
                for p in paths:
                    t = time.perf_counter()
                    pool.request("GET", p)
                    direct.append((time.perf_counter() - t) * 1000)
                rps = concurrent_throughput(url, paths, args.clients, args.seconds)
            for name, values in (("uncached", uncached), ("cached", cached), ("cachedPoolOnly", direct)):
                results[name] = {
                    "n": len(values),
                    "p50ms": round(pct(values, 50), 3),
                    "p95ms": round(pct(values, 95), 3),
                    "meanMs": round(statistics.fmean(values), 3),
                }
            results["cachedConcurrent"] = {"clients": args.clients, "requestsPerSecond": round(rps)}

            seed_root = work / "seed"
            seed_root.mkdir()
            params = tilecache.SeedParams.model_validate(
                {
                    "service": "bench",
                    "configXml": xml,
                    "tilesets": ["ds"],
                    "grid": GRID,
                    "minZoom": 0,
                    "maxZoom": args.max_zoom,
                    "extent": extent,
                    "threads": args.threads,
                }
            )
            before = wms.count
            seeded = tilecache.seed(params, tilecache.CacheRoot(seed_root), Logger(io.StringIO()))
            results["seed"] = {
                "zoom": f"0-{args.max_zoom}",
                "extent": extent,
                "threads": args.threads,
                "tiles": seeded["tiles"],
                "expected": tile_count(GRID, 0, args.max_zoom, extent),
                "wmsRequests": wms.count - before,
                "seconds": seeded["seconds"],
                "tilesPerSecond": seeded["tilesPerSecond"],
                "bytes": seeded["bytes"],
            }
        finally:
            wms.close()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tiles_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=200, help="distinct tiles per latency run")
    p.add_argument("--zoom", type=int, default=9, help="zoom level of the latency tiles")
    p.add_argument("--extent", default="5,45,15,55", help="raster extent, WGS84 minlon,minlat,maxlon,maxlat")
    p.add_argument("--max-zoom", type=int, default=8, help="seed levels 0..max")
    p.add_argument("--threads", type=int, default=2, help="mapcache_seed threads")
    p.add_argument("--workers", type=int, default=2, help="mapcache FastCGI workers")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients for the throughput run")
    p.add_argument("--seconds", type=float, default=3.0, help="duration of the throughput run")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    results = run(args)
    print(f"{'figure':<34} {'p50 ms':>9} {'p95 ms':>9} {'mean ms':>9} {'n':>5}")
    for key, label in (
        ("uncached", "tile, uncached (renders via WMS)"),
        ("cached", "tile, cached (HTTP server)"),
        ("cachedPoolOnly", "tile, cached (pool.request only)"),
    ):
        r = results[key]
        print(f"{label:<34} {r['p50ms']:>9.3f} {r['p95ms']:>9.3f} {r['meanMs']:>9.3f} {r['n']:>5}")
    c = results["cachedConcurrent"]
    print(f"cached throughput, {c['clients']} clients: {c['requestsPerSecond']} req/s")
    s = results["seed"]
    print(
        f"seed z{s['zoom']} {s['extent']}: {s['tiles']} tiles (expected {s['expected']}) in {s['seconds']} s"
        f" = {s['tilesPerSecond']} tiles/s with {s['threads']} threads, {s['bytes']} bytes"
    )
    print(json.dumps(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
