"""Serving on the real node: the product installed by its chart (hack/install.py), MapServer and
MapCache in real pods. Figures:

- GetMap p50 through the MapService's Service (Apache + mod_fcgid) against `mapserv` run as CGI
  directly in the same pod (process start + mapfile parse per request);
- the same for a service with 1,000 datasets, and the other serving design at 1,000 layers: the
  parsed map kept in memory (mapscript, loaded once, one OWS dispatch per request; what the old
  dev server did), measured in-process on this host with the same MapServer 8.0;
- the cached tile p50 through the tile-cache pod (Apache + mod_mapcache). The hand-written tile
  server it replaced (HTTP in front of MapCache FastCGI workers) measured 1.18 ms against the pod's
  0.74 ms with the same configuration on 2026-11-30, and was retired.

    .venv/bin/python -m bench.node_bench [--kubeconfig K] [--requests 100] [--big 1000] [--json out]

Without --kubeconfig it starts its own plane and real node (one node per machine).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import REPO, _load, log, summary

install = _load("kms_bench_install", REPO / "hack" / "install.py")
cluster_mod = sys.modules.get("kms_bench_cluster") or _load("kms_bench_cluster", REPO / "hack" / "cluster.py")
NAMESPACE = "kms-bench"
GETMAP = {
    "SERVICE": "WMS",
    "VERSION": "1.3.0",
    "REQUEST": "GetMap",
    "STYLES": "",
    "CRS": "EPSG:4326",
    "BBOX": "-90,-180,90,180",
    "WIDTH": "256",
    "HEIGHT": "256",
    "FORMAT": "image/png",
    "TRANSPARENT": "TRUE",
}


def _timed_gets(url: str, params: dict, n: int) -> list[float]:
    out = []
    with httpx.Client(timeout=60) as c:
        r = c.get(url, params=params)  # warm-up (connection, first process)
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/"), r.text[:300]
        for _ in range(n):
            t = time.perf_counter()
            r = c.get(url, params=params)
            out.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200
    return out


def _in_pod_cgi(k, pod: str, query: str, n: int) -> list[float]:
    """`mapserv` as CGI inside the pod, timed there (ms per run), output discarded."""
    script = (
        "export MS_MAPFILE=/run/mapserver/service.map REQUEST_METHOD=GET SERVER_NAME=localhost "
        f"SERVER_PORT=8080 SCRIPT_NAME=/ QUERY_STRING='{query}'; "
        f"for i in $(seq {n + 1}); do s=$(date +%s%N); mapserv >/dev/null 2>&1; e=$(date +%s%N); "
        "echo $(( (e - s) / 1000 )); done"
    )
    out = k.run("exec", "-n", NAMESPACE, pod, "-c", "mapserver", "--", "sh", "-c", script).stdout
    return [int(x) / 1000 for x in out.split()][1:]


def _in_memory(mapfile: Path, query: str, n: int) -> list[float]:
    """The parsed map kept in memory (mapscript): load once, one OWS dispatch per request."""
    import mapscript

    m = mapscript.mapObj(str(mapfile))
    out = []
    for _ in range(n + 1):
        req = mapscript.OWSRequest()
        req.loadParamsFromURL(query)
        t = time.perf_counter()
        mapscript.msIO_installStdoutToBuffer()
        m.OWSDispatch(req)
        mapscript.msIO_getStdoutBufferBytes()
        mapscript.msIO_resetHandlers()
        out.append((time.perf_counter() - t) * 1000)
    return out[1:]


def _loads(mapfile: Path, n: int) -> list[float]:
    """Parsing the mapfile (mapscript.mapObj): what CGI and FastCGI MapServer pay per request."""
    import mapscript

    out = []
    for _ in range(n):
        t = time.perf_counter()
        mapscript.mapObj(str(mapfile))
        out.append((time.perf_counter() - t) * 1000)
    return out


def _mapserver_pod(k, service: str) -> str:
    sel = f"app.kubernetes.io/instance={service},app.kubernetes.io/component=mapserver"
    return k.json("get", "pods", "-n", NAMESPACE, "-l", sel)["items"][0]["metadata"]["name"]


def _ready(k, kind: str, name: str) -> bool:
    status = k.json("get", kind, name, "-n", NAMESPACE).get("status") or {}
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))


def _mapfile(k, service: str, dest: Path) -> Path:
    """The live mapfile of a MapService, with /data paths pointing at the bench's data folder."""
    sys.path.insert(0, str(REPO / "operator"))
    from kms_operator.builders import mapfile_from_configmap

    svc = k.json("get", "mapservice", service, "-n", NAMESPACE)
    cm = k.json("get", "configmap", svc["status"]["configMap"], "-n", NAMESPACE)
    text = mapfile_from_configmap(cm.get("data"), cm.get("binaryData"))
    dest.write_text(text.replace('"/data/', f'"{dest.parent / "data"}/'))
    return dest


