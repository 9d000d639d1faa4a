"""How fast `GET /datasets?limit=50` answers with 1,000 datasets in the namespace (figures printed,
no timed assertion), and proof that it is served from the watch cache (no LIST per request)."""

from __future__ import annotations

import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from kubernetes import client

from tests.helpers import create_cr, wait_until

N = 1000
REQUESTS = 300


def _lists(url: str) -> int:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    m = re.search(r'^kms_api_cache_lists\{resource="mapdatasets"\} ([0-9.]+)$', text, re.M)
    return int(float(m.group(1))) if m else -1


def _percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def _reconciled(cluster, ns: str) -> int:
    items = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
        "maps.kube-mapserver.io", "v1alpha1", ns, "mapdatasets"
    )["items"]
    return sum(1 for o in items if (o.get("status") or {}).get("conditions"))


def _remaining(cluster, ns: str) -> int:
    return len(
        client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
            "maps.kube-mapserver.io", "v1alpha1", ns, "mapdatasets"
        )["items"]
    )


def test_list_latency_with_1000_datasets(cluster, facade_factory, operator_process, capsys):
    fac = facade_factory()

    def make(i: int) -> None:
        create_cr(
            cluster.api,
            fac.namespace,
            {
                "apiVersion": "maps.kube-mapserver.io/v1alpha1",
                "kind": "MapDataset",
                "metadata": {"name": f"perf-{i:04d}", "labels": {"collection": "perf"}},
                "spec": {
                    "type": "raster",
                    "source": {"path": f"perf/tile-{i:04d}.tif"},
                    "identifier": f"no.test:perf-{i:04d}",
                    "title": f"Performance tile {i}",
                    "keywords": ["perf", f"row-{i // 50}"],
                },
            },
        )

    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(make, range(N)))
    created = time.perf_counter() - t0
    with fac.client("viewer") as c:
        wait_until(lambda: c.get("/datasets", params={"limit": 1}).json()["total"] == N, "1000 in the cache")
        lists_before = _lists(fac.url)
        for _ in range(20):  # warm-up
            c.get("/datasets", params={"limit": 50})
        runs: dict[str, list[float]] = {}
        for label, params in (
            ("limit=50", {"limit": 50}),
            ("limit=50&offset=900&sort=-title", {"limit": 50, "offset": 900, "sort": "-title"}),
            ("limit=50&q=row-7", {"limit": 50, "q": "row-7"}),
        ):
            times = []
            for _ in range(REQUESTS):
                t = time.perf_counter()
                r = c.get("/datasets", params=params)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200 and len(r.json()["items"]) == 50
            runs[label] = times
        lists_after = _lists(fac.url)
    assert lists_before == lists_after >= 1  # every request came from the cache, none LISTed
    # leave the session's operator idle again: let it finish, then delete the 1000 and wait for them to go
    t0 = time.perf_counter()
    wait_until(
        lambda: _reconciled(cluster, fac.namespace) == N, "operator reconciled 1000", timeout=300, interval=2
    )
    reconciled = time.perf_counter() - t0
    t0 = time.perf_counter()
    client.CustomObjectsApi(cluster.api).delete_collection_namespaced_custom_object(
        "maps.kube-mapserver.io", "v1alpha1", fac.namespace, "mapdatasets"
    )
    t0 = time.perf_counter()
    wait_until(
        lambda: _remaining(cluster, fac.namespace) == 0, "1000 datasets deleted", timeout=300, interval=2
    )
    deleted = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n[api perf] created {N} MapDatasets in {created:.1f}s (16 threads)")
        print(
            f"[api perf] operator caught up {reconciled:.1f}s after the measurement, "
            f"deletion took {deleted:.1f}s"
        )
        for label, times in runs.items():
            print(
                f"[api perf] GET /datasets?{label}: n={len(times)} p50={_percentile(times, 50):.1f}ms "
                f"p95={_percentile(times, 95):.1f}ms p99={_percentile(times, 99):.1f}ms "
                f"mean={statistics.fmean(times):.1f}ms"
            )
