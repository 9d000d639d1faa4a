"""Serving benchmarks: the generated mapfile against a hand-written one (same MapServer, same
process), and tiles through the `make dev` serving path against TiTiler on the same COG."""

from __future__ import annotations

import math
import os
import random
import subprocess
import threading
import time
from pathlib import Path

import httpx
import mapscript

from bench.common import REPO, cluster_mod, log, summary, wait

HANDWRITTEN = """MAP
  NAME "minimal"
  SIZE 256 256
  EXTENT -180 -90 180 90
  PROJECTION "init=epsg:4326" END
  OUTPUTFORMAT
    NAME "png" DRIVER "AGG/PNG" MIMETYPE "image/png" IMAGEMODE RGBA EXTENSION "png" TRANSPARENT ON
  END
  WEB METADATA "wms_enable_request" "*" "wms_srs" "EPSG:4326 EPSG:3857" END END
  LAYER
    NAME "sst"
    TYPE RASTER
    STATUS ON
    DATA "{data}"
    PROCESSING "SCALE=0,30"
    PROCESSING "SCALE_BUCKETS=256"
    PROJECTION "init=epsg:4326" END
{classes}  END
END
"""


def handwritten(data: str, classes: list[tuple[float, float, tuple[int, int, int]]]) -> str:
    body = ""
    for i, (a, b, (r, g, bl)) in enumerate(classes):
        op = "<=" if i == len(classes) - 1 else "<"
        body += (
            f"    CLASS EXPRESSION ([pixel] >= {a} AND [pixel] {op} {b}) STYLE COLOR {r} {g} {bl} END END\n"
        )
    return HANDWRITTEN.format(data=data, classes=body)


def render(m: mapscript.mapObj, layer: str, bbox: tuple[float, float, float, float]) -> bytes:
    req = mapscript.OWSRequest()
    req.loadParamsFromURL(
        "SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&STYLES=&CRS=EPSG:4326&WIDTH=256&HEIGHT=256&FORMAT=image/png"
        f"&TRANSPARENT=TRUE&LAYERS={layer}&BBOX={bbox[1]},{bbox[0]},{bbox[3]},{bbox[2]}"
    )
    mapscript.msIO_installStdoutToBuffer()
    try:
        m.OWSDispatch(req)
        return mapscript.msIO_getStdoutBufferBytes()
    finally:
        mapscript.msIO_resetHandlers()


def generated_vs_handwritten(generated: str, layer: str, data_root: str, data: str, n: int = 200) -> dict:
    """Same raster, same MapServer, same process, interleaved requests: ratio of p50s."""
    from kms_operator.mapfile import ramp_colors

    gen = mapscript.fromstring(generated.replace('"/data/', f'"{data_root}/'))
    edges = [30 * i / 8 for i in range(9)]
    classes = [(edges[i], edges[i + 1], c) for i, c in enumerate(ramp_colors("viridis", 8))]
    hand = mapscript.fromstring(handwritten(data, classes))
    rng = random.Random(7)
    boxes = []
    for _ in range(n):
        x, y = rng.uniform(-170, 140), rng.uniform(-80, 50)
        boxes.append((x, y, x + 30, y + 30))
    t_gen, t_hand = [], []
    for i, box in enumerate(boxes):
        for m, lyr, sink in ((gen, layer, t_gen), (hand, "sst", t_hand))[:: 1 if i % 2 else -1]:
            t0 = time.perf_counter()
            png = render(m, lyr, box)
            sink.append(time.perf_counter() - t0)
            assert b"\x89PNG" in png[:64], png[:200]
    g, h = summary(t_gen), summary(t_hand)
    return {"generated": g, "handwritten": h, "ratio_p50": g["p50"] / h["p50"]}


def tile_bounds_3857(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    size = 2 * math.pi * 6378137 / 2**z
    origin = math.pi * 6378137
    return (x * size - origin, origin - (y + 1) * size, (x + 1) * size - origin, origin - y * size)


def tile_list(n: int, seed: int = 11) -> list[tuple[int, int, int]]:
    """Tiles over the sample raster (the whole world) at zooms 2..5."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        z = rng.randint(2, 5)
        out.append((z, rng.randrange(2**z), rng.randrange(2**z)))
    return out


def load(url_for, tiles, concurrency: int) -> list[float]:
    lat: list[float] = []
    lock = threading.Lock()
    queue = list(tiles)

    def worker():
        with httpx.Client(timeout=60) as c:
            while True:
                with lock:
                    if not queue:
                        return
                    t = queue.pop()
                t0 = time.perf_counter()
                r = c.get(url_for(*t))
                dt = time.perf_counter() - t0
                assert r.status_code == 200 and r.content[:4] == b"\x89PNG", (r.status_code, r.text[:300])
                with lock:
                    lat.append(dt)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return lat


def start_titiler(workdir: Path) -> tuple[subprocess.Popen, str]:
    venv = REPO / ".kms" / "bench-venv" / "bin" / "python"
    port = cluster_mod.free_port()
    app = workdir / "titiler_app.py"
    app.write_text(
        "from fastapi import FastAPI\nfrom titiler.core.factory import TilerFactory\n"
        "app = FastAPI()\napp.include_router(TilerFactory().router)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(workdir), "GDAL_CACHEMAX": "256"}
    proc = subprocess.Popen(
        [
            str(venv),
            "-m",
            "uvicorn",
            "titiler_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=workdir,
    )
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return httpx.get(base + "/openapi.json", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait(up, "TiTiler", 60)
    return proc, base


def tiles_vs_titiler(ours_base: str, layer: str, cog: str, workdir: Path, n: int = 100) -> dict:
    tiles = tile_list(n)

    def ours(z, x, y):
        minx, miny, maxx, maxy = tile_bounds_3857(z, x, y)
        return (
            f"{ours_base}?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&STYLES=&CRS=EPSG:3857&WIDTH=256&HEIGHT=256"
            f"&FORMAT=image/png&TRANSPARENT=TRUE&LAYERS={layer}&BBOX={minx},{miny},{maxx},{maxy}"
        )

    proc, tbase = start_titiler(workdir)
    try:

        def theirs(z, x, y):
            return (
                f"{tbase}/tiles/WebMercatorQuad/{z}/{x}/{y}.png?url={cog}&rescale=0,30&colormap_name=viridis"
            )

        out = {}
        for conc in (1, 4):
            load(ours, tiles[:10], conc)  # warm both
            load(theirs, tiles[:10], conc)
            a = summary(load(ours, tiles, conc))
            b = summary(load(theirs, tiles, conc))
            out[f"c{conc}"] = {"kube_mapserver": a, "titiler": b, "ratio_p50": a["p50"] / b["p50"]}
            log(
                f"  concurrency {conc}: ours p50 {a['p50'] * 1000:.1f} ms, "
                f"TiTiler p50 {b['p50'] * 1000:.1f} ms"
            )
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=10)
