"""The real node's names, addresses and paths, its state (Node, a Plane), the plane's module
(hack/cluster.py, loaded once) and the command helpers the node's modules share."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
TEMPLATES = HACK / "node"


def _load_cluster():
    """hack/cluster.py: the module already loaded (as `cluster` by hack/dev.py, or by path as
    `kms_hack_cluster` by the tests), else loaded by path under the tests' name."""
    name = "kms_hack_cluster"
    for loaded in (name, "cluster"):
        mod = sys.modules.get(loaded)
        if mod is not None and Path(getattr(mod, "__file__", "") or "").resolve() == HACK / "cluster.py":
            return mod
    spec = importlib.util.spec_from_file_location(name, HACK / "cluster.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


cluster = _load_cluster()
CACHE = Path(os.environ.get("KMS_CACHE_DIR", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))))
if "KMS_CACHE_DIR" not in os.environ:
    CACHE = CACHE / "kube-mapserver"
DEFAULT_MANIFEST = CACHE / "images" / "manifest.json"
BUILD_STORAGE = CACHE / "buildah"  # hack/images.py's private buildah storage
DEFAULT_DIR = Path(os.environ.get("KMS_NODE_DIR", REPO / ".kms" / "node"))
NODE_NAME = cluster.NODE_NAME_REAL
NODE_IP = cluster.BRIDGE_IP
BRIDGE = cluster.BRIDGE
POD_CIDR = cluster.POD_CIDR
SERVICE_CIDR = cluster.SERVICE_CIDR
CLUSTER_DNS = "10.96.0.10"
KUBERNETES_SVC_IP = "10.96.0.1"
NODE_LABEL = ("kube-mapserver.io/node", "real")
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
NO_EGRESS = "kms-node-no-egress"
DRAIN_TAINT = "kube-mapserver.io/draining=true"
# FORWARD: nothing enters or leaves the bridge through another interface (pods have no egress).
# In the mangle table, which runs before filter: no rule kube-proxy prepends in filter (its
# KUBE-FORWARD accepts marked and established traffic) can come first.
FORWARD_RULES = (
    ("-i", BRIDGE, "!", "-o", BRIDGE, "-m", "comment", "--comment", NO_EGRESS, "-j", "DROP"),
    ("!", "-i", BRIDGE, "-o", BRIDGE, "-m", "comment", "--comment", NO_EGRESS, "-j", "DROP"),
)
COMPONENTS = ("containerd", "kubelet", "kube-proxy")


def log(msg: str) -> None:
    print(f"[node {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class NodeError(cluster.ClusterError):
    """The node could not be started; the message names what was awaited and shows a log tail."""


@dataclass
class Node(cluster.Plane):
    """Paths of one node, persisted in DIR/state.json (logs in DIR/logs, like a Plane)."""

    @property
    def sock(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    @property
    def kubeconfig(self) -> Path:  # the admin kubeconfig of the plane the node joined
        return Path(self.load().get("cluster_dir", "/nonexistent")) / "kubeconfig"


def _run(*argv: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r


def _ip_json(*args: str) -> list[dict]:
    out = _run("ip", "-j", *args).stdout
    return json.loads(out) if out.strip() else []


def _wait(probe: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if probe():
                return True
        time.sleep(interval)
    return False