def serving(k, data: Path, work: Path, n: int) -> dict:
    url = f"http://{install.service_ip(k.kubeconfig, NAMESPACE, 'ocean')}:8080/"
    params = {**GETMAP, "LAYERS": "kms_sst-sample"}
    pod = _mapserver_pod(k, "ocean")
    query = "&".join(f"{a}={b}" for a, b in params.items())
    return {
        "datasets": 2,
        "service_fcgid_ms": summary(_timed_gets(url, params, n)),
        "pod_cgi_ms": summary(_in_pod_cgi(k, pod, query, n)),
        "in_memory_mapscript_ms": summary(_in_memory(_mapfile(k, "ocean", work / "ocean.map"), query, n)),
    }


def big_service(k, n_datasets: int, n: int, work: Path) -> dict:
    """A MapService over n_datasets datasets (the sample raster each), once all are served."""
    docs = [
        {
            "apiVersion": "maps.kube-mapserver.io/v1alpha1",
            "kind": "MapDataset",
            "metadata": {"name": f"b{i:05d}", "namespace": NAMESPACE, "labels": {"collection": "big"}},
            "spec": {
                "type": "raster",
                "source": {"path": "ocean/sst-sample.tif"},
                "identifier": f"b:{i:05d}",
                "title": f"Dataset {i}",
                "style": {"colorRamp": "viridis", "classes": 8, "range": {"min": 0, "max": 30}},
                "protocols": ["WMS"],
            },
        }
        for i in range(n_datasets)
    ]
    svc = {
        "apiVersion": "maps.kube-mapserver.io/v1alpha1",
        "kind": "MapService",
        "metadata": {"name": "big", "namespace": NAMESPACE},
        "spec": {"datasetSelector": {"matchLabels": {"collection": "big"}}, "replicas": 1,
                 "data": {"persistentVolumeClaim": "map-data"}},
    }  # fmt: skip
    t0 = time.monotonic()
    for i in range(0, len(docs), 250):
        k.apply(docs[i : i + 250])
    k.apply([svc])
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        s = (k.json("get", "mapservice", "big", "-n", NAMESPACE).get("status")) or {}
        if (
            s.get("datasetCount") == n_datasets
            and s.get("readyReplicas") == 1
            and any(c["type"] == "Ready" and c["status"] == "True" for c in s.get("conditions", []))
        ):
            break
        time.sleep(2)
    else:
        raise TimeoutError(f"service big did not serve {n_datasets} datasets")
    served_s = time.monotonic() - t0
    log(f"  {n_datasets} datasets served by a real MapServer pod in {served_s:.0f}s")
    url = f"http://{install.service_ip(k.kubeconfig, NAMESPACE, 'big')}:8080/"
    params = {**GETMAP, "LAYERS": "b_00007"}
    pod = _mapserver_pod(k, "big")
    query = "&".join(f"{a}={b}" for a, b in params.items())
    mapfile = _mapfile(k, "big", work / "big.map")
    return {
        "datasets": n_datasets,
        "served_s": round(served_s, 1),
        "service_fcgid_ms": summary(_timed_gets(url, params, n)),
        "pod_cgi_ms": summary(_in_pod_cgi(k, pod, query, max(20, n // 5))),
        "in_memory_mapscript_ms": summary(_in_memory(mapfile, query, n)),
        "mapfile_load_ms": summary(_loads(mapfile, 20)),
    }


def tiles(k, n: int) -> dict:
    """Cached tile p50 through the tile-cache pod (mod_mapcache)."""
    ip = install.service_ip(k.kubeconfig, NAMESPACE, "ocean-tiles")
    path = "gmaps/sst-sample@GoogleMapsCompatible/2/1/1.png"
    return {"tilecache_pod_ms": summary(_timed_gets(f"http://{ip}:8080/{path}", {}, n))}


def _images() -> dict:
    """The images manifest of this tree (built, or found in the cache by their inputs' hash)."""
    import images

    return images.build()


def run(kubeconfig: Path, n: int = 100, big: int = 1000, manifest: dict | None = None) -> dict:
    k = install.Kubectl(kubeconfig)
    work = Path(tempfile.mkdtemp(prefix="kms-node-bench-"))
    data = work / "data"
    _load("kms_bench_samples2", REPO / "hack" / "sample_data.py").write_samples(data)
    install.install(kubeconfig, manifest or _images(), NAMESPACE, data, work / "tile-cache",
                    extra=["--set", f"operator.watchNamespaces={{{NAMESPACE}}}"])  # fmt: skip
    try:
        k.run("apply", "-n", NAMESPACE, "-f", str(REPO / "examples"))
        install.wait("MapService ocean Ready", lambda: _ready(k, "mapservice", "ocean"), 300)
        out = {"serving": serving(k, data, work, n)}
        log(f"  serving: {json.dumps(out['serving'])}")
        out["tiles"] = tiles(k, n)
        log(f"  tiles: {json.dumps(out['tiles'])}")
        if big:
            out["big"] = big_service(k, big, n, work)
            log(f"  big: {json.dumps(out['big'])}")
        return out
    finally:
        install.uninstall(kubeconfig, NAMESPACE, timeout=600)
        shutil.rmtree(work, ignore_errors=True)


def standalone(n: int = 100, big: int = 1000, kubeconfig: Path | None = None) -> dict:
    """run() on `kubeconfig`, or on a plane and real node of its own (started and stopped here)."""
    node_mod = _load("kms_bench_node", REPO / "hack" / "node.py")
    plane = node = manifest = None
    if not kubeconfig:
        manifest = _images()  # this tree's images, imported by the node it starts
        work = Path(tempfile.mkdtemp(prefix="kms-node-plane-"))
        plane, node = cluster_mod.Plane(work / "plane"), node_mod.Node(work / "node")
        cluster_mod.up(plane, port=None, timeout=120, real_node=True)
        try:
            node_mod.up(node, plane, manifest)
        except BaseException:
            node_mod.down(node)
            cluster_mod.down(plane)
            raise
        kubeconfig = plane.kubeconfig
    try:
        for crd in sorted((REPO / "crds").glob("*.yaml")):
            install.Kubectl(kubeconfig).run("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        return run(kubeconfig, n, big, manifest)
    finally:
        if node:
            node_mod.down(node)
            cluster_mod.down(plane)


def verdict_rows(r: dict) -> list[tuple[str, str, str, bool | None]]:
    """Rows for bench.run's table: figures and ratios of the serving designs."""
    s, t = r["serving"], r["tiles"]
    rows = [
        (
            "GetMap p50: Service (mod_fcgid) / mapserv CGI in the pod",
            f"{s['service_fcgid_ms']['p50']:.1f} / {s['pod_cgi_ms']['p50']:.1f} ms",
            "ratio",
            None,
        ),
        (
            "cached tile p50: tile-cache pod (mod_mapcache)",
            f"{t['tilecache_pod_ms']['p50']:.2f} ms",
            "figure",
            None,
        ),
    ]
    if r.get("big"):
        b = r["big"]
        rows.append(
            (
                f"GetMap p50 at {b['datasets']} layers: Service / in-pod CGI / in-memory mapscript"
                " (mapfile parse)",
                f"{b['service_fcgid_ms']['p50']:.1f} / {b['pod_cgi_ms']['p50']:.1f} / "
                f"{b['in_memory_mapscript_ms']['p50']:.1f} ms "
                f"({b.get('mapfile_load_ms', {}).get('p50', 0):.1f} ms)",
                "ratio",
                None,
            )
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", type=Path)
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--big", type=int, default=1000)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    result = standalone(a.requests, a.big, a.kubeconfig)
    print(json.dumps(result, indent=2))
    for row in verdict_rows(result):
        print(" | ".join(str(x) for x in row))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "hack"))
    sys.exit(main())
