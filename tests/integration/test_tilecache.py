"""The tile cache for real: the operator's MapCache configuration served by the tile-cache pods
(Apache + mod_mapcache) in front of the MapServer pods, on the real node; seeding and purging as
MapJobs whose pods run mapcache_seed, driven through the facade. Tile URLs from status name the
in-cluster Services (helpers.host_url opens them from this host); the cache volume is a hostPath
folder of this host, so the tests look at its files directly."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.helpers import (
    FAST_PROBES,
    create_cr,
    get_cr,
    getmap_count,
    host_url,
    make_data_volume,
    patch_cr,
    service_url,
    wait_condition,
    wait_until,
)
from tests.pixels import drawn, rgba

API = "maps.kube-mapserver.io/v1alpha1"


@pytest.fixture(scope="module")
def stack(cluster, facade_factory, operator_process, tmp_path_factory):
    fac = facade_factory(
        KMS_OPERATOR_HEALTH_URL=f"http://127.0.0.1:{operator_process.liveness_port}/healthz",
        KMS_WATCH_TIMEOUT="5",
    )
    ns = fac.namespace
    cache_root = tmp_path_factory.mktemp("tile-cache")
    make_data_volume(cluster.api, ns, cache_root, name="tile-cache")
    create_cr(cluster.api, ns, _dataset("sst"))
    create_cr(
        cluster.api,
        ns,
        {
            "apiVersion": API,
            "kind": "MapService",
            "metadata": {"name": "tiles"},
            "spec": {
                "datasetSelector": {"matchLabels": {"tiles": "yes"}},
                "data": {"persistentVolumeClaim": "map-data"},
                "tileCache": {"storage": {"persistentVolumeClaim": "tile-cache"}},
                "probes": FAST_PROBES,
            },
        },
    )
    wait_until(lambda: _tc(cluster, ns, "sst").get("xyz"), "dataset tile URLs in status", 90)
    wait_until(
        lambda: (
            (get_cr(cluster.api, ns, "MapService", "tiles").get("status") or {}).get("tileCache") or {}
        ).get("tilesets"),
        "the service's tile cache with the dataset",
        90,
    )
    wait_condition(cluster.api, ns, "MapService", "tiles", timeout=180)  # MapServer pods ready
    service_url(cluster.api, ns, "tiles")  # MapServer answers through its Service
    service_url(cluster.api, ns, "tiles-tiles")  # and so does a tile-cache pod
    with fac.client("editor") as editor:
        yield {
            "cluster": cluster,
            "ns": ns,
            "facade": fac,
            "editor": editor,
            "cache_root": cache_root,
        }


def _dataset(name: str, ramp: str = "viridis") -> dict:
    return {
        "apiVersion": API,
        "kind": "MapDataset",
        "metadata": {"name": name, "labels": {"tiles": "yes"}},
        "spec": {
            "type": "raster",
            "source": {"path": "ocean/sst-sample.tif"},
            "identifier": name,
            "title": name.upper(),
            "style": {"colorRamp": ramp, "range": {"min": 0, "max": 30}},
        },
    }


def _tc(cluster, ns: str, name: str) -> dict:
    return (get_cr(cluster.api, ns, "MapDataset", name) or {}).get("status", {}).get("tileCache") or {}


def _renders(s) -> int:
    """GetMaps the service's MapServer pods answered (their access log)."""
    return getmap_count(s["cluster"].api, s["ns"], "tiles")


def _tile(url: str, timeout: float = 60) -> bytes:
    def fetch():
        r = httpx.get(url, timeout=30)
        return r.content if r.status_code == 200 and r.headers["content-type"] == "image/png" else None

    tile = wait_until(fetch, f"tile {url}", timeout)
    opaque = float((rgba(tile)[..., 3] > 0).mean())
    assert opaque > 0.99, f"the sample raster covers the world, yet {1 - opaque:.0%} of {url} is empty"
    return tile


def _xyz(s, name: str, z: int, x: int, y: int) -> str:
    """The dataset's XYZ tile URL from its status, opened through the Service's ClusterIP."""
    return host_url(s["cluster"].api, _tc(s["cluster"], s["ns"], name)["xyz"].format(z=z, x=x, y=y))


