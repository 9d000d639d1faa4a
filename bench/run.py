"""`make bench`: the operator, the facade and the serving path at scale, against baselines, in one
run on a fresh local control plane. Prints a table (figure, target, pass/fail) and writes
bench/results/results.json and bench/results/reconcile.png.

Phases: operator (always: bulk applies of --sizes datasets, memory, restart), facade (search over the
biggest bulk namespace), api (the facade alone:
list latency at 1,000 datasets, login timing, lists during a login flood, /health with a hung
apiserver; bench/api_bench.py),
serving, node (the real node, a plane of its own; bench/node_bench.py).

    python -m bench.run [--sizes 100,1000,10000] [--skip serving,facade,api,node]
                        [--bulk-timeout 1200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from osgeo import gdal

from bench import api_bench, node_bench, operator_bench, serving_bench
from bench.common import (
    PY,
    REPO,
    Operator,
    Plane,
    cluster_mod,
    dataset_body,
    dump,
    log,
    rss_mb,
    sample_data,
    service_body,
    summary,
    wait,
)

RESULTS = REPO / "bench" / "results"


def facade_bench(plane: Plane, workdir: Path, data_root: Path, ns: str, n: int, prefix: str) -> dict | None:
    """GET /datasets?limit=50&q=... (a search) on the watch-fed facade vs a LIST-per-request baseline."""
    try:
        import kms_api  # noqa: F401
    except ImportError:
        log("facade (kms_api) not present: skipping its benchmark")
        return None
    port = cluster_mod.free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(plane.kubeconfig),
        "KMS_NAMESPACE": ns,
        "KMS_DATA_ROOT": str(data_root),
    }
    password = os.urandom(12).hex()
    subprocess.run(
        [PY, "-m", "kms_api", "user", "add", "bench", "--role", "viewer", "--password-stdin"],
        input=password,
        text=True,
        env=env,
        check=True,
        capture_output=True,
    )
    with open(workdir / "facade.log", "ab") as out:
        proc = subprocess.Popen(
            [PY, "-m", "kms_api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: _ok(base + "/health"), "facade /health", 120)
        token = httpx.post(base + "/token", data={"username": "bench", "password": password}, timeout=10)
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}

        def total():
            r = httpx.get(base + "/datasets", params={"limit": 1}, headers=headers, timeout=30)
            return r.status_code == 200 and r.json().get("total") == n

        wait(total, f"facade cache holding {n} datasets", 300)
        terms = [f"{prefix}{i:05d}" for i in range(0, n, max(1, n // 200))]
        lat = []
        with httpx.Client(timeout=30, headers=headers) as c:
            for t in terms:
                t0 = time.perf_counter()
                r = c.get(base + "/datasets", params={"limit": 50, "q": t[:-1]})
                lat.append(time.perf_counter() - t0)
                assert r.status_code == 200
        naive = []
        for t in terms[:20]:  # the baseline is slow: fewer samples
            t0 = time.perf_counter()
            items = plane.list(ns, "mapdatasets")
            hits = [
                d for d in items if t[:-1] in d["metadata"]["name"] or t[:-1] in d["spec"].get("title", "")
            ]
            _ = sorted(hits, key=lambda d: d["metadata"]["name"])[:50]
            naive.append(time.perf_counter() - t0)
        ours, base_s = summary(lat), summary(naive)
        return {
            "facade": ours,
            "naive_list_per_request": base_s,
            "speedup_p50": base_s["p50"] / ours["p50"],
            "facade_rss_mb": rss_mb(proc.pid),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def serving(plane: Plane, workdir: Path, data_root: Path) -> dict:
    """A COG dataset served by a MapService; the generated mapfile vs hand-written; tiles vs TiTiler."""
    cog = data_root / "ocean" / "sst-cog.tif"
    gdal.Translate(
        str(cog),
        str(data_root / "ocean" / "sst-sample.tif"),
        format="COG",
        creationOptions=["COMPRESS=DEFLATE"],
    )
    ns = plane.namespace("serving")
    from kubernetes import client

    plane.core.create_persistent_volume(
        client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name="bench-data"),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": "1Gi"},
                access_modes=["ReadWriteOnce"],
                storage_class_name="manual",
                host_path=client.V1HostPathVolumeSource(path=str(data_root)),
            ),
        )
    )
    plane.core.create_namespaced_persistent_volume_claim(
        ns,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name="map-data"),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"],
                storage_class_name="manual",
                volume_name="bench-data",
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        ),
    )
    svc = service_body("tiles", {"tiles": "yes"})
    svc["spec"]["data"] = {"persistentVolumeClaim": "map-data"}
    plane.create(ns, "mapservices", svc)
    plane.create(ns, "mapdatasets", dataset_body("sst", "ocean/sst-cog.tif", {"tiles": "yes"}))
    # an operator of this namespace only: a cluster-wide one would first index the ~11,000
    # datasets the other benchmarks left behind (Kopf's index pre-population is quadratic)
    op = Operator(plane.kubeconfig, data_root, workdir / "operator-serving.log", args=("--namespace", ns))
    op.start()
    try:
        wait(
            lambda: (plane.get(ns, "mapservices", "tiles").get("status") or {}).get("datasetCount") == 1,
            "tile service ready",
            60,
        )
        cm_name = plane.get(ns, "mapservices", "tiles")["status"]["configMap"]
        cm = plane.core.read_namespaced_config_map(cm_name, ns)
        from kms_operator.builders import mapfile_from_configmap

        generated = mapfile_from_configmap(cm.data, cm.binary_data)
        log("generated vs hand-written mapfile (in-process mapscript, 200 interleaved GetMaps)")
        mapfiles = serving_bench.generated_vs_handwritten(generated, "bench_sst", str(data_root), str(cog))
        log(f"  ratio p50 {mapfiles['ratio_p50']:.2f}")
        base = _served_by_pods(plane, ns, "tiles")
        if base is None:
            log(
                "tiles vs TiTiler skipped: no real node in this plane (the MapServer pods run nowhere; "
                "the tile figures need MapServer pods behind the MapService's Service)"
            )
            return {"mapfile": mapfiles, "tiles": {}}
        log("tiles: the MapService's Service (MapServer pods) vs TiTiler, same COG, 100 tiles, conc. 1 and 4")
        tiles = serving_bench.tiles_vs_titiler(base, "bench_sst", str(cog), workdir)
        return {"mapfile": mapfiles, "tiles": tiles}
    finally:
        op.stop()


def _served_by_pods(plane: Plane, ns: str, name: str) -> str | None:
    """http://<ClusterIP>:8080/ of the MapService's Service once its MapServer pods serve, or None
    when the plane has no real node (kwok's fake pods serve nothing: never connect to them)."""
    from kubernetes import client

    real = [
        n
        for n in plane.core.list_node().items
        if (n.metadata.labels or {}).get("type") != "kwok"
        and any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    ]
    if not real:
        return None
    discovery = client.DiscoveryV1Api(plane.api)

    def ready() -> bool:
        slices = discovery.list_namespaced_endpoint_slice(
            ns, label_selector=f"kubernetes.io/service-name={name}"
        )
        return any(ep.conditions and ep.conditions.ready for s in slices.items for ep in s.endpoints or [])

    wait(ready, f"a ready MapServer pod behind Service {ns}/{name}", 180)
    ip = plane.core.read_namespaced_service(name, ns).spec.cluster_ip
    base = f"http://{ip}:8080/"
    wait(
        lambda: b"bench_sst" in httpx.get(base + "?SERVICE=WMS&REQUEST=GetCapabilities", timeout=5).content,
        "the MapServer pods serving the mapfile",
        60,
    )
    return base


# before the dataset informer (#16): bench/results/results.json of 2026-11-29 (1,000) and
# bench/results/bulk-10000.json of 2026-11-26 (10,000)
BEFORE = {"served_1000_s": 14.8, "single_apply_p50_s": 0.031, "served_10000_s": 217.4, "rss_10000_mb": 728}


def operator_rows(o: dict) -> list[tuple[str, str, str, bool | None]]:
    rows: list[tuple[str, str, str, bool | None]] = []
    for b in o["bulk"]:
        n = b["n"]
        target, ok = {
            1000: (f"<= {BEFORE['served_1000_s']} s (before)", b["all_served_s"] <= BEFORE["served_1000_s"]),
            10000: ("<= 60 s", b["all_served_s"] <= 60),
        }.get(n, ("", None))
        rows.append(
            (f"apply {n} datasets -> all Ready + {n} layers", f"{b['all_served_s']:.1f} s", target, ok)
        )
    big = max(o["bulk"], key=lambda b: b["n"])
    rows.append(
        (
            f"operator RSS at {big['n']} datasets: peak / idle after",
            f"{big['operator_peak_mb']:.0f} / {big['operator_idle_mb']:.0f} MB",
            "<= 150 MB" if big["n"] >= 10000 else "",
            big["operator_peak_mb"] <= 150 and big["operator_idle_mb"] <= 150 if big["n"] >= 10000 else None,
        )
    )
    sa = o["single_apply"]
    rows.append(
        (
            "single dataset apply -> Ready p50 / p95",
            f"{sa['p50']:.3f} / {sa['p95']:.3f} s",
            f"p50 <= 1 s, ~{BEFORE['single_apply_p50_s']} s before",
            sa["p50"] <= 1,
        )
    )
    rs = o["resync"]
    rows.append(
        (
            f"operator restart with {rs['n']} datasets in scope -> idle",
            f"{rs['resync_s']:.1f} s",
            "<= 30 s",
            rs["resync_s"] <= 30,
        )
    )
    rows.append(("  API writes during that restart (apiserver)", str(rs["writes"]), "0", rs["writes"] == 0))
    rows.append(
        (
            "  mapfiles built during that restart",
            f"{rs['mapfile_builds']:.0f}",
            "0",
            rs["mapfile_builds"] == 0,
        )
    )
    rows.append(
        (
            "  operator RSS peak during that restart",
            f"{rs['operator_peak_mb']:.0f} MB",
            "<= 150 MB",
            rs["operator_peak_mb"] <= 150,
        )
    )
    rr = o["rerenders"]
    rows.append(
        (
            "mapfile builds on one dataset change (selecting / other service)",
            f"{rr['svc']:.0f} / {rr['other']:.0f}",
            "1 / 0",
            rr["svc"] == 1 and rr["other"] == 0,
        )
    )
    return rows


def verdicts(r: dict) -> list[tuple[str, str, str, bool | None]]:
    rows: list[tuple[str, str, str, bool | None]] = []
    if r.get("node"):
        rows += node_bench.verdict_rows(r["node"])
    rows += operator_rows(r["operator"])
    f = r.get("facade")
    if f:
        rows.append(
            (
                "facade GET /datasets?limit=50&q=<term> (search) p50 / p95",
                f"{f['facade']['p50'] * 1000:.1f} / {f['facade']['p95'] * 1000:.1f} ms",
                "p50 <= 30 ms",
                f["facade"]["p50"] <= 0.030,
            )
        )
        rows.append(
            (
                "  vs LIST per request (baseline) p50",
                f"{f['naive_list_per_request']['p50'] * 1000:.0f} ms, {f['speedup_p50']:.0f}x",
                ">= 20x",
                f["speedup_p50"] >= 20,
            )
        )
        rows.append(("facade RSS", f"{f['facade_rss_mb']:.0f} MB", "<= 150 MB", f["facade_rss_mb"] <= 150))
    if r.get("api"):
        rows += api_bench.verdict_rows(r["api"])
    s = r.get("serving")
    if s:
        m = s["mapfile"]
        rows.append(
            (
                "GetMap 256 PNG generated / hand-written mapfile (p50)",
                f"{m['generated']['p50'] * 1000:.1f} / {m['handwritten']['p50'] * 1000:.1f} ms = "
                f"{m['ratio_p50']:.2f}",
                "<= 1.1",
                m["ratio_p50"] <= 1.1,
            )
        )
        for c, v in s["tiles"].items():
            rows.append(
                (
                    f"tile p50/p95 ours vs TiTiler, concurrency {c[1:]}",
                    f"{v['kube_mapserver']['p50'] * 1000:.0f}/{v['kube_mapserver']['p95'] * 1000:.0f} vs "
                    f"{v['titiler']['p50'] * 1000:.0f}/{v['titiler']['p95'] * 1000:.0f} ms = "
                    f"{v['ratio_p50']:.2f}",
                    "aim <= 1.0",
                    v["ratio_p50"] <= 1.0,
                )
            )
    return rows


def print_table(rows) -> None:
    w = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{w}}  {'measured':<34} {'target':<18} result")
    print("-" * (w + 64))
    for name, got, target, ok in rows:
        verdict = "-" if ok is None else ("PASS" if ok else "FAIL")
        print(f"{name:<{w}}  {got:<34} {target:<18} {verdict}")


