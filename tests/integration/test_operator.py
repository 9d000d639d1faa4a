"""The operator against the real control plane: examples to Ready, re-renders, drift repair,
finalizers, bad input, restarts and watch reconnects."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from pathlib import Path

import httpx
import mapscript
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kms_operator.builders import mapfile_from_configmap
from tests.helpers import (
    FAST_PROBES,
    condition,
    create_cr,
    delete_cr,
    get_cr,
    load_yaml_docs,
    make_data_volume,
    patch_cr,
    wait_condition,
    wait_until,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MANAGED = "app.kubernetes.io/managed-by=kube-mapserver-operator"


@pytest.fixture
def ns(cluster, namespace, operator_process, data_root):
    make_data_volume(cluster.api, namespace, data_root)
    return namespace


def example(name: str) -> dict:
    return load_yaml_docs(EXAMPLES / name)[0]


def dataset(name: str, path: str = "ocean/sst-sample.tif", labels: dict | None = None, **spec) -> dict:
    body = {
        "apiVersion": "maps.kube-mapserver.io/v1alpha1",
        "kind": "MapDataset",
        "metadata": {"name": name, "labels": labels or {"collection": "ocean"}},
        "spec": {"type": "raster", "source": {"path": path}, "identifier": f"test:{name}", "title": name},
    }
    body["spec"].update(spec)
    return body


def service(name: str, selector: dict, **spec) -> dict:
    return {
        "apiVersion": "maps.kube-mapserver.io/v1alpha1",
        "kind": "MapService",
        "metadata": {"name": name},
        "spec": {"datasetSelector": {"matchLabels": selector}, "replicas": 1, "probes": FAST_PROBES, **spec},
    }


def mapfile_of(api, ns: str, svc: str) -> str:
    obj = get_cr(api, ns, "MapService", svc)
    cm = client.CoreV1Api(api).read_namespaced_config_map(obj["status"]["configMap"], ns)
    return mapfile_from_configmap(cm.data, cm.binary_data)


def children(api, ns: str, svc: str) -> dict[str, list[str]]:
    sel = f"app.kubernetes.io/instance={svc},{MANAGED}"
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    return {
        "configmaps": [
            c.metadata.name for c in core.list_namespaced_config_map(ns, label_selector=sel).items
        ],
        "deployments": [
            d.metadata.name for d in apps.list_namespaced_deployment(ns, label_selector=sel).items
        ],
        "services": [s.metadata.name for s in core.list_namespaced_service(ns, label_selector=sel).items],
        "pdbs": [
            p.metadata.name
            for p in client.PolicyV1Api(api)
            .list_namespaced_pod_disruption_budget(ns, label_selector=sel)
            .items
        ],
    }


def settled(api, ns: str, svc: str) -> dict:
    """Wait until the service is Ready and its Deployment fully rolled out (its MapServer pods
    really run: started, mapfile checked, ready); return resourceVersions."""
    wait_condition(api, ns, "MapService", svc, timeout=180)
    apps = client.AppsV1Api(api)

    def rolled():
        d = apps.read_namespaced_deployment(svc, ns)
        st = d.status
        return st.observed_generation == d.metadata.generation and (st.replicas or 0) == d.spec.replicas == (
            st.ready_replicas or 0
        ) == (st.updated_replicas or 0)

    wait_until(rolled, f"deployment {svc} rolled out", timeout=180)
    time.sleep(1.5)  # let trailing status events drain through the debouncer
    return resource_versions(api, ns, svc)


def resource_versions(api, ns: str, svc: str) -> dict[str, str]:
    out = {}
    obj = get_cr(api, ns, "MapService", svc)
    out["mapservice"] = obj["metadata"]["resourceVersion"]
    for d in obj["status"].get("datasets") or []:
        out[f"dataset/{d}"] = get_cr(api, ns, "MapDataset", d)["metadata"]["resourceVersion"]
    out["deployment"] = client.AppsV1Api(api).read_namespaced_deployment(svc, ns).metadata.resource_version
    out["service"] = client.CoreV1Api(api).read_namespaced_service(svc, ns).metadata.resource_version
    out["configmap"] = (
        client.CoreV1Api(api)
        .read_namespaced_config_map(obj["status"]["configMap"], ns)
        .metadata.resource_version
    )
    return out


def test_examples_become_ready_and_mapfile_loads(cluster, ns, data_root, capsys):
    t0 = time.monotonic()
    for name in ("raster-dataset.yaml", "vector-dataset.yaml", "service.yaml"):
        create_cr(cluster.api, ns, example(name))
    svc = wait_condition(cluster.api, ns, "MapService", "ocean", timeout=180)
    elapsed = time.monotonic() - t0
    with capsys.disabled():
        print(f"\n[measure] examples applied -> MapService Ready: {elapsed:.2f}s")

    assert svc["status"]["datasetCount"] == 2
    assert svc["status"]["readyReplicas"] == 2
    for ds in ("sst-sample", "zones-sample"):
        d = wait_condition(cluster.api, ns, "MapDataset", ds)
        assert d["status"]["servedBy"] == ["ocean"]
        assert d["status"]["wgs84Bbox"]
    text = mapfile_of(cluster.api, ns, "ocean")
    m = mapscript.fromstring(text.replace('"/data/', f'"{data_root}/'))
    assert m.numlayers == 2
    assert {m.getLayer(i).name for i in range(2)} == {"kms_sst-sample", "kms_zones-sample"}

    dep = client.AppsV1Api(cluster.api).read_namespaced_deployment("ocean", ns)
    vols = {v.name: v for v in dep.spec.template.spec.volumes}
    assert vols["config"].config_map.name == svc["status"]["configMap"]
    assert (
        dep.spec.template.metadata.annotations["maps.kube-mapserver.io/mapfile-hash"]
        == svc["status"]["mapfileHash"]
    )
    sc = dep.spec.template.spec.containers[0].security_context
    assert sc.run_as_non_root and sc.read_only_root_filesystem and not sc.allow_privilege_escalation
    assert sc.capabilities.drop == ["ALL"]
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(
        ns, label_selector="app.kubernetes.io/instance=ocean"
    )
    assert sum(p.status.phase == "Running" for p in pods.items) >= 2

    out = subprocess.run(
        [*cluster.kubectl, "-n", ns, "get", "mapdatasets,mapservices"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    header_ds, header_svc = [line for line in out.splitlines() if line.startswith("NAME")]
    for col in ("TYPE", "READY", "AGE", "URL"):
        assert col in header_ds
    for col in ("READY", "REPLICAS", "DATASETS", "AGE"):
        assert col in header_svc
    assert "ocean" in out and "True" in out
    assert children(cluster.api, ns, "ocean")["pdbs"] == ["ocean"]


def test_metrics_endpoint(cluster, ns, operator_process):
    create_cr(cluster.api, ns, dataset("m1"))
    wait_condition(cluster.api, ns, "MapDataset", "m1")
    text = httpx.get(f"http://127.0.0.1:{operator_process.metrics_port}/metrics", timeout=10).text
    for name in ("kms_reconciles_total", "kms_reconcile_duration_seconds", "kms_api_writes_total"):
        assert name in text
    assert 'kms_reconciles_total{kind="MapDataset",result="ok"}' in text


def test_title_edit_rerenders_only_selecting_services(cluster, ns):
    create_cr(cluster.api, ns, dataset("a1", labels={"set": "a"}))
    create_cr(cluster.api, ns, dataset("b1", labels={"set": "b"}))
    create_cr(cluster.api, ns, service("svc-a", {"set": "a"}))
    create_cr(cluster.api, ns, service("svc-b", {"set": "b"}))
    settled(cluster.api, ns, "svc-a")
    before_b = settled(cluster.api, ns, "svc-b")
    hash_a = get_cr(cluster.api, ns, "MapService", "svc-a")["status"]["mapfileHash"]

    patch_cr(cluster.api, ns, "MapDataset", "a1", {"spec": {"title": 'Edited "title" END'}})
    wait_until(
        lambda: get_cr(cluster.api, ns, "MapService", "svc-a")["status"]["mapfileHash"] != hash_a,
        "svc-a mapfile re-rendered",
    )
    after_a = settled(cluster.api, ns, "svc-a")
    dep = client.AppsV1Api(cluster.api).read_namespaced_deployment("svc-a", ns)
    assert dep.spec.template.metadata.annotations["maps.kube-mapserver.io/mapfile-hash"] != hash_a
    m = mapscript.fromstring(mapfile_of(cluster.api, ns, "svc-a"))
    assert m.numlayers == 1 and m.getLayer(0).metadata.get("wms_title") == 'Edited "title" END'
    assert after_a["deployment"]
    assert resource_versions(cluster.api, ns, "svc-b") == before_b, "svc-b was written although unaffected"


def test_restart_is_a_noop_resync(cluster, ns, operator_process):
    create_cr(cluster.api, ns, dataset("r1"))
    create_cr(cluster.api, ns, service("svc", {"collection": "ocean"}))
    before = settled(cluster.api, ns, "svc")
    kids = children(cluster.api, ns, "svc")

    operator_process.restart(kill=True)  # kill -9 mid-run, then the resume handlers re-reconcile all
    time.sleep(4)
    assert resource_versions(cluster.api, ns, "svc") == before, "a resync after restart wrote to the API"
    assert children(cluster.api, ns, "svc") == kids, "restart created duplicate children"


def test_deleted_children_are_restored(cluster, ns):
    create_cr(cluster.api, ns, dataset("d1"))
    create_cr(cluster.api, ns, service("svc", {"collection": "ocean"}))
    settled(cluster.api, ns, "svc")
    obj = get_cr(cluster.api, ns, "MapService", "svc")
    apps, core = client.AppsV1Api(cluster.api), client.CoreV1Api(cluster.api)

    apps.delete_namespaced_deployment("svc", ns)
    wait_until(lambda: apps.read_namespaced_deployment("svc", ns).metadata.uid, "Deployment restored")
    core.delete_namespaced_config_map(obj["status"]["configMap"], ns)
    wait_until(lambda: core.read_namespaced_config_map(obj["status"]["configMap"], ns), "ConfigMap restored")
    # a hand edit of a field we own is reverted
    apps.patch_namespaced_deployment("svc", ns, {"spec": {"replicas": 3}})
    wait_until(
        lambda: apps.read_namespaced_deployment("svc", ns).spec.replicas == 1, "replicas drift repaired"
    )


def test_deleting_service_removes_all_children(cluster, ns):
    create_cr(cluster.api, ns, dataset("d1"))
    create_cr(
        cluster.api, ns, service("svc", {"collection": "ocean"}, podDisruptionBudget={"minAvailable": 1})
    )
    settled(cluster.api, ns, "svc")
    assert all(children(cluster.api, ns, "svc").values())
    delete_cr(cluster.api, ns, "MapService", "svc")
    wait_until(
        lambda: get_cr(cluster.api, ns, "MapService", "svc") is None, "MapService gone (finalizer released)"
    )
    assert not any(children(cluster.api, ns, "svc").values())
    wait_until(
        lambda: get_cr(cluster.api, ns, "MapDataset", "d1")["status"].get("servedBy") == [],
        "dataset no longer lists the deleted service",
    )


def test_deleting_dataset_takes_it_out_of_the_mapfile_first(cluster, ns):
    create_cr(cluster.api, ns, dataset("keep"))
    create_cr(cluster.api, ns, dataset("drop"))
    create_cr(cluster.api, ns, service("svc", {"collection": "ocean"}))
    wait_until(
        lambda: get_cr(cluster.api, ns, "MapService", "svc")["status"].get("datasetCount") == 2, "2 layers"
    )
    delete_cr(cluster.api, ns, "MapDataset", "drop")
    wait_until(lambda: get_cr(cluster.api, ns, "MapDataset", "drop") is None, "dataset gone")
    status = get_cr(cluster.api, ns, "MapService", "svc")["status"]
    assert status["datasets"] == ["keep"], "the finalizer was released before the service dropped the layer"


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda b: b["spec"].update(type="mesh"), "spec.type"),
        (lambda b: b["spec"].pop("source"), "spec.source"),
        (
            lambda b: b["spec"].update(source={"path": "a.tif", "url": "https://x.org/a.tif"}),
            "exactly one of",
        ),
        (lambda b: b["spec"].update(source={"path": "../../etc/passwd"}), "no '..' segments"),
        (lambda b: b["spec"].update(protocols=["WFS"]), "WFS serves vectors only"),
        (lambda b: b["spec"].update(title='x"\nEND\nINCLUDE "/etc/passwd"'), "spec.title"),
        (lambda b: b["spec"].update(style={"classes": 3, "minClasses": 5}), "at least style.minClasses"),
    ],
    ids=[
        "bad-enum",
        "missing-source",
        "path-and-url",
        "traversal",
        "wfs-on-raster",
        "newline-title",
        "min-classes",
    ],
)
def test_invalid_datasets_are_rejected_by_the_apiserver(cluster, namespace, crds, mutate, expect):
    body = dataset("bad")
    mutate(body)
    with pytest.raises(ApiException) as e:
        create_cr(cluster.api, namespace, body)
    assert e.value.status == 422
    assert expect in json.loads(e.value.body)["message"]


def test_invalid_service_rejected(cluster, namespace, crds):
    body = service("bad", {}, autoscaling={"minReplicas": 5, "maxReplicas": 2})
    with pytest.raises(ApiException) as e:
        create_cr(cluster.api, namespace, body)
    assert e.value.status == 422 and "minReplicas must not exceed maxReplicas" in e.value.body


def test_bad_sources_are_not_ready_and_do_not_break_the_service(cluster, ns, data_root):
    outside = data_root.parent / f"outside-{ns}.tif"
    outside.write_bytes((data_root / "ocean" / "sst-sample.tif").read_bytes())
    link = data_root / f"link-{ns}.tif"
    link.symlink_to(outside)
    (data_root / f"garbage-{ns}.tif").write_text("not a raster")
    create_cr(cluster.api, ns, dataset("good", title='Good "one" END\\'))
    create_cr(cluster.api, ns, dataset("missing", path="ocean/nope.tif"))
    create_cr(cluster.api, ns, dataset("escape", path=f"link-{ns}.tif"))
    create_cr(cluster.api, ns, dataset("garbage", path=f"garbage-{ns}.tif"))
    create_cr(cluster.api, ns, service("svc", {"collection": "ocean"}))

    wait_condition(cluster.api, ns, "MapDataset", "missing", status="False", reason="SourceNotFound")
    wait_condition(cluster.api, ns, "MapDataset", "escape", status="False", reason="SourceOutsideDataRoot")
    wait_condition(cluster.api, ns, "MapDataset", "garbage", status="False", reason="SourceUnreadable")
    svc = wait_condition(cluster.api, ns, "MapService", "svc", type_="Degraded", reason="DatasetsExcluded")
    assert svc["status"]["datasets"] == ["good"]
    assert "missing (SourceNotFound)" in condition(svc, "Degraded")["message"]
    m = mapscript.fromstring(mapfile_of(cluster.api, ns, "svc"))
    assert m.numlayers == 1 and m.getLayer(0).metadata.get("wms_title") == 'Good "one" END\\'
    events = client.CoreV1Api(cluster.api).list_namespaced_event(
        ns, field_selector="involvedObject.name=missing"
    )
    assert any(e.reason == "SourceNotFound" and e.type == "Warning" for e in events.items)

    # fixing the source heals the dataset and the service picks it up
    patch_cr(cluster.api, ns, "MapDataset", "missing", {"spec": {"source": {"path": "ocean/sst-sample.tif"}}})
    wait_until(
        lambda: get_cr(cluster.api, ns, "MapService", "svc")["status"]["datasets"] == ["good", "missing"],
        "healed dataset served",
    )


def test_change_seen_after_apiserver_closed_the_watch(cluster, ns):
    """The session operator's watches are closed by the apiserver every 5 s (server timeout)."""
    create_cr(cluster.api, ns, dataset("w1"))
    create_cr(cluster.api, ns, service("svc", {"collection": "ocean"}))
    settled(cluster.api, ns, "svc")
    time.sleep(12)  # more than two watch lifetimes
    create_cr(cluster.api, ns, dataset("w2"))
    wait_until(
        lambda: get_cr(cluster.api, ns, "MapService", "svc")["status"]["datasetCount"] == 2,
        "the new dataset seen through a re-established watch",
        timeout=30,
    )


