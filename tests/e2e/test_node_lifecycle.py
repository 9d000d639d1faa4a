"""The real node's life cycle: a plane with real_node=True, hack/node.py up with images built here,
a pod that really runs (exec probe, logs, exec, a ClusterIP Service answering the host), then
node down + plane down, and the machine is as it was before (hack/node.py's snapshot()).

Self-contained: starts its own plane and node in a temp dir (needs root, containerd, runc, buildah
and the cached kubelet). A real node that already runs on this machine (cni0 exists, e.g. the
session's `cluster` fixture) makes it skip: there is one bridge and one kubelet port per machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import hack_module, wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
IMAGES_NEEDED = ("pause", "coredns", "debian")
SERVER = (
    'my $s = IO::Socket::INET->new(LocalPort => 8080, Listen => 5, ReuseAddr => 1) or die "listen: $!";'
    "while (my $c = $s->accept) { while (<$c>) { last if /^\\r?\\n$/ }"
    ' print $c "HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nkms-hello\\n"; close $c }'
)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the real node needs root"
    for tool in ("containerd", "runc", "buildah", "iptables"):
        if not shutil.which(tool):
            return f"{tool} is not installed (hack/setup.sh)"
    if not (REPO / "hack" / "images.py").exists():
        return "hack/images.py (the images the node runs) is not there yet"
    if Path("/sys/class/net/cni0").exists():
        return "a real node already runs on this machine (cni0 exists): one node per machine"
    return None


def test_node_up_and_down_leaves_the_machine_as_found(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    cluster_mod = hack_module("cluster")
    node_mod = hack_module("node")
    images_mod = hack_module("images")
    manifest = images_mod.build(IMAGES_NEEDED)
    manifest = {name: manifest[name] for name in IMAGES_NEEDED}  # a smaller import

    before = node_mod.snapshot()
    plane = cluster_mod.Plane(tmp_path / "plane")
    node = node_mod.Node(tmp_path / "node")
    node_left: list[str] = ["node.down() did not run"]
    try:
        cluster_mod.up(plane, port=None, timeout=120, real_node=True)
        timings = node_mod.up(node, plane, manifest)
        print(f"node timings: {timings}")
        _check_node(plane, cluster_mod.binaries()["kubectl"], manifest["debian"]["ref"])
    finally:
        node_left = node_mod.down(node)
        plane_left = cluster_mod.down(plane)
    after = node_mod.snapshot()

    assert not node_left, f"node.down() left differences against its start: {node_left}"
    assert not plane_left, f"control-plane processes survived: {plane_left}"
    assert node_mod.diff(before, after) == [], "the machine differs from before the plane and the node"


def test_a_killed_run_is_torn_down_by_the_next_up(tmp_path: Path) -> None:
    """A run killed mid-way (every plane and node process SIGKILLed, as when the machine's sandbox
    restarts) leaves the bridge, rules, mounts and pods' processes behind; the next real-node `up`
    finds them through the owner file, tears them down and starts."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    cluster_mod, node_mod = hack_module("cluster"), hack_module("node")
    manifest = hack_module("images").build(("pause", "coredns"))
    manifest = {name: manifest[name] for name in ("pause", "coredns")}
    before = node_mod.snapshot()
    killed, fresh = cluster_mod.Plane(tmp_path / "killed"), cluster_mod.Plane(tmp_path / "fresh")
    node = node_mod.Node(tmp_path / "node")
    try:
        cluster_mod.up(killed, port=None, timeout=120, real_node=True)
        node_mod.up(node, killed, manifest)
        assert cluster_mod.load_owner() == {"plane": str(killed.dir), "node": str(node.dir)}
        pids = {**killed.load()["pids"], **node.load()["pids"]}
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(cluster_mod.alive(p) for p in pids.values()), "killed processes gone")
        assert Path("/sys/class/net/cni0").exists()

        cluster_mod.up(fresh, port=None, timeout=120, real_node=True)
        assert cluster_mod.load_owner() == {"plane": str(fresh.dir)}
        assert not node.load().get("before"), "the killed node was not torn down"
    finally:
        node_mod.down(node)
        cluster_mod.down(killed)
        cluster_mod.down(fresh)
    assert cluster_mod.load_owner() == {}
    assert node_mod.diff(before, node_mod.snapshot()) == [], "the machine differs from before"


def _check_node(plane, kubectl_bin: Path, image: str) -> None:
    def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
        r = subprocess.run(
            [str(kubectl_bin), f"--kubeconfig={plane.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if check:
            assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
        return r.stdout

    node = json.loads(kubectl("get", "node", "kms-node", "-o", "json"))
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True", node["status"]["conditions"]
    assert node["metadata"]["labels"].get("kube-mapserver.io/node") == "real"
    fake = json.loads(kubectl("get", "node", "kwok-node-0", "-o", "json"))
    assert {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"} in fake["spec"]["taints"]

    # the no-egress rules and the bridge's INPUT guard run before any filter rule of kube-proxy
    for chain, marker in (("FORWARD", "kms-node-no-egress"), ("INPUT", "kms-bridge-guard")):
        rules = subprocess.run(
            ["iptables", "-w", "-t", "mangle", "-S", chain], capture_output=True, text=True
        )
        assert sum(marker in ln for ln in rules.stdout.splitlines()) == 2, rules.stdout

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hello", "namespace": "default", "labels": {"app": "hello"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534},
            "containers": [
                {
                    "name": "hello",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": [
                        "sh",
                        "-c",
                        'echo kms-hello-started; touch /tmp/ready; exec perl -MIO::Socket::INET -e "$0"',
                        SERVER,
                    ],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1},
                    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "hello", "namespace": "default"},
        "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    objects = {"apiVersion": "v1", "kind": "List", "items": [pod, service]}
    kubectl("create", "-f", "-", stdin=json.dumps(objects))
    kubectl("wait", "--for=condition=Ready", "pod/hello", "--timeout=120s")

    assert "kms-hello-started" in kubectl("logs", "hello")
    assert kubectl("exec", "hello", "--", "hostname").strip() == "hello"
    # pods have no default route: only the pod network and the service range, on the bridge
    routes = kubectl("exec", "hello", "--", "cat", "/proc/net/route").splitlines()[1:]
    assert routes and not any(r.split()[1] == "00000000" for r in routes), routes
    # and reach the apiserver through the `kubernetes` Service
    kubectl(
        "exec",
        "hello",
        "--",
        "perl",
        "-MIO::Socket::INET",
        "-e",
        'IO::Socket::INET->new(PeerAddr => "10.96.0.1:443", Timeout => 5) or die "no apiserver: $!"',
    )

    ip = kubectl("get", "service", "hello", "-o", "jsonpath={.spec.clusterIP}").strip()

    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to the ClusterIP

    def answers() -> bool:
        with no_proxy.open(f"http://{ip}/", timeout=2) as r:
            return b"kms-hello" in r.read()

    wait_until(answers, f"Service hello ({ip}:80) answering the host", timeout=60)
    kubectl("delete", "service", "hello")
    kubectl("delete", "pod", "hello", "--wait=true", "--timeout=60s")
