#!/usr/bin/env python3
"""Local Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (one fake node), built from the Go module proxy by build-binaries.sh.

Standard library only (plus the openssl CLI), so it runs before any venv exists.

    hack/cluster.py up   [--dir DIR] [--port 6443] [--real-node]   start, wait, print the kubeconfig
    hack/cluster.py down [--dir DIR]                 stop the processes it started (by PID)
    hack/cluster.py status [--dir DIR]

Pod and Service IPs in this plane are fake (kwok): nothing on the host connects to them.

With --real-node the plane is ready for a real kubelet node (hack/node.py): it creates the node's
bridge cni0 with 10.88.0.1/16 first, binds and advertises the apiserver on 10.88.0.1 only (so pods
reach it through the `kubernetes` Service, 10.96.0.1:443, and nothing listens on an outside
interface), guards 10.88.0.0/16 in INPUT to lo and cni0, gives the apiserver a kubelet client
certificate and taints the kwok node `kwok.x-k8s.io/node=fake:NoSchedule`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the plane's code lives in the modules below (cluster_*.py, netfilter_tables.py); what callers
# use is re-exported here (__all__), so `cluster.<name>` keeps working
from cluster_api import api_get, api_send
from cluster_bridge import GUARD_CHAIN, GUARD_JUMPS, bridge_down, bridge_up, link_exists
from cluster_common import (
    BRIDGE,
    BRIDGE_IP,
    COMPONENTS,
    DEFAULT_DIR,
    HACK,
    NODE_NAME,
    NODE_NAME_REAL,
    OWNER_FILE,
    POD_CIDR,
    REPO,
    SERVICE_CIDR,
    ClusterError,
    Plane,
    alive,
    binaries,
    check_alive,
    free_port,
    load_owner,
    log,
    print_processes,
    run,
    runs,
    set_owner,
    start_process,
    wait_for,
)
from cluster_pki import APISERVER_SANS, make_node_pki, make_pki, write_kubeconfig
from cluster_start import FAKE_NODE, FAKE_TAINT, up
from cluster_stop import down, reclaim_stale, restart
from netfilter_tables import (
    BUILTIN_CHAINS,
    delete_new_empty_tables,
    iptables_tables,
    nft_delete_table,
    table_is_empty,
)

__all__ = [
    "APISERVER_SANS",
    "BRIDGE",
    "BRIDGE_IP",
    "BUILTIN_CHAINS",
    "COMPONENTS",
    "DEFAULT_DIR",
    "FAKE_NODE",
    "FAKE_TAINT",
    "GUARD_CHAIN",
    "GUARD_JUMPS",
    "HACK",
    "NODE_NAME",
    "NODE_NAME_REAL",
    "OWNER_FILE",
    "POD_CIDR",
    "REPO",
    "SERVICE_CIDR",
    "ClusterError",
    "Plane",
    "alive",
    "api_get",
    "api_send",
    "binaries",
    "bridge_down",
    "bridge_up",
    "check_alive",
    "delete_new_empty_tables",
    "down",
    "free_port",
    "iptables_tables",
    "link_exists",
    "load_owner",
    "log",
    "main",
    "make_node_pki",
    "make_pki",
    "nft_delete_table",
    "print_processes",
    "reclaim_stale",
    "restart",
    "run",
    "runs",
    "set_owner",
    "start_process",
    "status",
    "table_is_empty",
    "up",
    "wait_for",
    "write_kubeconfig",
]


def status(plane: Plane) -> int:
    pids = plane.load().get("pids", {})
    ok = print_processes(pids, 26)
    if not pids:
        return 1
    print(f"kubeconfig: {plane.kubeconfig}")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["up", "down", "status", "build"])
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"state directory (default {DEFAULT_DIR})")
    p.add_argument("--port", type=int, default=None, help="apiserver port (default: a free one)")
    p.add_argument("--timeout", type=float, default=90, help="seconds to wait for each component")
    p.add_argument(
        "--real-node",
        action="store_true",
        help="ready for a real kubelet node (hack/node.py): apiserver on 10.88.0.1, kwok node tainted",
    )
    a = p.parse_args()
    plane = Plane(a.dir.resolve())
    try:
        if a.command == "up":
            up(plane, a.port, a.timeout, real_node=a.real_node)
            print(plane.kubeconfig)
        elif a.command == "down":
            return 1 if down(plane) else 0
        elif a.command == "build":
            for name, path in binaries().items():
                print(f"{name}: {path}")
        else:
            return status(plane)
    except ClusterError as e:
        log(f"ERROR: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
