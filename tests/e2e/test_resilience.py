"""What real pods and real probes guarantee: a mapfile MapServer cannot load never takes down the
serving pods, a rollout drops no request, a deleted MapServer pod is replaced, a killed operator
pod converges."""

from __future__ import annotations

import threading
import uuid

import httpx
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


def _rolled_out(p, debug_level: int) -> bool:
    """ocean Ready, every MapServer pod of the new template ready and no old one left (not even
    one still draining)."""
    if not ready(svc := p.get("mapservice", "ocean")):
        return False
    if svc["status"].get("observedGeneration") != svc["metadata"]["generation"]:
        return False
    pods = _mapserver_pods(p)
    want = str(debug_level)
    return bool(pods) and all(
        _pod_ready(x)
        and not x["metadata"].get("deletionTimestamp")
        and {e["name"]: e.get("value") for e in x["spec"]["containers"][0]["env"]}["MS_DEBUGLEVEL"] == want
        for x in pods
    )


def test_a_rollout_drops_no_request(examples):
    """Requests keep coming, each on a new connection as OWSLib makes them, while a MapService
    change rolls its MapServer pods there and back: every one is answered. A replaced pod serves
    on until the Service no longer sends it any (preStop), then Apache stops gracefully (the
    image's STOPSIGNAL), answering what it took."""
    p = examples
    url = p.service_url("ocean")
    params = {"SERVICE": "WMS", "VERSION": "1.3.0", "REQUEST": "GetCapabilities"}
    answers: list[object] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                r = httpx.get(url, params=params, timeout=60)
                answers.append(r.status_code if "WMS_Capabilities" in r.text else r.text[:200])
            except httpx.HTTPError as e:
                answers.append(repr(e))
            stop.wait(0.1)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        for level in (1, 0):  # each a new pod template: a rollout of both replicas
            p.k.run("patch", "mapservice", "ocean", "-n", p.namespace, "--type=merge",
                    "-p", f'{{"spec":{{"mapserver":{{"debugLevel":{level}}}}}}}')  # fmt: skip
            what = f"ocean rolled out (debugLevel {level})"
            wait_until(lambda lv=level: _rolled_out(p, lv), what, timeout=300)
    finally:
        stop.set()
        worker.join(timeout=120)
        p.k.run("patch", "mapservice", "ocean", "-n", p.namespace, "--type=merge",
                "-p", '{"spec":{"mapserver":{"debugLevel":0}}}')  # fmt: skip
    failed = [a for a in answers if a != 200]
    assert len(answers) >= 20, answers
    assert not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:5]}"


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
    wms = WebMapService(p.service_url("ocean"), version="1.3.0", timeout=60)
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
