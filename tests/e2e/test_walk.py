"""A user's first walk through the installed product: the smoke walk through the facade pod's
Service, a cog-convert job pod, a cache-seed job pod and tiles from the tile-cache pod."""

from __future__ import annotations

import os
import subprocess
import uuid

import httpx

from tests.e2e.conftest import REPO, ready
from tests.helpers import wait_until
from tests.pixels import drawn


def test_smoke_walk_through_the_facade_service(examples, tmp_path):
    """health, login, refused without a token, dataset, Ready, cog-convert job, WMS GetMap, a tile
    and a seeding job (hack/smoke.sh, the same walk `make smoke` runs against any install)."""
    env = {
        **os.environ,
        "KMS_URL": examples.facade_url,
        "KMS_PASSWORD": examples.admin_password,
        "SMOKE_REQUIRE_WMS": "1",
        "SMOKE_TIMEOUT": "240",
        "SMOKE_WMS_BASE": examples.service_url("ocean").rstrip("/"),
        "SMOKE_TILES_BASE": examples.service_url("ocean-tiles").rstrip("/"),
        "PYTHON": str(REPO / ".venv" / "bin" / "python"),
        "SMOKE_OUT": str(tmp_path),
    }
    r = subprocess.run(
        ["bash", str(REPO / "hack" / "smoke.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, f"smoke walk failed:\n{r.stderr[-6000:]}"
    assert "SMOKE PASSED" in r.stderr
    assert "without a token" in r.stderr or "401" in r.stderr, r.stderr[-3000:]
    # the walk's map and tile, pixel by pixel: the sample raster covers the world
    drawn((tmp_path / "map.png").read_bytes(), 0.9)
    drawn((tmp_path / "tile.png").read_bytes(), 0.5)
    drawn((tmp_path / "preview.png").read_bytes(), 0.9)  # POST /datasets/preview in the facade pod


def test_no_token_no_datasets(examples):
    r = httpx.get(f"{examples.facade_url}/datasets", timeout=30)
    assert r.status_code == 401, r.text


def test_cog_convert_job_runs_in_a_real_pod_and_registers_its_output(examples):
    name = f"cog-{uuid.uuid4().hex[:6]}"
    out = f"out/{name}.tif"
    job = {
        "apiVersion": "maps.kube-mapserver.io/v1alpha1",
        "kind": "MapJob",
        "metadata": {"name": name, "namespace": examples.namespace},
        "spec": {
            "type": "cog-convert",
            "cogConvert": {"input": "ocean/sst-sample.tif", "output": out},
            "data": {"persistentVolumeClaim": "map-data"},
            "output": {"dataset": {"name": name, "title": "SST as COG", "labels": {"collection": "cogs"}}},
        },
    }
    examples.k.apply([job])
    done = wait_until(
        lambda: (
            (s := examples.get("mapjob", name).get("status") or {}).get("phase") in ("Succeeded", "Failed")
            and s
        ),
        f"MapJob {name} finished",
        timeout=240,
    )
    assert done["phase"] == "Succeeded", done
    pods = examples.pods(f"job-name={done['jobName']}")
    assert pods and pods[0]["status"]["phase"] == "Succeeded", pods
    assert pods[0]["spec"]["nodeName"] == "kms-node", "the job ran on the real node"
    from osgeo import gdal

    info = gdal.Info(str(examples.data_dir / out), format="json")
    assert info["metadata"]["IMAGE_STRUCTURE"].get("LAYOUT") == "COG"
    ds = wait_until(lambda: ready(d := examples.get("mapdataset", name)) and d, f"dataset {name} Ready")
    assert ds["spec"]["source"]["path"] == out


def test_seeding_job_fills_the_cache_and_the_tile_pod_serves_xyz_and_wmts(examples):
    svc = examples.get("mapservice", "ocean")
    tc = svc["status"]["tileCache"]
    jobs = wait_until(
        lambda: [
            j
            for j in examples.k.json("get", "mapjobs", "-n", examples.namespace)["items"]
            if j["spec"]["type"] == "cache-seed" and (j.get("status") or {}).get("phase") == "Succeeded"
        ],
        "an automatic cache-seed MapJob Succeeded",
        timeout=300,
    )
    assert jobs, "no seeding job"
    tiles = list(examples.tiles_dir.rglob("*.png"))
    assert len(tiles) >= 5, f"the seeding pod wrote {len(tiles)} tiles into the cache volume"
    xyz = examples.host_url(tc["xyz"].replace("{dataset}", "sst-sample").replace("{z}/{x}/{y}", "1/1/0"))
    r = httpx.get(xyz, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/"), (xyz, r.text[:300])
    drawn(r.content, 0.2)
    wmts = examples.host_url(tc["wmts"])
    caps = httpx.get(wmts, timeout=60)
    assert caps.status_code == 200 and "<Capabilities" in caps.text, caps.text[:300]
    base = wmts.split("?")[0]
    r = httpx.get(
        base,
        params={
            "SERVICE": "WMTS",
            "REQUEST": "GetTile",
            "VERSION": "1.0.0",
            "LAYER": "sst-sample",
            "STYLE": "default",
            "TILEMATRIXSET": "GoogleMapsCompatible",
            "TILEMATRIX": "1",
            "TILEROW": "0",
            "TILECOL": "1",
            "FORMAT": "image/png",
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text[:500]
    drawn(r.content, 0.2)