def _run_job(s, response: httpx.Response) -> dict:
    assert response.status_code == 202, response.text
    job = response.json()["id"]

    def done():
        j = s["editor"].get(f"/jobs/{job}").json()
        return j if j["state"] != "in-progress" else None

    result = wait_until(done, f"job {job} finished", 300)
    assert result["state"] == "success", result
    return result


def _replica_sets(api, ns: str, deployment: str) -> list:
    from kubernetes import client

    apps = client.AppsV1Api(api)
    d = apps.read_namespaced_deployment(deployment, ns)
    selector = ",".join(f"{k}={v}" for k, v in sorted(d.spec.selector.match_labels.items()))
    return apps.list_namespaced_replica_set(ns, label_selector=selector).items


def _serving_replica_set(api, ns: str, deployment: str) -> str:
    """The ReplicaSet whose pods serve now (the Deployment fully rolled out)."""
    serving = [rs.metadata.name for rs in _replica_sets(api, ns, deployment) if rs.spec.replicas]
    assert len(serving) == 1, serving
    return serving[0]


def _scaled_down_at(api, ns: str, deployment: str, replica_set: str):
    """When the Deployment controller scaled `replica_set` to 0 (its event), waited for."""
    from kubernetes import client

    def event():
        for e in (
            client.CoreV1Api(api)
            .list_namespaced_event(
                ns, field_selector=f"involvedObject.name={deployment},reason=ScalingReplicaSet"
            )
            .items
        ):
            if f"Scaled down replica set {replica_set} from" in e.message and e.message.endswith(" to 0"):
                return e.last_timestamp or e.first_timestamp
        return None

    return wait_until(event, f"the event of {replica_set} scaled to 0", 30)


def _timeline(api, ns: str) -> str:
    """ReplicaSets and events of the namespace in time order (for a failure message)."""
    from kubernetes import client

    rows = [
        (
            rs.metadata.creation_timestamp,
            f"ReplicaSet {rs.metadata.name} created, replicas {rs.spec.replicas}",
        )
        for rs in client.AppsV1Api(api).list_namespaced_replica_set(ns).items
    ]
    for e in client.CoreV1Api(api).list_namespaced_event(ns).items:
        when = e.last_timestamp or e.first_timestamp or e.event_time
        rows.append(
            (when, f"{e.involved_object.kind} {e.involved_object.name} {e.reason}: {e.message[:120]}")
        )
    return "\n".join(f"{t} {what}" for t, what in sorted(rows, key=lambda r: str(r[0])))


def _template_created_at(api, ns: str, deployment: str, configmap: str):
    """When the Deployment got the pod template mounting `configmap` (its ReplicaSet's creation)."""
    for rs in _replica_sets(api, ns, deployment):
        names = {v.config_map.name for v in rs.spec.template.spec.volumes or [] if v.config_map}
        if configmap in names:
            return rs.metadata.creation_timestamp
    raise AssertionError(f"no ReplicaSet of {deployment} mounts {configmap}")


def _version_dir(s, name: str):
    version = _tc(s["cluster"], s["ns"], name)["version"]
    return s["cache_root"] / "tiles" / name / version


def test_tiles_are_rendered_once_then_served_from_the_cache(stack):
    s = stack
    status = get_cr(s["cluster"].api, s["ns"], "MapService", "tiles")["status"]["tileCache"]
    assert status["tilesets"] == 1 and status["configMap"].startswith("tiles-tiles-")
    url = _xyz(s, "sst", 2, 1, 1)
    before = _renders(s)
    first = _tile(url)
    drawn(first)
    rendered = _renders(s)
    assert rendered > before, "the first request of a tile is rendered by MapServer"
    for _ in range(5):
        assert httpx.get(url, timeout=30).content == first
    assert _renders(s) == rendered, "a cached tile must not be rendered again"
    assert (_version_dir(s, "sst") / "sst" / "GoogleMapsCompatible").is_dir()
    # the other routes of the same cache: TMS (y from the bottom) and WMTS capabilities
    api = s["cluster"].api
    tms = host_url(api, status["tms"].format(dataset="sst", grid="GoogleMapsCompatible", z=2, x=1, y=2))
    assert httpx.get(tms, timeout=30).content == first
    caps = httpx.get(host_url(api, status["wmts"]), timeout=30)
    assert caps.status_code == 200 and "<ows:Identifier>sst</ows:Identifier>" in caps.text
    wgs84 = httpx.get(host_url(api, status["tms"].format(dataset="sst", grid="WGS84", z=0, x=0, y=0)))
    assert wgs84.headers["content-type"] == "image/png"
    drawn(wgs84.content)

    def health():
        body = httpx.get(f"{s['facade'].url}/health", timeout=30).json()
        comps = {c["name"]: c for c in body["components"]}
        return comps.get("tilecache/tiles", {}).get("status") == "ok" and comps["tilecache/tiles"]

    assert "1 tilesets" in wait_until(health, "the tile cache in /health", 30)["detail"]


