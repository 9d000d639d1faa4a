#!/usr/bin/env python3
"""A real Kubernetes node beside the local control plane (hack/cluster.py up --real-node):
containerd + runc, the CNI bridge on cni0 (10.88.0.0/16), kubelet, kube-proxy (iptables) and
CoreDNS as the cluster DNS, running images built here (no registry).

Standard library only, like cluster.py, so it runs before any venv exists. Needs root.

    hack/node.py up --cluster-dir C [--dir D] [--images MANIFEST]   start, wait for node and DNS
    hack/node.py down [--dir D]        stop by PID, clean up, print what differs from before `up`
    hack/node.py status [--dir D]
    hack/node.py snapshot              print the machine state that `down` compares (JSON)

Network rules: pods get routes to 10.88.0.0/16 and 10.96.0.0/16 only (no default route, no
masquerade), FORWARD drops everything that enters or leaves the bridge through another interface,
the host accepts from the bridge only the apiserver port (cluster.py's guard), and NodePorts live
on 10.88.0.1 only. `up` saves a snapshot of the machine (links, addresses, routes, iptables,
mounts, cgroups, sysctls, system-wide folders, processes) and `down` restores it and reports what
still differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the node's code lives in the modules below (node_*.py); what callers use is re-exported here
# (__all__), so `node.<name>` keeps working
from node_clients import _api_json, _condition, dns_query
from node_common import (
    BRIDGE,
    BUILD_STORAGE,
    CACHE,
    CLUSTER_DNS,
    COMPONENTS,
    DEFAULT_DIR,
    DEFAULT_MANIFEST,
    DRAIN_TAINT,
    FORWARD_RULES,
    HACK,
    KUBELET_HEALTHZ_PORT,
    KUBELET_PORT,
    KUBERNETES_SVC_IP,
    NO_EGRESS,
    NODE_IP,
    NODE_LABEL,
    NODE_NAME,
    POD_CIDR,
    REPO,
    SERVICE_CIDR,
    TEMPLATES,
    Node,
    NodeError,
    _load_cluster,
    cluster,
    log,
)
from node_images import archive_digest, import_images
from node_restore import (
    OUR_CHAIN,
    remove_cgroups,
    remove_created_paths,
    remove_iptables_additions,
    restore_sysctls,
    unmount_ours,
)
from node_start import up
from node_state import (
    BUILDAH_PATHS,
    CARRIER_FLAGS,
    CGROUP_NAMES,
    CGROUP_ROOT,
    OUR_COMMS,
    SYSCTL_GLOBS,
    SYSCTLS,
    SYSTEM_PATHS,
    diff,
    read_sysctls,
    snapshot,
    sysctl_keys,
)
from node_stop import down

__all__ = [
    "BRIDGE",
    "BUILDAH_PATHS",
    "BUILD_STORAGE",
    "CACHE",
    "CARRIER_FLAGS",
    "CGROUP_NAMES",
    "CGROUP_ROOT",
    "CLUSTER_DNS",
    "COMPONENTS",
    "DEFAULT_DIR",
    "DEFAULT_MANIFEST",
    "DRAIN_TAINT",
    "FORWARD_RULES",
    "HACK",
    "KUBELET_HEALTHZ_PORT",
    "KUBELET_PORT",
    "KUBERNETES_SVC_IP",
    "NODE_IP",
    "NODE_LABEL",
    "NODE_NAME",
    "NO_EGRESS",
    "OUR_CHAIN",
    "OUR_COMMS",
    "POD_CIDR",
    "REPO",
    "SERVICE_CIDR",
    "SYSCTLS",
    "SYSCTL_GLOBS",
    "SYSTEM_PATHS",
    "TEMPLATES",
    "Node",
    "NodeError",
    "_load_cluster",
    "alive",
    "archive_digest",
    "cluster",
    "diff",
    "dns_query",
    "down",
    "import_images",
    "log",
    "main",
    "read_sysctls",
    "remove_cgroups",
    "remove_created_paths",
    "remove_iptables_additions",
    "restore_sysctls",
    "snapshot",
    "status",
    "sysctl_keys",
    "unmount_ours",
    "up",
]


def alive(node: Node) -> bool:
    """Whether every process of the node runs."""
    pids = node.load().get("pids", {})
    return bool(pids) and all(cluster.alive(p) for p in pids.values())


def status(node: Node) -> int:
    state = node.load()
    pids = state.get("pids", {})
    ok = cluster.print_processes(pids, 12)
    if not pids:
        return 1
    try:
        ready = _condition(_api_json(node, f"/api/v1/nodes/{NODE_NAME}"), "Ready")
    except (cluster.ClusterError, OSError, urllib.error.URLError) as e:
        ready = False
        print(f"node {NODE_NAME}: {e}")
    print(f"node {NODE_NAME}: {'Ready' if ready else 'not Ready'}; timings {state.get('timings')}")
    return 0 if ok and ready else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["up", "down", "status", "snapshot"])
    p.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"node state directory (default {DEFAULT_DIR})"
    )
    p.add_argument("--cluster-dir", type=Path, default=cluster.DEFAULT_DIR, help="the plane's directory")
    p.add_argument("--images", type=Path, default=DEFAULT_MANIFEST, help="images manifest (hack/images.py)")
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait for each condition")
    a = p.parse_args()
    node = Node(a.dir.resolve())
    try:
        if a.command == "up":
            timings = up(node, a.cluster_dir, a.images, a.timeout)
            print(json.dumps(timings))
        elif a.command == "down":
            left = down(node)
            print(json.dumps(left, indent=2))
            return 1 if left else 0
        elif a.command == "snapshot":
            print(json.dumps(snapshot(), indent=2))
        else:
            return status(node)
    except cluster.ClusterError as e:
        log(f"ERROR: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
