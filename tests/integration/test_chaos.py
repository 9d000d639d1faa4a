"""Faults, for real: the operator killed with SIGKILL again and again mid-reconcile, the apiserver
and etcd restarted, a namespace deleted under running work, a second operator started by mistake.
Each test prints the figures it survived."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time

import pytest
from kubernetes import client

from tests.conftest import REPO, cluster_mod
from tests.helpers import FAST_PROBES, create_cr, get_cr, make_data_volume, patch_cr, wait_until

pytestmark = pytest.mark.chaos
MANAGED = "app.kubernetes.io/managed-by=kube-mapserver-operator"


def ds(name: str, group: str) -> dict:
    return {
        "apiVersion": "maps.kube-mapserver.io/v1alpha1",
        "kind": "MapDataset",
        "metadata": {"name": name, "labels": {"group": group}},
        "spec": {
            "type": "raster",
            "source": {"path": "ocean/sst-sample.tif"},
            "identifier": f"c:{name}",
            "title": f"Chaos {name}",
        },
    }


def svc(name: str, group: str, replicas: int = 1) -> dict:
    return {
        "apiVersion": "maps.kube-mapserver.io/v1alpha1",
        "kind": "MapService",
        "metadata": {"name": name},
        "spec": {
            "datasetSelector": {"matchLabels": {"group": group}},
            "replicas": replicas,
            "probes": FAST_PROBES,
        },
    }


def all_ready(api, ns: str, plural: str) -> list[dict]:
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(
        "maps.kube-mapserver.io", "v1alpha1", ns, plural
    )["items"]
    return [
        o
        for o in items
        if any(
            c["type"] == "Ready"
            and c["status"] == "True"
            and c.get("observedGeneration") == o["metadata"]["generation"]
            for c in (o.get("status") or {}).get("conditions") or []
        )
    ]


def converged(api, ns: str, services: dict[str, int]) -> bool:
    """Every service Ready with its datasets, and exactly its children: 1 Deployment, 1 Service, 1 mapfile."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    for name, count in services.items():
        s = get_cr(api, ns, "MapService", name)
        st = (s or {}).get("status") or {}
        if st.get("datasetCount") != count or st.get("observedGeneration") != s["metadata"]["generation"]:
            return False
        sel = f"app.kubernetes.io/instance={name},{MANAGED}"
        if len(apps.list_namespaced_deployment(ns, label_selector=sel).items) != 1:
            return False
        if len(core.list_namespaced_service(ns, label_selector=sel).items) != 1:
            return False
        cms = core.list_namespaced_config_map(ns, label_selector=sel).items
        if [c.metadata.name for c in cms] != [st.get("configMap")]:
            return False
    return True


def test_operator_killed_20_times_converges(cluster, namespace, operator_process, data_root, capsys):
    ns = namespace
    make_data_volume(cluster.api, ns, data_root)
    rng = random.Random(20)
    groups = [f"g{i}" for i in range(5)]
    for g in groups:  # no MapServer pods: what is tested is the operator's writes, not serving
        create_cr(cluster.api, ns, svc(f"svc-{g}", g, replicas=0))
    names = [f"d{i:03d}" for i in range(200)]
    kills = 0
    t0 = time.monotonic()
    for batch in range(20):
        for name in names[batch * 10 : (batch + 1) * 10]:
            create_cr(cluster.api, ns, ds(name, groups[int(name[1:]) % 5]))
        for name in rng.sample(names[: (batch + 1) * 10], 3):  # edits of existing datasets
            patch_cr(cluster.api, ns, "MapDataset", name, {"spec": {"title": f"edited {batch}"}})
        time.sleep(rng.uniform(0.05, 1.0))  # a random point of the reconcile
        operator_process.restart(kill=True)
        kills += 1
    wait_until(lambda: len(all_ready(cluster.api, ns, "mapdatasets")) == 200, "all 200 datasets Ready", 300)
    wait_until(
        lambda: converged(cluster.api, ns, {f"svc-{g}": 40 for g in groups}),
        "5 services converged with exactly their children",
        300,
    )
    elapsed = time.monotonic() - t0
    # finalizers are not stuck: deleting everything completes
    custom = client.CustomObjectsApi(cluster.api)
    for plural in ("mapservices", "mapdatasets"):
        custom.delete_collection_namespaced_custom_object("maps.kube-mapserver.io", "v1alpha1", ns, plural)
    wait_until(
        lambda: (
            not custom.list_namespaced_custom_object("maps.kube-mapserver.io", "v1alpha1", ns, "mapdatasets")[
                "items"
            ]
        ),
        "datasets deleted",
        180,
    )
    wait_until(
        lambda: (
            not custom.list_namespaced_custom_object("maps.kube-mapserver.io", "v1alpha1", ns, "mapservices")[
                "items"
            ]
        ),
        "services deleted",
        120,
    )
    apps = client.AppsV1Api(cluster.api)
    wait_until(
        lambda: not apps.list_namespaced_deployment(ns, label_selector=MANAGED).items, "no orphans", 60
    )
    with capsys.disabled():
        print(
            f"\n[chaos] operator SIGKILLed {kills} times during 200 creates + 60 edits over 5 services: "
            f"converged in {elapsed:.0f}s, 0 duplicates, 0 orphans, 0 stuck finalizers"
        )


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_restarts_of_the_control_plane_are_survived(
    cluster, namespace, operator_process, data_root, capsys, component
):
    if not cluster.local:
        pytest.skip("restarts the local control plane's processes")
    ns = namespace
    create_cr(cluster.api, ns, ds("before", "r"))
    create_cr(cluster.api, ns, svc("svc", "r"))
    wait_until(
        lambda: (get_cr(cluster.api, ns, "MapService", "svc").get("status") or {}).get("datasetCount") == 1,
        "service serving the first dataset",
        60,
    )
    plane = cluster_mod.Plane(cluster.kubeconfig.parent)
    t0 = time.monotonic()
    cluster_mod.restart(plane, component)
    if component == "etcd":  # the apiserver reconnects to etcd by itself
        wait_until(lambda: client.CoreV1Api(cluster.api).list_namespace(), "apiserver serving again", 60)
    restarted = time.monotonic() - t0
    create_cr(cluster.api, ns, ds("after", "r"))
    t1 = time.monotonic()
    wait_until(
        lambda: (get_cr(cluster.api, ns, "MapService", "svc").get("status") or {}).get("datasetCount") == 2,
        f"a change after the {component} restart processed",
        30,
    )
    with capsys.disabled():
        print(
            f"\n[chaos] {component} restarted in {restarted:.1f}s; next change processed "
            f"{time.monotonic() - t1:.1f}s later (bound 30s)"
        )