def test_seeded_tile_equals_the_rendered_one_and_purge_removes_tiles(stack):
    s = stack
    _run_job(s, s["editor"].delete("/datasets/sst/cache"))
    assert not _version_dir(s, "sst").exists()
    assert s["editor"].get("/datasets/sst/cache").json()["state"] == "on-demand"

    seeded_job = _run_job(s, s["editor"].post("/datasets/sst/cache/seed", json={"maxZoom": 2}))
    state = wait_until(
        lambda: (st := s["editor"].get("/datasets/sst/cache").json())["state"] == "seeded" and st,
        "cache state seeded",
        30,
    )
    assert state["levels"] == [0, 1, 2] and state["size"] > 0 and state["seeded"]["job"] == seeded_job["id"]
    rendered = _renders(s)
    seeded = _tile(_xyz(s, "sst", 2, 2, 1))
    drawn(seeded)
    assert _renders(s) == rendered, "a seeded tile is served without rendering"

    _run_job(s, s["editor"].delete("/datasets/sst/cache"))
    assert not _version_dir(s, "sst").exists()
    on_demand = _tile(_xyz(s, "sst", 2, 2, 1))
    assert _renders(s) > rendered, "after the purge the tile is rendered again"
    assert on_demand == seeded, "a seeded tile is byte-identical to the tile rendered on demand"
    wait_until(
        lambda: s["editor"].get("/datasets/sst/cache").json()["state"] == "on-demand", "state on-demand", 30
    )


def test_a_changed_style_serves_new_tiles_and_purges_the_old_ones(stack):
    s = stack
    old_dir = _version_dir(s, "sst")
    before = _tile(_xyz(s, "sst", 1, 0, 0))
    assert old_dir.is_dir()
    serving_before = _serving_replica_set(s["cluster"].api, s["ns"], "tiles")
    patch_cr(s["cluster"].api, s["ns"], "MapDataset", "sst", {"spec": {"style": {"colorRamp": "magma"}}})
    wait_until(lambda: _version_dir(s, "sst") != old_dir, "a new cache version", 60)

    def changed():
        r = httpx.get(_xyz(s, "sst", 1, 0, 0), timeout=30)
        return r.status_code == 200 and r.content != before and r.content

    # MapServer rolls out the new mapfile, then the tile cache its new configuration
    after = wait_until(changed, "the tile changes with the style", 180, interval=1)
    drawn(after)
    # the new configuration went live only once MapServer's rollout had completed: the MapServer
    # pods of the old mapfile were scaled away before the tile cache got the configuration (no old
    # pod could render a tile of the new version)
    api, ns = s["cluster"].api, s["ns"]
    new_config = get_cr(api, ns, "MapService", "tiles")["status"]["tileCache"]["configMap"]
    retired = _scaled_down_at(api, ns, "tiles", serving_before)
    live = _template_created_at(api, ns, "tiles-tiles", new_config)
    assert retired <= live, (
        f"tile config {new_config} went live at {live}, before MapServer's old pods ({serving_before}) "
        f"were scaled down at {retired}:\n{_timeline(api, ns)}"
    )
    wait_until(
        lambda: not old_dir.exists(), "the outdated tiles purged by an automatic MapJob", 180, interval=1
    )
    jobs = [j for j in s["editor"].get("/jobs").json()["items"] if j["type"] == "cache-purge"]
    assert any(j["state"] == "success" for j in jobs)


