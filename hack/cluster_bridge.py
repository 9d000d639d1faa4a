"""The real node's bridge cni0, which the plane creates in real-node mode (the apiserver lives on
it), and its INPUT guard in the mangle table."""

from __future__ import annotations

from pathlib import Path

from cluster_common import BRIDGE, BRIDGE_IP, OWNER_FILE, POD_CIDR, ClusterError, Plane, log, run
from netfilter_tables import delete_new_empty_tables, iptables_tables

GUARD_CHAIN = "KMS-BRIDGE-INPUT"
# INPUT jumps to the guard chain: what comes from the bridge, and what is addressed to it
GUARD_JUMPS = (
    ("-i", BRIDGE, "-m", "comment", "--comment", "kms-bridge-guard", "-j", GUARD_CHAIN),
    ("-d", POD_CIDR, "-m", "comment", "--comment", "kms-bridge-guard", "-j", GUARD_CHAIN),
)


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def bridge_up(plane: Plane, state: dict, apiserver_port: int) -> None:
    """Create the real node's bridge cni0 with 10.88.0.1/16 (IPv6 off on it), after the INPUT
    guard and before the apiserver binds that address. The guard: 10.88.0.0/16 answers only lo
    and cni0, and from cni0 (pods) the host accepts only the apiserver port and replies to its own
    connections (not the host's other services, whatever address they listen on). It lives in
    the mangle table, which runs before filter, so no rule kube-proxy prepends there can precede it."""
    if link_exists(BRIDGE):
        raise ClusterError(
            f"{BRIDGE} already exists: another real-node plane runs on this machine ({OWNER_FILE} names "
            "its directory), or something else made it; leaving it alone (hack/cluster.py down --dir "
            "<its dir>, hack/node.py down --dir <its dir>)"
        )
    state["bridge"] = {
        "tables_before": {"ip": iptables_tables("iptables-save"), "ip6": iptables_tables("ip6tables-save")}
    }
    plane.save(state)
    chain = ("iptables", "-w", "-t", "mangle", "-A", GUARD_CHAIN)
    run("iptables", "-w", "-t", "mangle", "-N", GUARD_CHAIN)
    run(*chain, "-i", "lo", "-j", "RETURN")
    run(*chain, "-i", BRIDGE, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN")
    apiserver = ("-d", f"{BRIDGE_IP}/32", "-p", "tcp", "--dport", str(apiserver_port))
    run(*chain, "-i", BRIDGE, *apiserver, "-j", "RETURN")
    run(*chain, "-j", "DROP")
    for jump in GUARD_JUMPS:
        run("iptables", "-w", "-t", "mangle", "-I", "INPUT", *jump)
    run("ip", "link", "add", BRIDGE, "type", "bridge")
    Path(f"/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6").write_text("1\n")
    run("ip", "addr", "add", f"{BRIDGE_IP}/16", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")
    log(f"bridge {BRIDGE} {BRIDGE_IP}/16 up; from it the host accepts only the apiserver port")


def bridge_down(state: dict) -> None:
    """Undo bridge_up: the bridge (with its veths, addresses and routes), the guard, and the
    nf_tables tables the guard created."""
    if "bridge" not in state:
        return
    if link_exists(BRIDGE):
        for veth in Path(f"/sys/class/net/{BRIDGE}/brif").iterdir():
            run("ip", "link", "del", veth.name, check=False)
        run("ip", "link", "del", BRIDGE)
    for jump in GUARD_JUMPS:
        while run("iptables", "-w", "-t", "mangle", "-D", "INPUT", *jump, check=False).returncode == 0:
            pass
    if GUARD_CHAIN in iptables_tables().get("mangle", {}).get("chains", {}):
        run("iptables", "-w", "-t", "mangle", "-F", GUARD_CHAIN)
        run("iptables", "-w", "-t", "mangle", "-X", GUARD_CHAIN)
    for problem in delete_new_empty_tables(state["bridge"]["tables_before"]):
        log(f"could not remove: {problem}")
    del state["bridge"]
    log(f"bridge {BRIDGE} and its INPUT guard removed")
