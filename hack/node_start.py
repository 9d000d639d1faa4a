"""Starting the node (up): its configuration from the templates in hack/node/, the network rules,
containerd, kubelet, kube-proxy, the images and CoreDNS, and the DNS checks."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import string
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from node_clients import _api_json, _condition, _kubectl, dns_query
from node_common import (
    BRIDGE,
    CLUSTER_DNS,
    DEFAULT_MANIFEST,
    FORWARD_RULES,
    KUBELET_HEALTHZ_PORT,
    KUBELET_PORT,
    KUBERNETES_SVC_IP,
    NODE_IP,
    NODE_LABEL,
    NODE_NAME,
    POD_CIDR,
    SERVICE_CIDR,
    TEMPLATES,
    Node,
    NodeError,
    _ip_json,
    _run,
    _wait,
    cluster,
    log,
)
from node_images import import_images
from node_state import snapshot
from node_stop import down


def _render(template: str, dest: Path, **values: object) -> Path:
    text = string.Template((TEMPLATES / template).read_text()).substitute(
        {k: str(v) for k, v in values.items()}
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    return dest


def _check_preconditions(plane_state: dict) -> None:
    if os.geteuid() != 0:
        raise NodeError("the node needs root (containerd, runc, iptables, mounts, cgroups)")
    for tool in ("containerd", "ctr", "runc", "iptables", "ip6tables", "ip", "umount"):
        if not shutil.which(tool):
            raise NodeError(f"{tool} not found (hack/setup.sh installs containerd runc iptables ...)")
    if not Path("/usr/lib/cni/bridge").exists():
        raise NodeError("/usr/lib/cni/bridge not found (apt-get install containernetworking-plugins)")
    if not plane_state.get("real_node"):
        raise NodeError("the plane was not started for a real node: hack/cluster.py up --real-node")
    if not all(cluster.alive(p) for p in plane_state.get("pids", {}).values()) or not plane_state.get("pids"):
        raise NodeError("the plane is not running (hack/cluster.py up --real-node)")
    if not cluster.link_exists(BRIDGE):
        raise NodeError(f"bridge {BRIDGE} missing: the plane creates it (hack/cluster.py up --real-node)")
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex((NODE_IP, KUBELET_PORT)) == 0:
            raise NodeError(f"something already listens on {NODE_IP}:{KUBELET_PORT}: another node runs here")


def up(
    node: Node,
    plane: cluster.Plane | Path,
    images: Path | dict = DEFAULT_MANIFEST,
    timeout: float = 180,
    dns_check: bool = True,
) -> dict[str, float]:
    """Start containerd, kubelet, kube-proxy and CoreDNS beside the running plane (a Plane or its
    directory; started with real_node=True), import every image of the manifest (its path, or the
    dict hack/images.py's build() returns), and wait until the node is Ready, CoreDNS is Ready and
    a pod resolves kubernetes.default.svc.cluster.local. Returns timings in seconds since
    containerd's start (containerd_ready, node_ready, coredns_ready), images (import) and total."""
    t0 = time.monotonic()
    cluster_dir = Path(getattr(plane, "dir", plane)).resolve()
    state = node.load()
    if state.get("pids") and all(cluster.alive(p) for p in state["pids"].values()):
        log(f"already running ({node.dir})")
        return state.get("timings", {})
    if state.get("before"):
        log("cleaning up an earlier node that was not stopped")
        down(node)
    plane_state = cluster.Plane(cluster_dir).load()
    _check_preconditions(plane_state)
    manifest = images if isinstance(images, dict) else json.loads(Path(images).read_text())
    for required in ("pause", "coredns"):
        if required not in manifest:
            raise NodeError(f"the images manifest has no {required!r} image ({images})")
    bins = cluster.binaries(extra=("kubelet", "kube-proxy"))
    pki = cluster_dir / "pki"
    cluster.make_node_pki(pki)
    d = node.dir
    d.mkdir(parents=True, exist_ok=True)
    state = {
        "cluster_dir": str(cluster_dir),
        "kubectl": str(bins["kubectl"]),
        "before": snapshot(),
        "pids": {},
        # if the plane stops first, the tables it could not delete (the node's rules were in them)
        # are the node's to delete: those that did not exist before the plane
        "plane_tables_before": plane_state.get("bridge", {}).get("tables_before"),
    }
    state["sysctls"] = state["before"]["sysctls"]
    node.save(state)
    cluster.set_owner(node=node.dir)
    timings: dict[str, float] = {}
    try:
        _start(node, state, bins, manifest, pki, plane_state, timeout, timings, dns_check)
    except BaseException:
        log(f"start-up failed; logs stay in {d / 'logs'}; cleaning up")
        down(node)
        raise
    timings["total"] = round(time.monotonic() - t0, 1)
    state["timings"] = timings
    node.save(state)
    log(f"node {NODE_NAME} up in {timings['total']}s: {timings}")
    return timings


def _start(
    node: Node,
    state: dict,
    bins: dict[str, Path],
    manifest: dict,
    pki: Path,
    plane_state: dict,
    timeout: float,
    timings: dict[str, float],
    dns_check: bool,
) -> None:
    """up()'s steps: configs, network, containerd, kubelet + kube-proxy, images, CoreDNS, DNS checks."""
    d = node.dir
    server = f"https://{plane_state['host']}:{plane_state['ports']['apiserver']}"
    for sub in ("containerd/root", "containerd/state", "cni/conf", "cni/ipam", "kubelet/root", "kubelet/pki"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("kubelet/pod-logs", "kubelet/volume-plugins"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for stale in (d / "cni" / "conf").iterdir():
        stale.unlink()
    _render(
        "containerd.toml",
        d / "containerd" / "config.toml",
        ROOT=d / "containerd" / "root",
        STATE=d / "containerd" / "state",
        SOCKET=node.sock,
        PAUSE_IMAGE=manifest["pause"]["ref"],
        CNI_CONF_DIR=d / "cni" / "conf",
    )
    _render(
        "10-kms.conflist",
        d / "cni" / "conf" / "10-kms.conflist",
        BRIDGE=BRIDGE,
        POD_CIDR=POD_CIDR,
        NODE_IP=NODE_IP,
        SERVICE_CIDR=SERVICE_CIDR,
        IPAM_DIR=d / "cni" / "ipam",
    )
    resolv = d / "kubelet" / "resolv.conf"
    resolv.write_text("# kube-mapserver node: no upstream DNS (no egress)\n")
    _render(
        "kubelet.yaml",
        d / "kubelet" / "config.yaml",
        NODE_IP=NODE_IP,
        KUBELET_PORT=KUBELET_PORT,
        HEALTHZ_PORT=KUBELET_HEALTHZ_PORT,
        PKI=pki,
        SOCKET=node.sock,
        CLUSTER_DNS=CLUSTER_DNS,
        RESOLV_CONF=resolv,
        POD_LOGS_DIR=d / "kubelet" / "pod-logs",
        VOLUME_PLUGIN_DIR=d / "kubelet" / "volume-plugins",
    )
    ports = {"proxy_healthz": cluster.free_port(), "proxy_metrics": cluster.free_port()}
    state["ports"] = ports
    cluster.write_kubeconfig(d / "kubelet.kubeconfig", server, pki, "kubelet")
    cluster.write_kubeconfig(d / "kube-proxy.kubeconfig", server, pki, "kube-proxy")
    _render(
        "kube-proxy.yaml",
        d / "kube-proxy" / "config.yaml",
        KUBECONFIG=d / "kube-proxy.kubeconfig",
        NODE_NAME=NODE_NAME,
        POD_CIDR=POD_CIDR,
        HEALTHZ_PORT=ports["proxy_healthz"],
        METRICS_PORT=ports["proxy_metrics"],
        NODE_IP=NODE_IP,
    )

    # network: the service CIDR stays on our bridge, nothing is forwarded off it
    if not any(r.get("dst") == SERVICE_CIDR for r in _ip_json("route", "show", SERVICE_CIDR)):
        _run("ip", "route", "add", SERVICE_CIDR, "dev", BRIDGE, "src", NODE_IP, check=True)
        state["route"] = True
        node.save(state)
    for cmd in ("iptables", "ip6tables"):
        for rule in reversed(FORWARD_RULES):
            _run(cmd, "-w", "-t", "mangle", "-I", "FORWARD", *rule, check=True)

    # containerd
    t_containerd = time.monotonic()
    containerd = shutil.which("containerd") or "containerd"
    cluster.start_process(
        node, state, "containerd", [containerd, "--config", str(d / "containerd" / "config.toml")]
    )

    def cri_ok() -> bool:
        out = _run("ctr", "--address", str(node.sock), "plugins", "ls").stdout
        return bool(re.search(r"io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok", out))

    cluster.wait_for("containerd's CRI plugin (ctr plugins ls)", cri_ok, node, state, timeout, "containerd")
    timings["containerd_ready"] = round(time.monotonic() - t_containerd, 1)
    log(f"containerd ready in {timings['containerd_ready']}s")

    # kubelet and kube-proxy; the images are imported meanwhile (the node registers without them)
    kubelet_argv = [
        str(bins["kubelet"]),
        f"--config={d / 'kubelet' / 'config.yaml'}",
        f"--kubeconfig={d / 'kubelet.kubeconfig'}",
        f"--root-dir={d / 'kubelet' / 'root'}",
        f"--cert-dir={d / 'kubelet' / 'pki'}",
        f"--node-ip={NODE_IP}",
        f"--hostname-override={NODE_NAME}",
        f"--node-labels={NODE_LABEL[0]}={NODE_LABEL[1]}",
        "--v=2",
    ]
    cluster.start_process(node, state, "kubelet", kubelet_argv)
    cluster.start_process(
        node,
        state,
        "kube-proxy",
        [str(bins["kube-proxy"]), f"--config={d / 'kube-proxy' / 'config.yaml'}", "--v=1"],
    )

    def node_ready() -> bool:
        return _condition(_api_json(node, f"/api/v1/nodes/{NODE_NAME}"), "Ready")

    # the node registers while the images CoreDNS needs are imported (its Ready time is watched)
    node_ready_at = _watch(node_ready, timeout)
    t_images = time.monotonic()
    first = ("pause", "coredns")
    import_images(node, {k: v for k, v in manifest.items() if k in first})
    cluster.wait_for(f"node {NODE_NAME} Ready", node_ready, node, state, timeout, "kubelet")
    timings["node_ready"] = round(node_ready_at(time.monotonic()) - t_containerd, 1)
    log(f"node {NODE_NAME} Ready {timings['node_ready']}s after containerd started")

    def proxy_synced() -> bool:
        url = f"http://127.0.0.1:{ports['proxy_healthz']}/healthz"
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2) as r:
            return r.status == 200

    cluster.wait_for(
        "kube-proxy /healthz (first iptables sync)", proxy_synced, node, state, timeout, "kube-proxy"
    )

    # CoreDNS starts while the other images are imported
    coredns = _render(
        "coredns.yaml", d / "coredns.yaml", COREDNS_IMAGE=manifest["coredns"]["ref"], CLUSTER_DNS=CLUSTER_DNS
    )
    r = _kubectl(node, "apply", "-f", str(coredns))
    if r.returncode != 0:
        raise NodeError(f"kubectl apply {coredns} failed: {r.stderr.strip()}")

    def coredns_ready() -> bool:
        dep = _api_json(node, "/apis/apps/v1/namespaces/kube-system/deployments/coredns")
        return dep.get("status", {}).get("readyReplicas", 0) >= 1

    coredns_ready_at = _watch(coredns_ready, timeout)
    import_images(node, {k: v for k, v in manifest.items() if k not in first})
    timings["images"] = round(time.monotonic() - t_images, 1)
    try:
        cluster.wait_for(
            "CoreDNS Ready (deployment kube-system/coredns)", coredns_ready, node, state, timeout, "kubelet"
        )
    except cluster.ClusterError as e:
        pods = _kubectl(node, "-n", "kube-system", "get", "pods", "-o", "wide").stdout
        logs = _kubectl(node, "-n", "kube-system", "logs", "deploy/coredns", "--tail=30").stdout
        raise NodeError(f"{e}\nkube-system pods:\n{pods}\ncoredns log:\n{logs}") from None
    timings["coredns_ready"] = round(coredns_ready_at(time.monotonic()) - t_containerd, 1)
    log(f"CoreDNS Ready {timings['coredns_ready']}s after containerd started")

    name = "kubernetes.default.svc.cluster.local"
    cluster.wait_for(
        f"{name} from the host through the DNS Service {CLUSTER_DNS}",
        lambda: dns_query(name) == [KUBERNETES_SVC_IP],
        node,
        state,
        timeout,
        "kube-proxy",
    )
    if dns_check:
        if "debian" in manifest:
            _pod_resolves(node, manifest["debian"]["ref"], name, timeout)
        else:
            log("no 'debian' image in the manifest: the in-pod DNS check is skipped")


def _watch(probe: Callable[[], object], timeout: float) -> Callable[[float], float]:
    """Poll probe() in a thread; the returned function gives the monotonic time it first held
    (or its argument when it has not held yet)."""
    at: list[float] = []
    threading.Thread(
        target=lambda: _wait(probe, timeout, 0.1) and at.append(time.monotonic()), daemon=True
    ).start()
    return lambda default: at[0] if at else default


def _pod_resolves(node: Node, image: str, name: str, timeout: float) -> None:
    """A short-lived pod resolves `name` through the cluster DNS (getent in the debian image)."""
    pod = "kms-node-dns-check"
    spec = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod, "namespace": "kube-system"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {NODE_LABEL[0]: NODE_LABEL[1]},
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534},
            "containers": [
                {
                    "name": "check",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["getent", "hosts", name],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }
    _kubectl(node, "-n", "kube-system", "delete", "pod", pod, "--ignore-not-found", "--wait=true")
    r = _kubectl(node, "create", "-f", "-", stdin=json.dumps(spec))
    if r.returncode != 0:
        raise NodeError(f"creating pod {pod} failed: {r.stderr.strip()}")
    phase = ""

    def finished() -> bool:
        nonlocal phase
        phase = (
            _api_json(node, f"/api/v1/namespaces/kube-system/pods/{pod}").get("status", {}).get("phase", "")
        )
        return phase in ("Succeeded", "Failed")

    state = node.load()
    cluster.wait_for(f"pod kube-system/{pod} to finish", finished, node, state, timeout, "kubelet")
    out = _kubectl(node, "-n", "kube-system", "logs", pod)
    _kubectl(node, "-n", "kube-system", "delete", "pod", pod, "--wait=true")
    if phase != "Succeeded" or KUBERNETES_SVC_IP not in out.stdout:
        raise NodeError(f"a pod could not resolve {name} (phase {phase}): {out.stdout}{out.stderr}")
    log(f"a pod resolves {name}: {out.stdout.strip()}")