def test_seeding_progress_shows_in_the_job_status(stack, capsys):
    s = stack
    r = s["editor"].post("/datasets/sst/cache/seed", json={"maxZoom": 5, "threads": 1})
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    seen: list[float] = []

    def finished():
        obj = get_cr(s["cluster"].api, s["ns"], "MapJob", job)
        st = obj.get("status") or {}
        if st.get("phase") == "Running" and st.get("progress") is not None:
            seen.append(st["progress"])
        return st if st.get("phase") in ("Succeeded", "Failed") else None

    st = wait_until(finished, f"seed job {job}", 300, interval=0.5)
    assert st["phase"] == "Succeeded", st
    assert st["progress"] == 1.0 and any(0 < p < 1 for p in seen), seen
    result = st["result"]
    with capsys.disabled():
        print(
            f"\n[measure] seeding z0-5 of one raster (job pod, mapcache_seed -> MapServer pod): "
            f"{result['tiles']} tiles in {result['seconds']} s = {result['tilesPerSecond']} tiles/s "
            f"(1 thread); progress seen {seen}"
        )


def _percentiles(values: list[float]) -> tuple[float, float]:
    v = sorted(values)
    return v[len(v) // 2] * 1000, v[min(len(v) - 1, int(len(v) * 0.95))] * 1000


def test_measure_cached_vs_uncached_tiles_and_seeding_throughput(stack, capsys):
    """Figures for the note (not assertions on speed): tiles through the tile-cache pod's Service
    (Apache + mod_mapcache), uncached ones rendered by the MapServer pod."""
    s = stack
    _run_job(s, s["editor"].delete("/datasets/sst/cache"))
    urls = [_xyz(s, "sst", 6, x, y) for x in range(20, 30) for y in range(20, 28)]  # 80 tiles
    _tile(urls[0])
    timings: dict[str, list[float]] = {"uncached": [], "cached": []}
    with httpx.Client(timeout=30) as c:
        for kind in ("uncached", "cached"):
            for url in urls[1:]:
                t0 = time.perf_counter()
                assert c.get(url).status_code == 200
                timings[kind].append(time.perf_counter() - t0)
    (u50, u95), (c50, c95) = _percentiles(timings["uncached"]), _percentiles(timings["cached"])
    job = _run_job(
        s,
        s["editor"].post(
            "/datasets/sst/cache/seed", json={"maxZoom": 8, "extent": [0, 40, 10, 50], "threads": 2}
        ),
    )
    result = get_cr(s["cluster"].api, s["ns"], "MapJob", job["id"])["status"]["result"]
    with capsys.disabled():
        print(
            f"\n[measure] tile through the tile-cache pod ({len(urls) - 1} tiles): "
            f"uncached p50 {u50:.1f} ms p95 {u95:.1f} ms, "
            f"cached p50 {c50:.2f} ms p95 {c95:.2f} ms ({u50 / c50:.0f}x)"
            f"\n[measure] seeding z0-8 of a 10x10 degree area: {result['tiles']} tiles "
            f"in {result['seconds']} s = {result['tilesPerSecond']} tiles/s (2 threads)"
        )
    assert c50 < u50  # a cache hit is a file read


def test_seeding_beyond_the_configured_limits_is_refused(stack):
    s = stack
    jobs_before = len(s["editor"].get("/jobs").json()["items"])
    r = s["editor"].post("/datasets/sst/cache/seed", json={"maxZoom": 13})
    assert (
        r.status_code == 422 and r.json()["field"] == "maxZoom" and "cacheSeedMaxZoom" in r.json()["detail"]
    )
    with s["facade"].client("admin") as admin:
        assert admin.post("/config", json={"cacheSeedMaxTiles": 20}).status_code == 200
        try:
            r = s["editor"].post("/datasets/sst/cache/seed", json={"maxZoom": 3})
            assert r.status_code == 422 and "cacheSeedMaxTiles=20" in r.json()["detail"], r.text
            r = s["editor"].post("/datasets/sst/cache/seed", json={"minZoom": 3, "maxZoom": 2})
            assert r.status_code == 422
        finally:
            admin.post("/config/reset")
    assert s["editor"].post("/datasets/nope/cache/seed", json={"maxZoom": 1}).status_code == 404
    assert len(s["editor"].get("/jobs").json()["items"]) == jobs_before


def test_seed_policy_seeds_new_datasets_and_disabling_removes_the_cache(stack):
    s = stack
    cluster, ns = s["cluster"], s["ns"]
    patched = patch_cr(
        cluster.api,
        ns,
        "MapService",
        "tiles",
        {"spec": {"tileCache": {"seed": {"maxZoom": 1}}}},
    )
    wait_until(  # the seed policy is in effect before the new dataset arrives
        lambda: (
            (get_cr(cluster.api, ns, "MapService", "tiles").get("status") or {}).get("observedGeneration")
            == patched["metadata"]["generation"]
        ),
        "the seed policy reconciled",
        60,
    )
    create_cr(cluster.api, ns, _dataset("sst2", "blues"))
    state = wait_until(
        lambda: (st := s["editor"].get("/datasets/sst2/cache").json())["state"] == "seeded" and st,
        "sst2 seeded by the seed policy",
        150,
        interval=1,
    )
    assert state["levels"] == [0, 1]
    rendered = _renders(s)
    _tile(_xyz(s, "sst2", 1, 1, 1))
    assert _renders(s) == rendered

    # a removed dataset's tiles go away (an automatic cache-purge job)
    gone = _version_dir(s, "sst2")
    assert gone.is_dir()
    from tests.helpers import delete_cr

    delete_cr(cluster.api, ns, "MapDataset", "sst2")
    wait_until(lambda: not gone.parent.exists(), "tiles of the removed dataset purged", 120, interval=1)

    # WMS clients through the cache: the service's WMS URL is the cache's (tiles assembled by MapCache)
    patch_cr(cluster.api, ns, "MapService", "tiles", {"spec": {"tileCache": {"wms": True}}})
    url = wait_until(
        lambda: (
            (st := get_cr(cluster.api, ns, "MapService", "tiles")["status"])["url"] == st["tileCache"]["url"]
            and st["url"]
        ),
        "service WMS URL pointing at the tile cache",
        60,
    )
    assert url == f"http://tiles-tiles.{ns}.svc.cluster.local:8080/"
    getmap = {
        "SERVICE": "WMS",
        "VERSION": "1.1.1",
        "REQUEST": "GetMap",
        "LAYERS": "sst",
        "SRS": "EPSG:4326",
        "BBOX": "-180,-90,180,90",
        "WIDTH": "300",
        "HEIGHT": "150",
        "FORMAT": "image/png",
        "STYLES": "",
    }
    r = httpx.get(host_url(cluster.api, url), params=getmap, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text[:300]
    drawn(r.content, min_coverage=0.5)  # the world raster, assembled from tiles by MapCache
    wait_until(lambda: _tc(cluster, ns, "sst").get("wms"), "dataset tiled WMS URL", 30)

    patch_cr(cluster.api, ns, "MapService", "tiles", {"spec": {"tileCache": {"enabled": False}}})
    wait_until(
        lambda: not (get_cr(cluster.api, ns, "MapService", "tiles")["status"].get("tileCache")),
        "tile cache gone from status",
        60,
    )
    from kubernetes import client

    apps, core = client.AppsV1Api(cluster.api), client.CoreV1Api(cluster.api)
    wait_until(
        lambda: (
            not apps.list_namespaced_deployment(ns, label_selector="app.kubernetes.io/name=mapcache").items
        ),
        "tile cache Deployment removed",
        60,
    )
    sel = "app.kubernetes.io/component=tilecache-config"
    wait_until(
        lambda: not core.list_namespaced_config_map(ns, label_selector=sel).items, "configs pruned", 60
    )
    assert not core.list_namespaced_service(ns, label_selector="app.kubernetes.io/name=mapcache").items
    wait_until(
        lambda: s["editor"].get("/datasets/sst/cache").json()["state"] == "disabled", "cache disabled", 60
    )
