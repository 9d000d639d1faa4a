"""Stopping the plane (down) and restarting one of its components (restart), by PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cluster_api import api_get
from cluster_bridge import bridge_down
from cluster_common import HACK, Plane, alive, load_owner, log, runs, set_owner, start_process, wait_for


def restart(plane: Plane, component: str, timeout: float = 60) -> None:
    """Stop one component (SIGTERM, then SIGKILL) and start it again with the same arguments;
    for the apiserver, wait until /readyz answers again. Chaos tests use this."""
    state = plane.load()
    pid = state["pids"][component]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.2)
    start_process(plane, state, component, state["argv"][component])
    pki = plane.dir / "pki"
    wait_for(
        "kube-apiserver /readyz",
        lambda: api_get(state, pki, "/readyz")[0] == 200,
        plane,
        state,
        timeout,
        component,
    )


def down(plane: Plane, grace: float = 10) -> list[int]:
    """Stop every process this plane started, newest first and etcd last (an apiserver with the
    lease endpoint reconciler removes its lease on the way out); return PIDs that would not die."""
    state = plane.load()
    pids = state.get("pids", {})
    for batch in ([n for n in reversed(list(pids)) if n != "etcd"], [n for n in pids if n == "etcd"]):
        for name in batch:
            if alive(pids[name]):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pids[name], signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(pids[n]) for n in batch):
            time.sleep(0.1)
    for name, pid in pids.items():
        if alive(pid):
            log(f"{name} (pid {pid}) ignored SIGTERM; sending SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    time.sleep(0.2)
    left = [p for p in pids.values() if alive(p)]
    if pids:
        log("stopped" if not left else f"processes still alive: {left}")
    state["pids"] = {}
    bridge_down(state)
    if plane.dir.exists():
        plane.save(state)
    if load_owner().get("plane") == str(plane.dir):
        set_owner(plane=None)
    return left


def reclaim_stale() -> None:
    """Tear down the real-node plane and node that OWNER_FILE names when none of their processes
    runs any more (a run killed mid-way left the bridge, rules and mounts), so that a new plane can
    take the bridge. A plane or node that still runs is left alone (bridge_up then refuses)."""
    owner = load_owner()
    if not owner:
        return
    node_file = Path(owner.get("node", "/nonexistent")) / "state.json"
    node_state = json.loads(node_file.read_text()) if node_file.exists() else {}
    plane = Plane(Path(owner["plane"])) if "plane" in owner else None
    if runs(node_state) or (plane and runs(plane.load())):
        return
    if "node" in owner:
        log(f"a killed run left its node in {owner['node']}: tearing it down")
        node_py = str(HACK / "node.py")
        r = subprocess.run([sys.executable, node_py, "down", "--dir", owner["node"]], check=False)
        if r.returncode:
            log(f"hack/node.py down --dir {owner['node']} left differences (exit {r.returncode})")
    if plane:
        log(f"a killed run left its plane in {plane.dir}: tearing it down")
        down(plane)
    set_owner(plane=None, node=None)
