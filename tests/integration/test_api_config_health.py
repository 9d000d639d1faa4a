"""Config persisted in the cluster (across a facade restart) and a health report that mirrors the
MapServices and answers when the apiserver hangs (how fast it answers then is a `make bench`
figure: bench/api_bench.py)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
import yaml
from kubernetes import client

from tests.helpers import FAST_PROBES, condition, create_cr, wait_condition, wait_until


def test_config_update_is_validated_persisted_and_survives_a_restart(cluster, facade_factory):
    fac = facade_factory(KMS_MAX_UPLOAD_MB="64", KMS_CACHE_SEED_MAX_ZOOM="not-a-number")
    cfg = httpx.get(f"{fac.url}/config", timeout=10).json()  # public
    assert cfg["maxUploadMb"] == 64  # environment over defaults
    assert cfg["cacheSeedMaxZoom"] == 12  # an invalid environment value is ignored
    assert set(cfg) >= {
        "maxUploadMb",
        "minColormapClasses",
        "pointQueryPublic",
        "wmsViaTileCache",
        "allowedDataRoots",
        "cacheSeedMaxZoom",
        "cacheSeedMaxTiles",
    }
    with fac.client("admin") as admin:
        r = admin.post(
            "/config", json={"maxUploadMb": 5, "wmsViaTileCache": True, "allowedDataRoots": ["ocean/"]}
        )
        assert r.status_code == 200, r.text
        assert r.json()["maxUploadMb"] == 5 and r.json()["allowedDataRoots"] == ["ocean"]
        r = admin.post("/config", json={"maxUploadMbb": 5})
        assert r.status_code == 422 and r.json()["field"] == "maxUploadMbb"
        r = admin.post("/config", json={"minColormapClasses": 1})
        assert r.status_code == 422 and r.json()["field"] == "minColormapClasses"
        r = admin.post("/config", json={"allowedDataRoots": ["../etc"]})
        assert r.status_code == 422 and r.json()["field"] == "allowedDataRoots"
    cm = client.CoreV1Api(cluster.api).read_namespaced_config_map("kube-mapserver-config", fac.namespace)
    assert json.loads(cm.data["config.json"]) == {
        "allowedDataRoots": ["ocean"],
        "maxUploadMb": 5,
        "wmsViaTileCache": True,
    }

    fac.restart()
    cfg = httpx.get(f"{fac.url}/config", timeout=10).json()
    assert cfg["maxUploadMb"] == 5 and cfg["wmsViaTileCache"] is True  # ConfigMap over environment

    with fac.client("admin") as admin:
        assert admin.post("/config", json={"maxUploadMb": None}).json()["maxUploadMb"] == 64
        r = admin.post("/config/reset")
        assert r.status_code == 200 and r.json()["maxUploadMb"] == 64 and r.json()["wmsViaTileCache"] is False
    assert httpx.get(f"{fac.url}/config", timeout=10).json()["allowedDataRoots"] == []


def test_health_reports_components(cluster, facade_factory, operator_process):
    fac = facade_factory(KMS_OPERATOR_HEALTH_URL=f"http://127.0.0.1:{operator_process.liveness_port}/healthz")
    r = httpx.get(f"{fac.url}/health", timeout=10)
    assert r.status_code == 200
    body = r.json()
    comps = {c["name"]: c for c in body["components"]}
    assert comps["kubernetes"]["status"] == "ok"
    assert comps["operator"]["status"] == "ok"
    assert comps["cache"]["status"] == "ok"
    assert body["status"] == "ok"
    assert "kms_api_requests_total" in httpx.get(f"{fac.url}/metrics", timeout=10).text
    # each MapService shows up with its Ready condition (watched, not listed per request)
    create_cr(
        cluster.api,
        fac.namespace,
        {
            "apiVersion": "maps.kube-mapserver.io/v1alpha1",
            "kind": "MapService",
            "metadata": {"name": "ocean"},
            "spec": {"datasetSelector": {"matchLabels": {"collection": "ocean"}}, "probes": FAST_PROBES},
        },
    )
    # its MapServer pod (no datasets: an empty map) really runs: the service turns Ready
    svc = wait_condition(cluster.api, fac.namespace, "MapService", "ocean", timeout=180)
    ready = condition(svc, "Ready")
    assert ready["reason"] == "Available", ready

    def report_with_ready_service():
        report = httpx.get(f"{fac.url}/health", timeout=10).json()
        comp = next((c for c in report["components"] if c["name"] == "mapservice/ocean"), None)
        return report if comp and comp["detail"].startswith("Available") else None

    report = wait_until(report_with_ready_service, "the Ready MapService in the health report (its watch)")
    comps = {c["name"]: c for c in report["components"]}
    assert comps["mapservice/ocean"]["status"] == "ok", comps
    assert "tilecache/ocean" not in comps  # no tile cache in its spec
    assert report["status"] == "ok", report


@pytest.fixture
def blackhole():
    """A TCP port that accepts connections and never answers (an apiserver that hangs). The socket
    stays bound and listening until the test is over (no port picked, released and hoped for): the
    kernel completes each handshake into the backlog, nobody ever reads or writes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(socket.SOMAXCONN)
        yield s.getsockname()[1]


def test_health_answers_503_when_the_apiserver_hangs(cluster, facade_factory, blackhole, tmp_path):
    cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    for c in cfg["clusters"]:
        c["cluster"]["server"] = f"https://127.0.0.1:{blackhole}"
    broken = tmp_path / "kubeconfig"
    broken.write_text(yaml.safe_dump(cfg))
    fac = facade_factory(
        wait_ready=False,
        users=False,
        KUBECONFIG=str(broken),
        KMS_OPERATOR_HEALTH_URL=f"http://127.0.0.1:{blackhole}/healthz",
    )
    # the blackhole never answers: any answer at all is the facade's own bounded checks giving up
    # (the client's 10 s timeout only catches a hang)
    r = httpx.get(f"{fac.url}/health", timeout=10)
    assert r.status_code == 503
    body = r.json()
    comps = {c["name"]: c for c in body["components"]}
    assert body["status"] == "down", body
    assert comps["kubernetes"]["status"] == "down" and comps["operator"]["status"] == "down", comps
    assert comps["cache"]["status"] == "down", comps  # never listed
    r = httpx.get(f"{fac.url}/datasets", headers={"Authorization": "Bearer x"}, timeout=10)
    assert r.status_code in (401, 503) and r.json()["detail"]
