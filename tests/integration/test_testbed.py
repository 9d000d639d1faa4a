"""The test bed is a real Kubernetes control plane (controllers, scheduler, CRDs) with a real
kubelet node that runs the images built here, plus kwok's fake node, tainted, for the tests that
need thousands of pods (they tolerate the taint)."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.helpers import wait_until

LABELS = {"app": "testbed"}
KWOK_TAINT = ("kwok.x-k8s.io/node", "fake", "NoSchedule")
SECURITY = client.V1SecurityContext(
    run_as_non_root=True,
    run_as_user=65534,
    allow_privilege_escalation=False,
    read_only_root_filesystem=True,
    capabilities=client.V1Capabilities(drop=["ALL"]),
)


def pod_spec(cluster, image: str, restart: str = "Always", **kw) -> client.V1PodSpec:
    """A pod of one of the images on the node (built here: never pulled)."""
    c = client.V1Container(name="main", image=cluster.images[image]["ref"], security_context=SECURITY, **kw)
    return client.V1PodSpec(containers=[c], restart_policy=restart, automount_service_account_token=False)


def test_version_is_pinned_release(cluster):
    info = client.VersionApi(cluster.api).get_code()
    if cluster.local:
        assert info.git_version == "v1.34.4"
        assert (info.major, info.minor) == ("1", "34")


def test_kubectl_get_nodes(cluster):
    out = subprocess.run(
        [*cluster.kubectl, "get", "nodes", "-o", "json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    nodes = json.loads(out.stdout)["items"]
    assert nodes, "no nodes"
    ready = [
        n
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]
    assert ready


def test_deployment_gets_running_pods(cluster, namespace):
    apps = client.AppsV1Api(cluster.api)
    core = client.CoreV1Api(cluster.api)
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=LABELS),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=LABELS), spec=pod_spec(cluster, "pause")
                ),
            ),
        ),
    )

    def running():
        pods = core.list_namespaced_pod(namespace, label_selector="app=testbed").items
        return [p for p in pods if p.status.phase == "Running"] if len(pods) == 2 else None

    pods = wait_until(running, "2 Running pods of the Deployment", timeout=120)
    nodes = {n.metadata.name: n for n in core.list_node().items}
    for p in pods:
        node = nodes[p.spec.node_name]
        assert (node.metadata.labels or {}).get("type") != "kwok", f"{p.metadata.name} on the fake node"
        assert p.status.pod_ip and p.status.container_statuses[0].container_id, "a real container"
    wait_until(
        lambda: apps.read_namespaced_deployment(namespace=namespace, name="web").status.ready_replicas == 2,
        "deployment readyReplicas == 2",
    )


def test_the_fake_node_takes_only_pods_that_tolerate_it(cluster, namespace):
    """kwok's node is tainted: the pods of the product never land there; a pod that tolerates the
    taint and asks for it (as the scale benchmarks do) is scheduled there and marked Running."""
    core = client.CoreV1Api(cluster.api)
    fake = [n for n in core.list_node().items if (n.metadata.labels or {}).get("type") == "kwok"]
    if not fake:
        pytest.skip("this cluster has no kwok node")
    for node in fake:
        taints = {(t.key, t.value, t.effect) for t in node.spec.taints or []}
        assert KWOK_TAINT in taints, f"{node.metadata.name} is not tainted: {taints}"
    spec = pod_spec(cluster, "pause")
    spec.node_selector = {"type": "kwok"}
    spec.tolerations = [client.V1Toleration(key=KWOK_TAINT[0], value=KWOK_TAINT[1], effect=KWOK_TAINT[2])]
    core.create_namespaced_pod(namespace, client.V1Pod(metadata=client.V1ObjectMeta(name="fake"), spec=spec))
    pod = wait_until(
        lambda: (p := core.read_namespaced_pod("fake", namespace)).status.phase == "Running" and p,
        "the tolerating pod Running on the fake node",
    )
    assert pod.spec.node_name in {n.metadata.name for n in fake}


def test_job_succeeds(cluster, namespace):
    batch = client.BatchV1Api(cluster.api)
    batch.create_namespaced_job(
        namespace,
        client.V1Job(
            metadata=client.V1ObjectMeta(name="once"),
            spec=client.V1JobSpec(
                backoff_limit=0,
                template=client.V1PodTemplateSpec(
                    spec=pod_spec(cluster, "debian", restart="Never", command=["true"])
                ),
            ),
        ),
    )
    job = wait_until(
        lambda: (j := batch.read_namespaced_job(namespace=namespace, name="once")).status.succeeded and j,
        "Job succeeded",
        timeout=120,
    )
    conds = {c.type: c.status for c in job.status.conditions or []}
    assert conds.get("Complete") == "True"


def test_owner_deletion_garbage_collects_owned_configmap(cluster, namespace):
    core = client.CoreV1Api(cluster.api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"a": "1"})
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name="owned",
                owner_references=[
                    client.V1OwnerReference(
                        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
                    )
                ],
            ),
            data={"b": "2"},
        ),
    )
    core.delete_namespaced_config_map("owner", namespace)

    def gone():
        try:
            core.read_namespaced_config_map("owned", namespace)
        except ApiException as e:
            return e.status == 404
        return False

    wait_until(gone, "the owned ConfigMap to be garbage-collected")


def test_crd_becomes_established_and_serves_objects(cluster, namespace):
    ext = client.ApiextensionsV1Api(cluster.api)
    group = f"g{uuid.uuid4().hex[:8]}.testbed.kube-mapserver.io"
    name = f"widgets.{group}"
    ext.create_custom_resource_definition(
        client.V1CustomResourceDefinition(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1CustomResourceDefinitionSpec(
                group=group,
                scope="Namespaced",
                names=client.V1CustomResourceDefinitionNames(
                    plural="widgets", singular="widget", kind="Widget"
                ),
                versions=[
                    client.V1CustomResourceDefinitionVersion(
                        name="v1",
                        served=True,
                        storage=True,
                        schema=client.V1CustomResourceValidation(
                            open_apiv3_schema=client.V1JSONSchemaProps(
                                type="object",
                                properties={
                                    "spec": client.V1JSONSchemaProps(
                                        type="object",
                                        properties={"size": client.V1JSONSchemaProps(type="integer")},
                                    )
                                },
                            )
                        ),
                    )
                ],
            ),
        )
    )
    try:

        def established():
            crd = ext.read_custom_resource_definition(name)
            return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

        wait_until(established, f"CRD {name} Established")
        custom = client.CustomObjectsApi(cluster.api)
        body = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }
        wait_until(
            lambda: custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", body),
            "the CR endpoint to accept a Widget",
        )
        got = custom.get_namespaced_custom_object(group, "v1", namespace, "widgets", "w1")
        assert got["spec"] == {"size": 3}
        # the schema is enforced by the real apiserver
        bad = {**body, "metadata": {"name": "w2"}, "spec": {"size": "three"}}
        try:
            custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", bad)
        except ApiException as e:
            assert e.status == 422 and "spec.size" in e.body
        else:
            raise AssertionError("a Widget with a string size was accepted")
    finally:
        ext.delete_custom_resource_definition(name)
