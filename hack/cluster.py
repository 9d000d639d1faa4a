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
import contextlib
import json
import os
import signal
import socket
import ssl
import struct
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
NODE_NAME_REAL = "kms-node"  # the real kubelet node of hack/node.py
SERVICE_CIDR = "10.96.0.0/16"
# the real node's bridge (hack/node.py): created by the plane in real-node mode, the apiserver lives on it
BRIDGE = "cni0"
BRIDGE_IP = "10.88.0.1"
POD_CIDR = "10.88.0.0/16"
GUARD_CHAIN = "KMS-BRIDGE-INPUT"
# INPUT jumps to the guard chain: what comes from the bridge, and what is addressed to it
GUARD_JUMPS = (
    ("-i", BRIDGE, "-m", "comment", "--comment", "kms-bridge-guard", "-j", GUARD_CHAIN),
    ("-d", POD_CIDR, "-m", "comment", "--comment", "kms-bridge-guard", "-j", GUARD_CHAIN),
)
FAKE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def log(msg: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class ClusterError(RuntimeError):
    """The plane could not be started; the message names the component and shows its log."""


# --------------------------------------------------------------------------------------------
# binaries


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


def _server_cert(pki: Path, name: str, cn: str, sans: str) -> None:
    """A serving certificate signed by the plane's CA (sans: openssl subjectAltName value)."""
    (pki / f"{name}.ext").write_text(
        f"subjectAltName={sans}\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    )
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
        f"/CN={cn}",
        cwd=pki,
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


APISERVER_SANS = (
    f"IP:127.0.0.1,IP:10.96.0.1,IP:{BRIDGE_IP},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
    "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
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
    _server_cert(pki, "apiserver", "kube-apiserver", APISERVER_SANS)
    _client_cert(pki, "admin", "kubernetes-admin", "system:masters")
    _client_cert(pki, "controller-manager", "system:kube-controller-manager")
    _client_cert(pki, "scheduler", "system:kube-scheduler")
    _client_cert(pki, "kwok", "kwok-controller", "system:masters")
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    (pki / "done").write_text("ok\n")


def make_node_pki(pki: Path) -> None:
    """The certificates a real node needs, signed by the plane's CA (idempotent): the kubelet's
    client (system:node:kms-node in system:nodes) and serving (10.88.0.1, kms-node) certs, the
    kube-proxy client (system:kube-proxy) and the apiserver's kubelet client
    (kube-apiserver-kubelet-client, bound to ClusterRole system:kubelet-api-admin by up()).
    A plane made before the bridge address was a SAN gets a new apiserver serving cert."""
    ext = pki / "apiserver.ext"
    if BRIDGE_IP not in (ext.read_text() if ext.exists() else ""):
        _server_cert(pki, "apiserver", "kube-apiserver", APISERVER_SANS)
    wanted = {
        "kubelet": lambda: _client_cert(pki, "kubelet", f"system:node:{NODE_NAME_REAL}", "system:nodes"),
        "kubelet-serving": lambda: _server_cert(
            pki, "kubelet-serving", NODE_NAME_REAL, f"IP:{BRIDGE_IP},DNS:{NODE_NAME_REAL}"
        ),
        "kube-proxy": lambda: _client_cert(pki, "kube-proxy", "system:kube-proxy"),
        "apiserver-kubelet-client": lambda: _client_cert(
            pki, "apiserver-kubelet-client", "kube-apiserver-kubelet-client"
        ),
    }
    for name, make in wanted.items():
        if not (pki / f"{name}.crt").exists():
            make()


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


def _opener(ctx: ssl.SSLContext) -> urllib.request.OpenerDirector:
    """Straight to the apiserver: never through a proxy from the environment."""
    handlers = (urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    return urllib.request.build_opener(*handlers)


def api_get(state: dict, pki: Path, path: str, timeout: float = 5) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    url = f"https://{state.get('host', '127.0.0.1')}:{state['ports']['apiserver']}{path}"
    try:
        with _opener(ctx).open(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def api_send(state: dict, pki: Path, method: str, path: str, body: dict) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    url = f"https://{state.get('host', '127.0.0.1')}:{state['ports']['apiserver']}{path}"
    req = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with _opener(ctx).open(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# --------------------------------------------------------------------------------------------
# real-node networking: the bridge the apiserver lives on, its INPUT guard, iptables helpers

BUILTIN_CHAINS = {
    "filter": {"INPUT", "FORWARD", "OUTPUT"},
    "nat": {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
    "mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
    "raw": {"PREROUTING", "OUTPUT"},
    "security": {"INPUT", "FORWARD", "OUTPUT"},
}


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; with check, raise ClusterError showing its stderr when it fails."""
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise ClusterError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def iptables_tables(save: str = "iptables-save") -> dict[str, dict]:
    """{table: {"chains": {chain: policy or "-"}, "rules": [rule lines]}} as `save` prints them,
    without counters and comments; {} when the command is missing."""
    try:
        out = run(save, check=False).stdout
    except FileNotFoundError:
        return {}
    tables: dict[str, dict] = {}
    table: dict = {}
    for line in out.splitlines():
        if line.startswith("*"):
            table = tables.setdefault(line[1:], {"chains": {}, "rules": []})
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            table["chains"][name] = policy
        elif line.startswith("-A "):
            table["rules"].append(line)
    return tables


def table_is_empty(name: str, table: dict) -> bool:
    """Only built-in chains, all with policy ACCEPT, and no rules: the same as no table at all."""
    return not table["rules"] and all(
        chain in BUILTIN_CHAINS.get(name, ()) and policy == "ACCEPT"
        for chain, policy in table["chains"].items()
    )


def nft_delete_table(family: str, table: str) -> None:
    """Delete one nf_tables table (family "ip" or "ip6") over netlink: iptables-nft cannot delete
    tables, and the `nft` CLI is not installed. Callers check the table is theirs and empty."""
    nfnl_subsys_nftables, nft_msg_deltable = 10, 2
    nlm_f_request, nlm_f_ack, nlmsg_error = 1, 4, 2

    def msg(msg_type: int, flags: int, seq: int, fam: int, res_id: int, payload: bytes = b"") -> bytes:
        body = struct.pack("=BB", fam, 0) + struct.pack("!H", res_id) + payload
        return struct.pack("=IHHII", 16 + len(body), msg_type, flags, seq, 0) + body

    name = table.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(name), 1) + name  # NFTA_TABLE_NAME
    attr += b"\0" * (-len(attr) % 4)
    fam = {"ip": 2, "ip6": 10}[family]
    batch = (
        msg(0x10, nlm_f_request, 1, 0, nfnl_subsys_nftables)  # NFNL_MSG_BATCH_BEGIN
        + msg((nfnl_subsys_nftables << 8) | nft_msg_deltable, nlm_f_request | nlm_f_ack, 2, fam, 0, attr)
        + msg(0x11, nlm_f_request, 3, 0, nfnl_subsys_nftables)  # NFNL_MSG_BATCH_END
    )
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12) as sock:  # NETLINK_NETFILTER
        sock.settimeout(5)
        sock.bind((0, 0))
        sock.sendto(batch, (0, 0))
        data = sock.recv(65536)
    off = 0
    while off + 16 <= len(data):
        length, msg_type = struct.unpack_from("=IH", data, off)
        if msg_type == nlmsg_error:
            (err,) = struct.unpack_from("=i", data, off + 16)
            if err:
                raise OSError(-err, f"deleting nf_tables table {family} {table}: {os.strerror(-err)}")
        off += max(length + (-length % 4), 16)


def delete_new_empty_tables(before: dict[str, dict[str, dict]]) -> list[str]:
    """Delete the ip/ip6 nf_tables tables that did not exist in `before` ({"ip": iptables_tables(),
    "ip6": ...}) and are empty now; return what could not be deleted."""
    failed = []
    for family, save in (("ip", "iptables-save"), ("ip6", "ip6tables-save")):
        for name, table in iptables_tables(save).items():
            if name not in before.get(family, {}) and table_is_empty(name, table):
                try:
                    nft_delete_table(family, name)
                except OSError as e:
                    failed.append(str(e))
    return failed


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
            f"{BRIDGE} already exists: another real-node plane runs on this machine, or one was not "
            "stopped (hack/cluster.py down --dir <its dir>); leaving it alone"
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


def up(plane: Plane, port: int | None, timeout: float, real_node: bool = False) -> None:
    """Start the plane and wait until it serves. real_node: ready for hack/node.py (see the module
    docstring): apiserver on the bridge address 10.88.0.1, kubelet client cert, kwok node tainted."""
    started = time.monotonic()
    state = plane.load()
    if state.get("pids") and all(alive(p) for p in state["pids"].values()):
        if bool(state.get("real_node")) != real_node:
            raise ClusterError(
                f"a plane runs in {plane.dir} with real_node={bool(state.get('real_node'))}; "
                f"stop it first to start one with real_node={real_node}"
            )
        log(f"already running; kubeconfig: {plane.kubeconfig}")
        return
    if state.get("pids") or state.get("bridge"):
        down(plane)  # half-dead plane from an earlier run: clean it up first
    bins = binaries()
    plane.dir.mkdir(parents=True, exist_ok=True)
    pki = plane.dir / "pki"
    make_pki(pki)
    if real_node:
        make_node_pki(pki)
    ports = {
        "etcd": free_port(),
        "etcd_peer": free_port(),
        "apiserver": port or free_port(),
        "controller_manager": free_port(),
        "scheduler": free_port(),
        "kwok": free_port(),
    }
    host = BRIDGE_IP if real_node else "127.0.0.1"
    state = {"ports": ports, "pids": {}, "host": host, "real_node": real_node}
    plane.save(state)
    server = f"https://{host}:{ports['apiserver']}"
    for user in ("admin", "controller-manager", "scheduler", "kwok"):
        write_kubeconfig(plane.dir / f"{user}.kubeconfig", server, pki, user)
    (plane.dir / "admin.kubeconfig").replace(plane.kubeconfig)

    try:
        if real_node:
            bridge_up(plane, state, ports["apiserver"])
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

        if real_node:
            # pods reach the apiserver through the `kubernetes` Service (10.96.0.1:443 -> kube-proxy ->
            # 10.88.0.1): it binds and advertises the bridge address only (nothing on an outside
            # interface), and logs/exec go to the kubelet by its InternalIP with a client cert
            address_args = [
                f"--bind-address={BRIDGE_IP}",
                f"--advertise-address={BRIDGE_IP}",
                "--endpoint-reconciler-type=lease",
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            ]
        else:
            # loopback advertise address: the endpoint reconciler would refuse it
            address_args = ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"]
            address_args.append("--endpoint-reconciler-type=none")
        start_process(
            plane,
            state,
            "kube-apiserver",
            [
                str(bins["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                *address_args,
                f"--secure-port={ports['apiserver']}",
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
        if real_node:
            binding = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "kms:apiserver-kubelet-client"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:kubelet-api-admin",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": "kube-apiserver-kubelet-client",
                    }
                ],
            }
            path = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
            code, body = api_send(state, pki, "POST", path, binding)
            if code not in (201, 409):
                raise ClusterError(f"could not bind the kubelet client role: HTTP {code} {body[:300]!r}")

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

        fake_node = json.loads(json.dumps(FAKE_NODE))
        if real_node:  # only pods that tolerate it go to the fake node; the rest to the real one
            fake_node["spec"] = {"taints": [FAKE_TAINT]}
        code, body = api_send(state, pki, "POST", "/api/v1/nodes", fake_node)
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
            return not any(
                t.get("effect") in ("NoSchedule", "NoExecute") and t.get("key") != FAKE_TAINT["key"]
                for t in taints
            )

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
