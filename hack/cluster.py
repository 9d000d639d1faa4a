#!/usr/bin/env python3
"""Local Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (one fake node), built from the Go module proxy by build-binaries.sh.

Standard library only (plus the openssl CLI), so it runs before any venv exists.

    hack/cluster.py up   [--dir DIR] [--port 6443]   start, wait for readiness, print the kubeconfig
    hack/cluster.py down [--dir DIR]                 stop the processes it started (by PID)
    hack/cluster.py status [--dir DIR]

Pod and Service IPs in this plane are fake (kwok): nothing on the host connects to them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
DEFAULT_DIR = Path(os.environ.get("KMS_CLUSTER_DIR", REPO / ".kms" / "cluster"))
NODE_NAME = "kwok-node-0"
SERVICE_CIDR = "10.96.0.0/16"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def log(msg: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class ClusterError(RuntimeError):
    """The plane could not be started; the message names the component and shows its log."""


# --------------------------------------------------------------------------------------------
# binaries


def binaries() -> dict[str, Path]:
    """Build (once, cached by version) and locate the control-plane binaries."""
    out = subprocess.run([str(HACK / "build-binaries.sh")], check=True, stdout=subprocess.PIPE, text=True)
    dirs = [Path(p) for p in out.stdout.strip().splitlines()[-1].split(":")]
    found: dict[str, Path] = {}
    for name in (*COMPONENTS, "kubectl"):
        for d in dirs:
            if (d / name).is_file():
                found[name] = d / name
    missing = {*COMPONENTS, "kubectl"} - found.keys()
    if missing:
        raise ClusterError(f"binaries missing after build: {sorted(missing)} (looked in {dirs})")
    return found


# --------------------------------------------------------------------------------------------
# certificates (openssl CLI)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _client_cert(pki: Path, name: str, cn: str, org: str | None = None) -> None:
    subj = f"/CN={cn}" + (f"/O={org}" if org else "")
    _openssl(
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subj,
        cwd=pki,
    )
    (pki / f"{name}.ext").write_text(
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-out",
        f"{name}.crt",
        "-extfile",
        f"{name}.ext",
        cwd=pki,
    )


def make_pki(pki: Path) -> None:
    """CA, apiserver serving cert, one client cert per component, service-account key pair."""
    if (pki / "done").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=kube-mapserver-local-ca",
        cwd=pki,
    )
    (pki / "apiserver.ext").write_text(
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    )
    _openssl(
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "apiserver.key",
        "-out",
        "apiserver.csr",
        "-subj",
        "/CN=kube-apiserver",
        cwd=pki,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "apiserver.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-out",
        "apiserver.crt",
        "-extfile",
        "apiserver.ext",
        cwd=pki,
    )
    _client_cert(pki, "admin", "kubernetes-admin", "system:masters")
    _client_cert(pki, "controller-manager", "system:kube-controller-manager")
    _client_cert(pki, "scheduler", "system:kube-scheduler")
    _client_cert(pki, "kwok", "kwok-controller", "system:masters")
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    (pki / "done").write_text("ok\n")


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    """A kubeconfig with absolute paths to the CA and the user's client certificate."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "kms-local",
                        "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
                    }
                ],
                "users": [
                    {
                        "name": user,
                        "user": {
                            "client-certificate": str(pki / f"{user}.crt"),
                            "client-key": str(pki / f"{user}.key"),
                        },
                    }
                ],
                "contexts": [{"name": "kms-local", "context": {"cluster": "kms-local", "user": user}}],
                "current-context": "kms-local",
            },
            indent=2,
        )
    )


# --------------------------------------------------------------------------------------------
# processes


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


def api_get(state: dict, pki: Path, path: str, timeout: float = 5) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    url = f"https://127.0.0.1:{state['ports']['apiserver']}{path}"
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def api_send(state: dict, pki: Path, method: str, path: str, body: dict) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    url = f"https://127.0.0.1:{state['ports']['apiserver']}{path}"
    req = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


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


def up(plane: Plane, port: int | None, timeout: float) -> None:
    started = time.monotonic()
    state = plane.load()
    if state.get("pids") and all(alive(p) for p in state["pids"].values()):
        log(f"already running; kubeconfig: {plane.kubeconfig}")
        return
    if state.get("pids"):
        down(plane)  # half-dead plane from an earlier run: clean it up first
    bins = binaries()
    plane.dir.mkdir(parents=True, exist_ok=True)
    pki = plane.dir / "pki"
    make_pki(pki)
    ports = {
        "etcd": free_port(),
        "etcd_peer": free_port(),
        "apiserver": port or free_port(),
        "controller_manager": free_port(),
        "scheduler": free_port(),
        "kwok": free_port(),
    }
    state = {"ports": ports, "pids": {}}
    plane.save(state)
    server = f"https://127.0.0.1:{ports['apiserver']}"
    for user in ("admin", "controller-manager", "scheduler", "kwok"):
        write_kubeconfig(plane.dir / f"{user}.kubeconfig", server, pki, user)
    (plane.dir / "admin.kubeconfig").replace(plane.kubeconfig)

    try:
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

        start_process(
            plane,
            state,
            "kube-apiserver",
            [
                str(bins["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                # loopback advertise address: the endpoint reconciler would refuse it
                "--endpoint-reconciler-type=none",
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

        code, body = api_send(state, pki, "POST", "/api/v1/nodes", FAKE_NODE)
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
            return not any(t.get("effect") in ("NoSchedule", "NoExecute") for t in taints)

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
    """Stop every process this plane started, newest first; return PIDs that would not die."""
    state = plane.load()
    pids = state.get("pids", {})
    for name in reversed(list(pids)):
        pid = pids[name]
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids.values()):
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
    if plane.dir.exists():
        plane.save(state)
    return left


def status(plane: Plane) -> int:
    state = plane.load()
    pids = state.get("pids", {})
    if not pids:
        print("not running")
        return 1
    ok = True
    for name, pid in pids.items():
        a = alive(pid)
        ok &= a
        print(f"{name:26} pid {pid:<8} {'running' if a else 'DEAD'}")
    print(f"kubeconfig: {plane.kubeconfig}")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["up", "down", "status", "build"])
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"state directory (default {DEFAULT_DIR})")
    p.add_argument("--port", type=int, default=None, help="apiserver port (default: a free one)")
    p.add_argument("--timeout", type=float, default=90, help="seconds to wait for each component")
    a = p.parse_args()
    plane = Plane(a.dir.resolve())
    try:
        if a.command == "up":
            up(plane, a.port, a.timeout)
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
