"""What real pods and real probes guarantee: a mapfile MapServer cannot load never takes down the
serving pods, a deleted MapServer pod is replaced, a killed operator pod converges."""

from __future__ import annotations

import uuid

import httpx
import requests
from owslib.wms import WebMapService

from tests.e2e.conftest import ready
from tests.helpers import wait_until
from tests.pixels import drawn


def _serves(url: str) -> bool:
    r = httpx.get(
        url, params={"SERVICE": "WMS", "VERSION": "1.3.0", "REQUEST": "GetCapabilities"}, timeout=10
    )
    return r.status_code == 200 and "WMS_Capabilities" in r.text


def _getmap(url: str) -> bytes:
    wms = WebMapService(url, version="1.3.0", timeout=60)
    return wms.getmap(layers=["kms_sst-sample"], styles=[""], srs="EPSG:4326", bbox=(-180, -90, 180, 90),
                      size=(180, 90), format="image/png", transparent=True).read()  # fmt: skip


def _mapserver_pods(p) -> list[dict]:
    return p.pods("app.kubernetes.io/instance=ocean,app.kubernetes.io/component=mapserver")


def _pod_ready(pod: dict) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (pod.get("status") or {}).get("conditions", [])
    )


def _init_failed(pod: dict) -> bool:
    """The pod's mapfile check (init container) exited non-zero, now or before a restart."""
    for st in (pod.get("status") or {}).get("initContainerStatuses") or []:
        for state in (st.get("state") or {}, st.get("lastState") or {}):
            if (state.get("terminated") or {}).get("exitCode", 0) != 0:
                return True
    return False


def test_a_mapfile_mapserver_cannot_load_never_takes_down_the_serving_pods(examples):
    p = examples
    url = p.service_url("ocean")
    before = {pod["metadata"]["name"] for pod in _mapserver_pods(p) if _pod_ready(pod)}
    deploy_gen = p.get("deployment", "ocean")["metadata"]["generation"]
    # an EPSG code PROJ does not know: the mapfile is valid syntax, MapServer refuses to load it
    p.k.run("patch", "mapdataset", "zones-sample", "-n", p.namespace, "--type=merge",
            "-p", '{"spec":{"projection":"EPSG:999999"}}')  # fmt: skip
    try:
        # the new pod's mapfile check (its init container runs the real mapserv) fails
        failed = wait_until(
            lambda: [x for x in _mapserver_pods(p) if _init_failed(x)],
            "a new MapServer pod failing its mapfile check",
            timeout=180,
        )[0]
        assert p.get("deployment", "ocean")["metadata"]["generation"] > deploy_gen
        log = p.k.run("logs", "-n", p.namespace, failed["metadata"]["name"], "-c", "check-mapfile").stdout
        assert "msProcessProjection" in log, log[-500:]
        # while it fails, the old pods keep serving
        for _ in range(10):
            assert _serves(url)
        drawn(_getmap(url), 0.9)
        running = {pod["metadata"]["name"] for pod in _mapserver_pods(p) if _pod_ready(pod)}
        assert before <= running, f"a serving pod was removed: before {before}, ready now {running}"
    finally:
        p.k.run("patch", "mapdataset", "zones-sample", "-n", p.namespace, "--type=json",
                "-p", '[{"op":"remove","path":"/spec/projection"}]')  # fmt: skip
    wait_until(
        lambda: (
            ready(p.get("mapservice", "ocean"))
            and (d := p.get("deployment", "ocean")["status"]).get("updatedReplicas") == d.get("replicas")
            and d.get("readyReplicas") == d.get("replicas")
            and not [x for x in _mapserver_pods(p) if not _pod_ready(x)]
        ),
        "the rollout back to a good mapfile",
        timeout=240,
    )
    assert _serves(url)


def test_a_deleted_mapserver_pod_is_replaced_and_serving_again(examples):
    p = examples
    replicas = p.get("deployment", "ocean")["spec"]["replicas"]
    victim = next(x for x in _mapserver_pods(p) if _pod_ready(x))["metadata"]["name"]
    p.k.run("delete", "pod", victim, "-n", p.namespace, "--wait=true")
    wait_until(
        lambda: (
            len([x for x in _mapserver_pods(p) if _pod_ready(x) and x["metadata"]["name"] != victim])
            >= replicas
        ),
        "a replacement MapServer pod Ready",
        timeout=180,
    )
    url = p.service_url("ocean")
    for _ in range(5):
        assert _serves(url)
    drawn(_getmap(url), 0.9)


def _capabilities(url: str) -> WebMapService | None:
    """The WMS capabilities, or None while a connection is reset: a MapServer pod that a finished
    rollout replaced may still get a connection for a moment while kube-proxy drops it."""
    try:
        return WebMapService(url, version="1.3.0", timeout=60)
    except requests.ConnectionError:
        return None


def test_the_operator_pod_killed_mid_change_converges_without_duplicates(examples):
    p = examples
    names = [f"burst-{uuid.uuid4().hex[:5]}-{i}" for i in range(6)]
    datasets = [
        {
            "apiVersion": "maps.kube-mapserver.io/v1alpha1",
            "kind": "MapDataset",
            "metadata": {"name": n, "namespace": p.namespace, "labels": {"collection": "ocean"}},
            "spec": {
                "type": "raster",
                "source": {"path": "ocean/sst-sample.tif"},
                "identifier": f"kms:{n}",
                "title": n,
                "style": {"colorRamp": "viridis", "classes": 4},
                "protocols": ["WMS"],
            },
        }
        for n in names
    ]
    op = p.pods("app.kubernetes.io/component=operator")
    assert len(op) == 1
    p.k.apply(datasets)
    p.k.run("delete", "pod", op[0]["metadata"]["name"], "-n", p.namespace, "--grace-period=0", "--force")
    wait_until(
        lambda: all(ready(p.get("mapdataset", n)) for n in names), "the burst datasets Ready", timeout=300
    )
    wait_until(
        lambda: (
            ready(svc := p.get("mapservice", "ocean"))
            and svc["status"].get("observedGeneration") == svc["metadata"]["generation"]
            and set(names) <= set(svc["status"].get("datasets", []))
        ),
        "ocean serving the burst",
        timeout=300,
    )
    wms = wait_until(lambda: _capabilities(p.service_url("ocean")), "ocean's WMS capabilities", timeout=120)
    layers = list(wms.contents)
    assert len(layers) == len(set(layers)), "a layer is listed twice"
    cms = p.k.json("get", "configmaps", "-n", p.namespace, "-l", "app.kubernetes.io/instance=ocean")["items"]
    live = p.get("deployment", "ocean")["spec"]["template"]["spec"]["volumes"]
    assert len({c["metadata"]["name"] for c in cms}) == len(cms)
    jobs = p.k.json("get", "jobs", "-n", p.namespace)["items"]
    owners = [
        j["metadata"]["ownerReferences"][0]["name"] for j in jobs if j["metadata"].get("ownerReferences")
    ]
    assert len(owners) == len(set(owners)), f"a MapJob got two Jobs: {owners}"
    assert live
    p.k.run("delete", "mapdataset", *names, "-n", p.namespace, "--wait=true", "--timeout=180s")