def plot(results_json: Path) -> None:
    venv = REPO / ".kms" / "bench-venv" / "bin" / "python"
    if venv.exists():
        subprocess.run(
            [str(venv), str(REPO / "bench" / "plot.py"), str(results_json), str(RESULTS / "reconcile.png")],
            check=False,
        )


def _phase(results: dict, name: str, fn, *args):
    """A later phase that fails is recorded, and the figures measured so far are still written."""
    try:
        return fn(*args)
    except Exception as e:
        log(f"{name} benchmark failed: {type(e).__name__}: {e}")
        results.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:500]
        return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100,1000,10000")
    p.add_argument("--skip", default="", help="comma list of: facade, api, serving, node")
    p.add_argument(
        "--bulk-timeout",
        type=float,
        default=None,
        help="seconds each bulk apply may take (default max(120, n / 2))",
    )
    a = p.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    sizes = [int(x) for x in a.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="kms-bench-"))
    data_root = work / "data"
    sample_data.write_samples(data_root)
    log(f"workdir {work}")
    plane = Plane(work)
    results: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count()}
    try:
        results["operator"] = operator_bench.run(
            plane, work, sizes, data_root, "ocean/sst-sample.tif", a.bulk_timeout
        )
        if "facade" not in skip:  # search over the biggest bulk namespace
            n = max(sizes)
            results["facade"] = _phase(
                results, "facade", facade_bench, plane, work, data_root, f"bulk-{n}", n, "d"
            )
        if "api" not in skip:
            log("the facade alone: list latency, login timing, /health with a hung apiserver")
            results["api"] = _phase(results, "api", api_bench.run, plane, work, data_root)
        if "serving" not in skip:
            results["serving"] = _phase(results, "serving", serving, plane, work, data_root)
    finally:
        plane.down()
    if "node" not in skip:  # a plane of its own with the real node (one node per machine)
        log("serving on the real node (chart, MapServer and MapCache pods)")
        results["node"] = _phase(results, "node", node_bench.standalone)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "results.json"
    dump(out, results)
    plot(out)
    print_table(verdicts(results))
    print(f"\nwrote {out} and {RESULTS / 'reconcile.png'}; logs in {work}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
