"""Stopping the node (down): its pods first, then its processes by PID, then the machine restored
to the snapshot taken at `up`."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from node_clients import _ctr, _kubectl
from node_common import (
    BRIDGE,
    DRAIN_TAINT,
    NODE_NAME,
    SERVICE_CIDR,
    Node,
    _ip_json,
    _run,
    _wait,
    cluster,
    log,
)
from node_restore import (
    remove_cgroups,
    remove_created_paths,
    remove_iptables_additions,
    restore_sysctls,
    unmount_ours,
)
from node_state import diff, snapshot


def _stop_pid(name: str, pid: int, grace: float = 15) -> None:
    if not cluster.alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    if not _wait(lambda: not cluster.alive(pid), grace, 0.1):
        log(f"{name} (pid {pid}) ignored SIGTERM; SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        _wait(lambda: not cluster.alive(pid), 5, 0.1)


def _shims(node: Node) -> list[int]:
    """containerd shims serving our containerd (found by our socket path on their command line)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if (
                    argv
                    and argv[0].endswith((b"containerd-shim-runc-v2", b"containerd-shim"))
                    and (str(node.sock).encode() in argv)
                ):
                    pids.append(int(proc.name))
    return pids


def _drain(node: Node, timeout: float) -> None:
    """Cordon and taint the node NoExecute (no new pods, DaemonSets' included), delete CoreDNS and
    every pod on the node (kubelet stops them: CNI DEL removes their veths), wait until containerd
    runs no task and no veth is left on the bridge."""
    coredns = node.dir / "coredns.yaml"
    _kubectl(node, "cordon", NODE_NAME, timeout=30)
    _kubectl(node, "taint", "node", NODE_NAME, f"{DRAIN_TAINT}:NoExecute", "--overwrite", timeout=30)
    if coredns.exists():
        _kubectl(node, "delete", "-f", str(coredns), "--ignore-not-found", "--wait=false", timeout=30)
    _kubectl(
        node,
        "delete",
        "pods",
        "--all-namespaces",
        f"--field-selector=spec.nodeName={NODE_NAME}",
        "--wait=true",
        f"--timeout={int(timeout)}s",
        timeout=timeout + 10,
    )

    def idle() -> bool:
        tasks = _ctr(node, "tasks", "ls", timeout=10).stdout.splitlines()[1:]
        ports = list(Path(f"/sys/class/net/{BRIDGE}/brif").iterdir()) if cluster.link_exists(BRIDGE) else []
        return not any("RUNNING" in t for t in tasks) and not ports

    if not _wait(idle, timeout, 0.25):
        log(f"pods not all stopped after {timeout:.0f}s; forcing")


def down(node: Node, timeout: float = 60) -> list[str]:
    """Stop the node and restore the machine to the snapshot taken at `up`: pods deleted first
    (CNI DEL), kube-proxy, kubelet and containerd stopped by PID, leftover shims and pod processes
    killed by PID, kube-proxy --cleanup, the node's iptables rules/chains (and tables it created),
    mounts, the service route, veths, cgroups, sysctls and system-wide paths removed/restored.
    Returns the differences that remain against that snapshot ([] when clean)."""
    t0 = time.monotonic()
    state = node.load()
    before = state.get("before")
    if not before:
        log("not running (no state)")
        return []
    pids = state.get("pids", {})
    plane_state = cluster.Plane(Path(state["cluster_dir"])).load()
    plane_up = bool(plane_state.get("pids")) and all(cluster.alive(p) for p in plane_state["pids"].values())
    if plane_up and cluster.alive(pids.get("kubelet", -1)) and cluster.alive(pids.get("containerd", -1)):
        _drain(node, timeout)
    for name in ("kube-proxy", "kubelet"):
        if name in pids:
            _stop_pid(name, pids[name])
    if cluster.alive(pids.get("containerd", -1)):
        for line in _ctr(node, "tasks", "ls", "-q", timeout=30).stdout.split():
            _ctr(node, "tasks", "kill", "-s", "SIGKILL", line, timeout=30)
            _ctr(node, "tasks", "delete", "-f", line, timeout=30)
        _stop_pid("containerd", pids["containerd"])
    # a shim exits shortly after its task is deleted; one that does not is killed
    _wait(lambda: not _shims(node), 5, 0.1)
    for pid in _shims(node):
        log(f"killing leftover shim pid {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if plane_up:
        _kubectl(node, "delete", "node", NODE_NAME, "--ignore-not-found", timeout=30)
    problems = remove_cgroups(before)  # kills what is left in the pods' cgroups first
    if "kube-proxy" in state.get("argv", {}):
        _run(state["argv"]["kube-proxy"][0], "--cleanup", timeout=60)
    plane_gone = not cluster.Plane(Path(state["cluster_dir"])).load().get("bridge")
    problems += remove_iptables_additions(before, state.get("plane_tables_before") if plane_gone else None)
    problems += unmount_ours(
        before, [node.dir, Path("/run/containerd"), Path("/var/lib/kubelet"), Path("/run/netns")]
    )
    # a pod netns freed by the unmount takes its veth with it, asynchronously
    old_links = {link["ifname"] for link in before["links"]}

    def no_new_veths() -> bool:
        return not [x for x in _ip_json("link", "show", "type", "veth") if x["ifname"] not in old_links]

    if not _wait(no_new_veths, 10):
        log("veths still there 10s after their network namespaces were unmounted")
    if cluster.link_exists(BRIDGE):
        for port in Path(f"/sys/class/net/{BRIDGE}/brif").iterdir():
            _run("ip", "link", "del", port.name)
    if state.get("route"):
        _run("ip", "route", "del", SERVICE_CIDR, "dev", BRIDGE)
    problems += remove_cgroups(before)
    problems += restore_sysctls(state.get("sysctls", {}))
    problems += remove_created_paths(before)
    state["pids"] = {}
    for key in ("before", "route", "timings"):
        state.pop(key, None)
    node.save(state)
    if cluster.load_owner().get("node") == str(node.dir):
        cluster.set_owner(node=None)
    left = diff(before, snapshot())
    for p in problems:
        log(f"could not restore: {p}")
    log(
        f"node stopped in {time.monotonic() - t0:.1f}s; "
        + ("machine as before" if not left else f"{len(left)} differences")
    )
    for item in left:
        log(f"  differs: {item}")
    return left
