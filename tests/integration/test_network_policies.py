"""The NetworkPolicies and default resources of the pods the operator creates, on the real cluster:
each policy selects exactly its pods (the apiserver evaluates the selectors), admits their
container port only, goes away when the spec turns it off; a MapJob's pod gets its own policy,
owned by the MapJob; `kubectl explain` documents the defaults.

(The real node's plain CNI bridge does not enforce NetworkPolicy: what is checked here is what an
enforcing network plugin would be given.)"""

from __future__ import annotations

import subprocess

import pytest
from kubernetes import client

from tests.helpers import (
    FAST_PROBES,
    create_cr,
    get_cr,
    hack_module,
    make_data_volume,
    patch_cr,
    wait_condition,
    wait_until,
)

POLICY = "app.kubernetes.io/managed-by=kube-mapserver-operator,app.kubernetes.io/component=network-policy"


@pytest.fixture
def ns(cluster, namespace, operator_process, data_root):
    make_data_volume(cluster.api, namespace, data_root)
    return namespace


def _dataset(name: str) -> dict:
    return {
        "apiVersion": "maps.kube-mapserver.io/v1alpha1",
        "kind": "MapDataset",
        "metadata": {"name": name, "labels": {"collection": "netpol"}},
        "spec": {
            "type": "raster",
            "source": {"path": "ocean/sst-sample.tif"},
            "identifier": name,
            "title": name,
        },
    }


def _policies(api, ns: str) -> dict[str, dict]:
    items = client.NetworkingV1Api(api).list_namespaced_network_policy(ns, label_selector=POLICY).items
    return {p.metadata.name: api.sanitize_for_serialization(p) for p in items}


def _selected_pods(api, ns: str, policy: dict) -> list:
    labels = policy["spec"]["podSelector"]["matchLabels"]
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=selector).items


def test_service_pods_get_their_policies_and_lose_them_when_turned_off(cluster, ns):
    create_cr(cluster.api, ns, _dataset("sst"))
    create_cr(
        cluster.api,
        ns,
        {
            "apiVersion": "maps.kube-mapserver.io/v1alpha1",
            "kind": "MapService",
            "metadata": {"name": "svc"},
            "spec": {
                "datasetSelector": {"matchLabels": {"collection": "netpol"}},
                "probes": FAST_PROBES,
                "tileCache": {},
            },
        },
    )
    wait_condition(cluster.api, ns, "MapService", "svc", "Ready", "True", timeout=240)

    def both() -> dict | None:
        found = _policies(cluster.api, ns)
        return found if set(found) == {"svc", "svc-tiles"} else None

    policies = wait_until(both, "the MapServer and tile-cache policies", timeout=120)
    apps = client.AppsV1Api(cluster.api)
    for name, deployment in (("svc", "svc"), ("svc-tiles", "svc-tiles")):
        policy = policies[name]
        pods = wait_until(
            lambda p=policy: _selected_pods(cluster.api, ns, p), f"pods selected by {name}", 120
        )
        owners = {o.name.rsplit("-", 1)[0] for pod in pods for o in pod.metadata.owner_references}
        assert owners == {deployment}, (name, owners)  # its own Deployment's pods (ReplicaSet name-hash)
        ports = {p.container_port for pod in pods for c in pod.spec.containers for p in c.ports}
        assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == ports == {8080}
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert policy["metadata"]["ownerReferences"][0]["name"] == "svc"
        # and the default requests/limits reached the pods
        spec = apps.read_namespaced_deployment(deployment, ns).spec.template.spec
        assert spec.containers[0].resources.requests and spec.containers[0].resources.limits
    # the tile cache reaches only this service's MapServer pods (and DNS)
    to = [peer for rule in policies["svc-tiles"]["spec"]["egress"] for peer in rule.get("to") or []]
    assert to == [{"podSelector": policies["svc"]["spec"]["podSelector"]}]
    assert not policies["svc"]["spec"].get("egress")  # (an empty list comes back as no field)

    patch_cr(cluster.api, ns, "MapService", "svc", {"spec": {"networkPolicy": {"enabled": False}}})
    wait_until(lambda: not _policies(cluster.api, ns), "policies removed when turned off", timeout=120)


def test_a_job_pod_gets_a_policy_owned_by_its_mapjob(cluster, ns):
    create_cr(cluster.api, ns, _dataset("sst-job"))
    wait_condition(cluster.api, ns, "MapDataset", "sst-job", "Ready", "True", timeout=120)
    job = {
        "apiVersion": "maps.kube-mapserver.io/v1alpha1",
        "kind": "MapJob",
        "metadata": {"name": "rehash-1"},
        "spec": {
            "type": "rehash",
            "rehash": {"datasets": ["sst-job"]},
            "data": {"persistentVolumeClaim": "map-data"},
        },
    }
    created = create_cr(cluster.api, ns, job)
    net = client.NetworkingV1Api(cluster.api)
    found = wait_until(
        lambda: net.list_namespaced_network_policy(ns, field_selector="metadata.name=rehash-1").items,
        "the job's policy",
        timeout=120,
    )
    policy = cluster.api.sanitize_for_serialization(found[0])
    assert policy["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert not policy["spec"].get("ingress") and not policy["spec"].get("egress")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    wait_until(
        lambda: (
            (get_cr(cluster.api, ns, "MapJob", "rehash-1").get("status") or {}).get("phase") == "Succeeded"
        ),
        "the rehash job succeeds with its pod confined",
        timeout=240,
    )
    pods = _selected_pods(cluster.api, ns, policy)
    assert pods and all(p.metadata.labels.get("app.kubernetes.io/instance") == "rehash-1" for p in pods)


def test_kubectl_explain_documents_the_defaults(cluster, crds):
    kubectl = str(hack_module("cluster").binaries()["kubectl"])

    def explain(field: str) -> str:
        return subprocess.run(
            [kubectl, f"--kubeconfig={cluster.kubeconfig}", "explain", field],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

    out = explain("mapservices.spec.resources")
    assert "requests cpu 50m" in " ".join(out.split()), out
    out = explain("mapservices.spec.networkPolicy")
    assert "allowFrom" in out and "enabled" in out, out