def test_optional_children_follow_the_spec(cluster, ns):
    body = service(
        "svc",
        {"collection": "ocean"},
        ingress={"className": "nginx", "host": "maps.example.org", "path": "/ocean"},
        autoscaling={"minReplicas": 1, "maxReplicas": 3},
    )
    create_cr(cluster.api, ns, copy.deepcopy(body))
    net = client.NetworkingV1Api(cluster.api)
    hpa = client.AutoscalingV2Api(cluster.api)
    wait_until(lambda: net.read_namespaced_ingress("svc", ns), "Ingress created")
    wait_until(lambda: hpa.read_namespaced_horizontal_pod_autoscaler("svc", ns), "HPA created")
    wait_until(
        lambda: (
            (get_cr(cluster.api, ns, "MapService", "svc").get("status") or {}).get("url")
            == "http://maps.example.org/ocean/"
        ),
        "status.url from the ingress",
    )
    patch_cr(cluster.api, ns, "MapService", "svc", {"spec": {"ingress": None, "autoscaling": None}})

    def gone():
        try:
            net.read_namespaced_ingress("svc", ns)
            return False
        except ApiException as e:
            return e.status == 404

    wait_until(gone, "Ingress removed when dropped from the spec")
    assert not hpa.list_namespaced_horizontal_pod_autoscaler(ns).items
