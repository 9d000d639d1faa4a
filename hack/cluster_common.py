"""The local control plane's names and addresses, its state (Plane) and its processes: the
binaries, starting a component with its log, liveness, waiting for a condition.

Shared by the modules of hack/cluster.py and hack/node.py; standard library only.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
DEFAULT_DIR = Path(os.environ.get("KMS_CLUSTER_DIR", REPO / ".kms" / "cluster"))
NODE_NAME = "kwok-node-0"
NODE_NAME_REAL = "kms-node"  # the real kubelet node of hack/node.py
SERVICE_CIDR = "10.96.0.0/16"
# the real node's bridge (hack/node.py): created by the plane in real-node mode, the apiserver lives on it
BRIDGE = "cni0"
BRIDGE_IP = "10.88.0.1"
POD_CIDR = "10.88.0.0/16"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# which plane and node hold the bridge (one per machine). A run killed mid-way (SIGKILL, a
# restarted sandbox) leaves cni0, rules and mounts behind; the next `up` finds their state
# directories here and tears them down (cluster_stop.reclaim_stale)
OWNER_FILE = Path(os.environ.get("KMS_REAL_NODE_OWNER", "/run/kube-mapserver/real-node.json"))


def log(msg: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class ClusterError(RuntimeError):
    """The plane could not be started; the message names the component and shows its log."""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; with check, raise ClusterError showing its stderr when it fails."""
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise ClusterError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def binaries(extra: tuple[str, ...] = ()) -> dict[str, Path]:
    """Build (once, cached by version) and locate the control-plane binaries (and `extra` ones,
    e.g. kubelet and kube-proxy for hack/node.py)."""
    out = subprocess.run([str(HACK / "build-binaries.sh")], check=True, stdout=subprocess.PIPE, text=True)
    dirs = [Path(p) for p in out.stdout.strip().splitlines()[-1].split(":")]
    names = (*COMPONENTS, "kubectl", *extra)
    found: dict[str, Path] = {}
    for name in names:
        for d in dirs:
            if (d / name).is_file():
                found[name] = d / name
    missing = set(names) - found.keys()
    if missing:
        raise ClusterError(f"binaries missing after build: {sorted(missing)} (looked in {dirs})")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Plane:
    """Paths and ports of one plane, persisted in DIR/state.json."""

    dir: Path

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    def load(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def save(self, state: dict) -> None:
        self.state_file.write_text(json.dumps(state, indent=2))

    def log_tail(self, component: str, lines: int = 30) -> str:
        path = self.dir / "logs" / f"{component}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def runs(state: dict) -> bool:
    """Whether a process that a state file records still runs as itself (same executable: a PID
    reused after a restart does not count)."""
    for name, pid in state.get("pids", {}).items():
        argv0 = state.get("argv", {}).get(name, [""])[0]
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if alive(pid) and (not argv0 or cmdline == argv0):
            return True
    return False


def load_owner() -> dict[str, str]:
    return json.loads(OWNER_FILE.read_text()) if OWNER_FILE.exists() else {}


def set_owner(**dirs: Path | None) -> None:
    """Record (a Path) or forget (None) the plane's or the node's state directory in OWNER_FILE."""
    owner = load_owner()
    for key, d in dirs.items():
        if d is None:
            owner.pop(key, None)
        else:
            owner[key] = str(d)
    if owner:
        OWNER_FILE.parent.mkdir(parents=True, exist_ok=True)
        OWNER_FILE.write_text(json.dumps(owner, indent=2))
    else:
        OWNER_FILE.unlink(missing_ok=True)
        if OWNER_FILE.parent.exists() and not any(OWNER_FILE.parent.iterdir()):
            OWNER_FILE.parent.rmdir()


def print_processes(pids: dict[str, int], width: int) -> bool:
    """One line per started process (running or DEAD), or "not running"; True if all run."""
    if not pids:
        print("not running")
        return False
    ok = True
    for name, pid in pids.items():
        a = alive(pid)
        ok &= a
        print(f"{name:{width}} pid {pid:<8} {'running' if a else 'DEAD'}")
    return ok


def start_process(plane: Plane, state: dict, name: str, argv: list[str]) -> None:
    logs = plane.dir / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=plane.dir,
        )
    state.setdefault("pids", {})[name] = proc.pid
    state.setdefault("argv", {})[name] = argv
    plane.save(state)
    log(f"started {name} (pid {proc.pid})")


def check_alive(plane: Plane, state: dict) -> None:
    for name, pid in state.get("pids", {}).items():
        if not alive(pid):
            raise ClusterError(
                f"{name} (pid {pid}) exited during start-up; last log lines:\n{plane.log_tail(name)}"
            )


def wait_for(what: str, probe, plane: Plane, state: dict, timeout: float, component: str) -> None:
    """Poll probe() until it returns truthy; on timeout raise with the component's log tail."""
    deadline = time.monotonic() + timeout
    last_err = ""
    while time.monotonic() < deadline:
        check_alive(plane, state)
        try:
            if probe():
                return
        except Exception as e:
            last_err = f"{type(e).__name__}: {e}"
        time.sleep(0.25)
    raise ClusterError(
        f"timed out after {timeout:.0f}s waiting for {what} ({last_err}); last lines of {component}.log:\n"
        f"{plane.log_tail(component)}"
    )
