"""Starting the plane (up): etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
kwok with its fake node, optionally ready for a real node (hack/node.py)."""

from __future__ import annotations

import json
import time
import urllib.request

from cluster_api import api_get, api_send
from cluster_bridge import bridge_up
from cluster_common import (
    BRIDGE_IP,
    HACK,
    NODE_NAME,
    SERVICE_CIDR,
    ClusterError,
    Plane,
    alive,
    binaries,
    free_port,
    log,
    set_owner,
    start_process,
    wait_for,
)
from cluster_pki import make_node_pki, make_pki, write_kubeconfig
from cluster_stop import down, reclaim_stale

FAKE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
FAKE_NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": NODE_NAME,
        "labels": {
            "kubernetes.io/hostname": NODE_NAME,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
        },
        "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
    },
    "status": {
        "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
        "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
    },
}


def up(plane: Plane, port: int | None, timeout: float, real_node: bool = False) -> None:
    """Start the plane and wait until it serves. real_node: ready for hack/node.py (see the module
    docstring): apiserver on the bridge address 10.88.0.1, kubelet client cert, kwok node tainted."""
    started = time.monotonic()
    state = plane.load()
    if state.get("pids") and all(alive(p) for p in state["pids"].values()):
        if bool(state.get("real_node")) != real_node:
            raise ClusterError(
                f"a plane runs in {plane.dir} with real_node={bool(state.get('real_node'))}; "
                f"stop it first to start one with real_node={real_node}"
            )
        log(f"already running; kubeconfig: {plane.kubeconfig}")
        return
    if state.get("pids") or state.get("bridge"):
        down(plane)  # half-dead plane from an earlier run: clean it up first
    if real_node:
        reclaim_stale()  # the bridge's last holder, if a killed run left it
    bins = binaries()
    plane.dir.mkdir(parents=True, exist_ok=True)
    pki = plane.dir / "pki"
    make_pki(pki)
    if real_node:
        make_node_pki(pki)
    ports = {
        "etcd": free_port(),
        "etcd_peer": free_port(),
        "apiserver": port or free_port(),
        "controller_manager": free_port(),
        "scheduler": free_port(),
        "kwok": free_port(),
    }
    host = BRIDGE_IP if real_node else "127.0.0.1"
    state = {"ports": ports, "pids": {}, "host": host, "real_node": real_node}
    plane.save(state)
    server = f"https://{host}:{ports['apiserver']}"
    for user in ("admin", "controller-manager", "scheduler", "kwok"):
        write_kubeconfig(plane.dir / f"{user}.kubeconfig", server, pki, user)
    (plane.dir / "admin.kubeconfig").replace(plane.kubeconfig)

    try:
        if real_node:
            bridge_up(plane, state, ports["apiserver"])
            set_owner(plane=plane.dir)
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
        start_process(
            plane,
            state,
            "etcd",
            [
                str(bins["etcd"]),
                "--name=kms",
                f"--data-dir={plane.dir / 'etcd-data'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=kms={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--quota-backend-bytes=4294967296",
            ],
        )

        def etcd_ready() -> bool:
            with urllib.request.urlopen(f"{etcd_url}/health", timeout=2) as r:
                return b'"true"' in r.read()

        wait_for("etcd /health", etcd_ready, plane, state, timeout, "etcd")

        if real_node:
            # pods reach the apiserver through the `kubernetes` Service (10.96.0.1:443 -> kube-proxy ->
            # 10.88.0.1): it binds and advertises the bridge address only (nothing on an outside
            # interface), and logs/exec go to the kubelet by its InternalIP with a client cert
            address_args = [
                f"--bind-address={BRIDGE_IP}",
                f"--advertise-address={BRIDGE_IP}",
                "--endpoint-reconciler-type=lease",
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            ]
        else:
            # loopback advertise address: the endpoint reconciler would refuse it
            address_args = ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"]
            address_args.append("--endpoint-reconciler-type=none")
        start_process(
            plane,
            state,
            "kube-apiserver",
            [
                str(bins["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                *address_args,
                f"--secure-port={ports['apiserver']}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--requestheader-client-ca-file={pki / 'ca.crt'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                f"--cert-dir={plane.dir / 'apiserver-certs'}",
                "--v=1",
            ],
        )
        wait_for(
            "kube-apiserver /readyz",
            lambda: api_get(state, pki, "/readyz")[0] == 200,
            plane,
            state,
            timeout,
            "kube-apiserver",
        )
        if real_node:
            binding = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "kms:apiserver-kubelet-client"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:kubelet-api-admin",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": "kube-apiserver-kubelet-client",
                    }
                ],
            }
            path = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
            code, body = api_send(state, pki, "POST", path, binding)
            if code not in (201, 409):
                raise ClusterError(f"could not bind the kubelet client role: HTTP {code} {body[:300]!r}")

        start_process(
            plane,
            state,
            "kube-controller-manager",
            [
                str(bins["kube-controller-manager"]),
                f"--kubeconfig={plane.dir / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={plane.dir / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={plane.dir / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['controller_manager']}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                # the controllers the product relies on, and nothing that expects a cloud or real nodes
                "--controllers=node-lifecycle-controller,deployment-controller,replicaset-controller,job-controller,cronjob-controller,"
                "garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,"
                "ttl-after-finished-controller,namespace-controller,endpointslice-controller,"
                "endpoints-controller,horizontal-pod-autoscaler-controller,disruption-controller,"
                "statefulset-controller,daemonset-controller,resourcequota-controller,"
                "persistentvolume-binder-controller,persistentvolume-protection-controller,persistentvolumeclaim-protection-controller,pod-garbage-collector-controller,root-ca-certificate-publisher-controller",
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
        )
        start_process(
            plane,
            state,
            "kube-scheduler",
            [
                str(bins["kube-scheduler"]),
                f"--kubeconfig={plane.dir / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={plane.dir / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={plane.dir / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        start_process(
            plane,
            state,
            "kwok",
            [
                str(bins["kwok"]),
                f"--kubeconfig={plane.dir / 'kwok.kubeconfig'}",
                f"--config={HACK / 'kwok-stages.yaml'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-ip=127.0.0.1",
                "--cidr=10.244.0.1/16",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{ports['kwok']}",
            ],
        )

        fake_node = json.loads(json.dumps(FAKE_NODE))
        if real_node:  # only pods that tolerate it go to the fake node; the rest to the real one
            fake_node["spec"] = {"taints": [FAKE_TAINT]}
        code, body = api_send(state, pki, "POST", "/api/v1/nodes", fake_node)
        if code not in (201, 409):
            raise ClusterError(f"could not create the fake node: HTTP {code} {body[:300]!r}")

        def node_ready() -> bool:
            _, raw = api_get(state, pki, f"/api/v1/nodes/{NODE_NAME}")
            node = json.loads(raw)
            conds = node.get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        def node_schedulable() -> bool:
            _, raw = api_get(state, pki, f"/api/v1/nodes/{NODE_NAME}")
            taints = json.loads(raw).get("spec", {}).get("taints", [])
            return not any(
                t.get("effect") in ("NoSchedule", "NoExecute") and t.get("key") != FAKE_TAINT["key"]
                for t in taints
            )

        wait_for(f"node {NODE_NAME} Ready", node_ready, plane, state, timeout, "kwok")
        wait_for(
            f"node {NODE_NAME} untainted (node-lifecycle-controller)",
            node_schedulable,
            plane,
            state,
            timeout,
            "kube-controller-manager",
        )
        wait_for(
            "the default ServiceAccount (controller-manager working)",
            lambda: api_get(state, pki, "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            plane,
            state,
            timeout,
            "kube-controller-manager",
        )
    except BaseException:
        down(plane)
        raise
    log(f"control plane ready in {time.monotonic() - started:.1f}s: {server}")
    log(f"kubeconfig: {plane.kubeconfig}   (export KUBECONFIG={plane.kubeconfig})")
    log(f"kubectl: {bins['kubectl']}")