def test_deleting_a_namespace_with_running_work_leaves_nothing(cluster, operator_process, data_root):
    core = client.CoreV1Api(cluster.api)
    ns = f"doomed-{random.randrange(10**6)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    make_data_volume(cluster.api, ns, data_root)
    for i in range(5):
        create_cr(cluster.api, ns, ds(f"d{i}", "x"))
    create_cr(cluster.api, ns, svc("svc", "x"))
    create_cr(
        cluster.api,
        ns,
        {  # a job whose pod can never start keeps running
            "apiVersion": "maps.kube-mapserver.io/v1alpha1",
            "kind": "MapJob",
            "metadata": {"name": "stuck"},
            "spec": {
                "type": "cog-convert",
                "cogConvert": {"input": "a.tif", "output": "b.tif"},
                "data": {"persistentVolumeClaim": "missing-claim"},
            },
        },
    )
    wait_until(lambda: client.BatchV1Api(cluster.api).list_namespaced_job(ns).items, "job created", 60)
    wait_until(
        lambda: (get_cr(cluster.api, ns, "MapService", "svc").get("status") or {}).get("datasetCount") == 5,
        "service serving",
        60,
    )
    core.delete_namespace(ns)

    def gone():
        try:
            core.read_namespace(ns)
            return False
        except client.ApiException as e:
            return e.status == 404

    wait_until(gone, f"namespace {ns} fully deleted (no stuck finalizer)", 180)


def test_a_second_operator_stands_by(cluster, namespace, operator_process, data_root, tmp_path):
    """Two operators by mistake: the second waits for the lease and processes nothing."""
    from kms_operator.leadership import LEASE_NAME, lease_namespace

    # started by hand: OperatorProcess.start() would wait for liveness, which a standby never has
    # (nor needs: no liveness endpoint, so no port to pick for it)
    with open(tmp_path / "second.log", "wb") as out:
        proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "python"), "-m", "kms_operator", "--liveness", ""],
            env={
                **os.environ,
                "KUBECONFIG": str(cluster.kubeconfig),
                "KMS_DATA_ROOT": str(data_root),
                "KMS_METRICS_PORT": "0",
                "KMS_LEASE_SECONDS": "4",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        wait_until(
            lambda: "standing by" in (tmp_path / "second.log").read_text(), "second operator standing by", 60
        )
        create_cr(cluster.api, namespace, ds("one", "s"))
        wait_until(
            lambda: all_ready(cluster.api, namespace, "mapdatasets"), "dataset handled by the first", 60
        )
        # The standby was waiting before the dataset existed; it can only have processed it after
        # taking the lease, which it logs before it starts anything. Still waiting now (alive, the
        # lease with the first operator, never "holding lease") = it processed nothing.
        assert proc.poll() is None, (tmp_path / "second.log").read_text()
        lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease(LEASE_NAME, lease_namespace())
        first = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{operator_process.proc.pid}"
        assert lease.spec.holder_identity == first, f"lease held by {lease.spec.holder_identity}, not {first}"
        log = (tmp_path / "second.log").read_text()
        assert "holding lease" not in log, "the standby operator took the lease"
        assert "Handler" not in log and f"{namespace}/one" not in log, "the standby processed objects"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
