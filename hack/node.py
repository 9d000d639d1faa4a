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
import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
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

# sysctls kubelet, kube-proxy and the CNI plugins may change (restored by down)
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv4.conf.default.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.ipv6.conf.all.forwarding",
    "net.ipv6.conf.default.forwarding",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
    "net.netfilter.nf_conntrack_udp_timeout",
    "net.netfilter.nf_conntrack_udp_timeout_stream",
)
SYSCTL_GLOBS = ("net/bridge/*",)
# system-wide paths the node's tools (and buildah, for images) create despite every relocation
SYSTEM_PATHS = (
    "/run/containerd",
    "/var/lib/containerd",
    "/opt/containerd",
    "/var/lib/kubelet",
    "/var/lib/kube-proxy",
    "/var/lib/cni",
    "/etc/cni",
    "/opt/cni",
    "/usr/libexec/kubernetes",
    "/etc/kubernetes",
    "/run/kubernetes",
    "/var/log/pods",
    "/var/log/containers",
    "/run/netns",
    "/run/xtables.lock",
    "/run/runc",
    "/var/lib/containers/cache",
    "/etc/containers/networks",
    "/run/containers",
)
BUILDAH_PATHS = ("/var/lib/containers/cache", "/etc/containers/networks", "/run/containers", "/run/runc")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_NAMES = ("kubepods", "k8s.io")  # kubelet (cgroupfs driver) and containerd's namespace
OUR_COMMS = {
    "containerd",
    "containerd-shim",
    "containerd-shim-runc-v2",
    "kubelet",
    "kube-proxy",
    "runc",
    "runc:[2:INIT]",
    "pause",
    "coredns",
}
# carrier state, not configuration: an empty bridge has a carrier until its first port comes and goes
CARRIER_FLAGS = {"LOWER_UP", "NO-CARRIER", "DORMANT", "M-DOWN"}
OUR_CHAIN = re.compile(r"^(KUBE-|CNI-)")


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


# --------------------------------------------------------------------------------------------
# machine state


def _run(*argv: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r


def _ip_json(*args: str) -> list[dict]:
    out = _run("ip", "-j", *args).stdout
    return json.loads(out) if out.strip() else []


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys", key.replace(".", "/"))


def sysctl_keys() -> list[str]:
    keys = set(SYSCTLS)
    for pattern in SYSCTL_GLOBS:
        keys.update(
            str(p.relative_to("/proc/sys")).replace("/", ".") for p in Path("/proc/sys").glob(pattern)
        )
    return sorted(k for k in keys if _sysctl_path(k).exists())


def read_sysctls() -> dict[str, str]:
    values = {}
    for key in sysctl_keys():
        with contextlib.suppress(OSError):
            values[key] = " ".join(_sysctl_path(key).read_text().split())
    return values


def _cgroup_dirs() -> list[str]:
    """The cgroups the node's tools make (kubepods*, k8s.io* at the top of every hierarchy, and
    everything under them); other cgroups belong to other processes of the machine."""
    dirs = []
    for ctrl in sorted(CGROUP_ROOT.iterdir()):
        if not ctrl.is_dir() or ctrl.is_symlink():
            continue
        for top in ctrl.iterdir():
            if top.is_dir() and top.name.startswith(CGROUP_NAMES):
                dirs.append(str(top.relative_to(CGROUP_ROOT)))
                for root, subdirs, _ in os.walk(top):
                    dirs.extend(str(Path(root, d).relative_to(CGROUP_ROOT)) for d in subdirs)
    return sorted(dirs)


def _mounts() -> list[str]:
    """Mount points with their fs type, less the image builder's (buildah's private storage under
    the cache, busy whenever hack/images.py builds, in any process: not the node's)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4].startswith(f"{BUILD_STORAGE}/"):
            continue
        fstype = fields[fields.index("-") + 1]
        out.append(f"{fields[4]} {fstype}")
    return sorted(out)


def _processes() -> list[str]:
    """Live processes of the node's kinds (zombies waiting for their parent do not count)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                comm = (proc / "comm").read_text().strip()
                if comm in OUR_COMMS and (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(comm)
    return sorted(found)


def snapshot() -> dict:
    """The machine state the node's tools touch, as a JSON-able dict: links, addresses, routes
    (all tables, v4 and v6), iptables/ip6tables rules per backend (nft and legacy, no counters),
    mount points, cgroup directories, sysctls, system-wide paths, and processes of the node's kind."""
    links = [
        {k: link.get(k) for k in ("ifname", "link_type", "mtu", "master")}
        | {"flags": [f for f in link.get("flags", []) if f not in CARRIER_FLAGS]}
        for link in _ip_json("link", "show")
    ]
    addrs = sorted(
        f"{a['ifname']} {i['family']} {i['local']}/{i['prefixlen']}"
        for a in _ip_json("addr", "show")
        for i in a.get("addr_info", [])
    )
    routes = []
    for family in ("-4", "-6"):
        for r in _ip_json(family, "route", "show", "table", "all"):
            r = {k: v for k, v in r.items() if k not in ("expires", "metrics", "pref")}
            r["flags"] = [f for f in r.get("flags", []) if f != "linkdown"]
            routes.append(f"{family} " + json.dumps(r, sort_keys=True))
    iptables = {
        family: cluster.iptables_tables(cmd)
        for family, cmd in (
            ("ip", "iptables-save"),
            ("ip6", "ip6tables-save"),
            ("ip-legacy", "iptables-legacy-save"),
            ("ip6-legacy", "ip6tables-legacy-save"),
        )
    }
    return {
        "links": sorted(links, key=lambda link: link["ifname"]),
        "addrs": addrs,
        "routes": sorted(routes),
        "iptables": iptables,
        "mounts": _mounts(),
        "cgroups": _cgroup_dirs(),
        "sysctls": read_sysctls(),
        "paths": {p: os.path.lexists(p) for p in SYSTEM_PATHS},
        "processes": _processes(),
    }


def _multiset_diff(what: str, before: list, after: list) -> list[str]:
    b = Counter(json.dumps(x, sort_keys=True) if not isinstance(x, str) else x for x in before)
    a = Counter(json.dumps(x, sort_keys=True) if not isinstance(x, str) else x for x in after)
    out = [f"{what}: added {x}" for x in sorted((a - b).elements())]
    out += [f"{what}: removed {x}" for x in sorted((b - a).elements())]
    return out


def diff(before: dict, after: dict) -> list[str]:
    """Human-readable differences between two snapshot() results ([] when equal)."""
    out: list[str] = []
    for key in ("links", "addrs", "routes", "mounts", "cgroups", "processes"):
        out += _multiset_diff(key, before.get(key, []), after.get(key, []))
    for family in sorted({*before.get("iptables", {}), *after.get("iptables", {})}):
        tb = before.get("iptables", {}).get(family, {})
        ta = after.get("iptables", {}).get(family, {})
        for name in sorted({*tb, *ta}):
            if name not in tb:
                out.append(
                    f"iptables {family}: table {name} created" + (" (empty)" if not ta[name]["rules"] else "")
                )
            elif name not in ta:
                out.append(f"iptables {family}: table {name} deleted")
            if name not in tb or name not in ta:
                continue
            where = f"iptables {family} {name}"
            out += _multiset_diff(f"{where} chains", _chains(tb[name]), _chains(ta[name]))
            rules = _multiset_diff(f"{where} rules", tb[name]["rules"], ta[name]["rules"])
            if not rules and tb[name]["rules"] != ta[name]["rules"]:
                rules = [f"{where}: rules reordered"]
            out += rules
    sb, sa = before.get("sysctls", {}), after.get("sysctls", {})
    out += [f"sysctl {k}: {sb[k]} -> {sa[k]}" for k in sorted(sb.keys() & sa.keys()) if sb[k] != sa[k]]
    pb, pa = before.get("paths", {}), after.get("paths", {})
    for p in sorted(pb.keys() & pa.keys()):
        if pb[p] != pa[p]:
            out.append(f"path {p}: {'exists' if pb[p] else 'absent'} -> {'exists' if pa[p] else 'absent'}")
    return out


def _chains(table: dict) -> list[str]:
    return [f"{c} {p}" for c, p in table["chains"].items()]


# --------------------------------------------------------------------------------------------
# restoring the machine (each step touches only what the node created, by exact name)


def remove_iptables_additions(before: dict, tables_before: dict | None = None) -> list[str]:
    """Delete the rules and chains added since `before` (a snapshot) that are the node's:
    KUBE-*/CNI-* chains, jumps to them and the no-egress rules; then the nf_tables tables that
    were absent before (or from `tables_before`, {"ip": ..., "ip6": ...}) and are empty now.
    Returns problems."""
    problems = []
    for family, save, restore in (
        ("ip", "iptables-save", "iptables-restore"),
        ("ip6", "ip6tables-save", "ip6tables-restore"),
    ):
        was = before["iptables"].get(family, {})
        for name, table in cluster.iptables_tables(save).items():
            old = was.get(name, {"chains": {}, "rules": []})
            added = Counter(table["rules"]) - Counter(old["rules"])
            new_chains = [c for c in table["chains"] if c not in old["chains"] and OUR_CHAIN.match(c)]
            deletes = [
                "-D" + rule[2:]
                for rule in added.elements()
                if not OUR_CHAIN.match(rule.split()[1])
                and (re.search(r" -[jg] (KUBE-|CNI-)", rule) or NO_EGRESS in rule)
            ]
            if not deletes and not new_chains:
                continue
            lines = [f"*{name}", *deletes]
            lines += [f"-F {c}" for c in new_chains] + [f"-X {c}" for c in new_chains] + ["COMMIT", ""]
            r = subprocess.run(
                [restore, "-w", "--noflush"], input="\n".join(lines), capture_output=True, text=True
            )
            if r.returncode != 0:  # one by one, so one stale line does not keep the rest
                for line in lines[1:-2]:
                    _run(save.replace("-save", ""), "-w", "-t", name, *shlex.split(line))
    for family, save in (("ip", "iptables-save"), ("ip6", "ip6tables-save")):
        left = [
            f"{family} {t}: {r}"
            for t, table in cluster.iptables_tables(save).items()
            for r in table["rules"]
            if r not in before["iptables"].get(family, {}).get(t, {}).get("rules", [])
            and (OUR_CHAIN.match(r.split()[1]) or NO_EGRESS in r or " KUBE-" in r)
        ]
        problems += [f"iptables rule left: {x}" for x in left]
    problems += cluster.delete_new_empty_tables(
        tables_before or {fam: before["iptables"].get(fam, {}) for fam in ("ip", "ip6")}
    )
    return problems


def unmount_ours(before: dict, roots: list[Path]) -> list[str]:
    """Unmount (deepest first) every mount point that appeared since `before` under one of
    `roots`; lazily when busy. Returns what stays mounted."""
    was = {m.split()[0] for m in before["mounts"]}

    def ours() -> list[str]:
        points = {m.split()[0] for m in _mounts()} - was
        return sorted(
            (p for p in points if any(p == str(r) or p.startswith(f"{r}/") for r in roots)),
            key=lambda p: (-p.count("/"), p),
        )

    for point in ours():
        if _run("umount", point).returncode != 0:
            _run("umount", "-l", point)
    for point in ours():  # stacked mounts: once more
        _run("umount", "-l", point)
    return [f"still mounted: {p}" for p in ours()]


def remove_cgroups(before: dict) -> list[str]:
    """rmdir (deepest first) the kubepods/k8s.io cgroups that appeared since `before`, in every
    hierarchy, after killing any process still in them (the node's pods)."""
    was = set(before["cgroups"])
    new = [d for d in _cgroup_dirs() if d not in was]
    pids = set()
    for d in new:
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (CGROUP_ROOT / d / "cgroup.procs").read_text().split())
    for pid in pids:
        log(f"killing pid {pid}, left in a pod cgroup ({_comm(pid)})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait(lambda: not any(cluster.alive(p) for p in pids), 10)
    problems = []
    for d in sorted(new, key=lambda d: -d.count("/")):
        for _ in range(50):
            try:
                (CGROUP_ROOT / d).rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as e:
                err = e
                time.sleep(0.1)
        else:
            problems.append(f"cgroup {d}: {err}")
    return problems


def restore_sysctls(saved: dict[str, str]) -> list[str]:
    problems = []
    current = read_sysctls()
    for key, value in saved.items():
        if key in current and current[key] != value:
            try:
                _sysctl_path(key).write_text(value + "\n")
                log(f"sysctl {key} {current[key]} -> {value} (restored)")
            except OSError as e:
                problems.append(f"sysctl {key}: {e}")
    return problems


def remove_created_paths(before: dict) -> list[str]:
    """Remove the system-wide paths that did not exist in `before` (buildah's only while no
    buildah runs: they may belong to an image build in progress)."""
    problems = []
    buildah_running = any(
        _comm(int(p.name)) == "buildah" for p in Path("/proc").iterdir() if p.name.isdigit()
    )
    for path, existed in before["paths"].items():
        if existed or not os.path.lexists(path) or (path in BUILDAH_PATHS and buildah_running):
            continue
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            log(f"removed {path} (created while the node ran)")
        except OSError as e:
            problems.append(f"{path}: {e}")
    return problems


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


# --------------------------------------------------------------------------------------------
# helpers


def _wait(probe: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if probe():
                return True
        time.sleep(interval)
    return False


def _render(template: str, dest: Path, **values: object) -> Path:
    text = string.Template((TEMPLATES / template).read_text()).substitute(
        {k: str(v) for k, v in values.items()}
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    return dest


def _ctr(node: Node, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return _run("ctr", "--address", str(node.sock), "--namespace", "k8s.io", *args, timeout=timeout)


def _kubectl(
    node: Node, *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    state = node.load()
    argv = [state["kubectl"], f"--kubeconfig={node.kubeconfig}", *args]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)


def _plane(node: Node) -> tuple[dict, Path]:
    cdir = Path(node.load()["cluster_dir"])
    return cluster.Plane(cdir).load(), cdir / "pki"


def _api_json(node: Node, path: str) -> dict:
    state, pki = _plane(node)
    code, body = cluster.api_get(state, pki, path)
    if code != 200:
        raise NodeError(f"GET {path}: HTTP {code} {body[:200]!r}")
    return json.loads(body)


def _condition(obj: dict, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True"
        for c in obj.get("status", {}).get("conditions", [])
    )


def archive_digest(archive: Path, ref: str) -> str | None:
    """The manifest digest an OCI archive holds for `ref` (what `ctr images ls` shows once imported)."""
    try:
        with tarfile.open(archive, "r:") as tar:
            member = tar.extractfile("index.json")
            index = json.load(member) if member else {}
    except (OSError, KeyError, tarfile.TarError, ValueError):
        return None
    manifests = index.get("manifests", [])
    for m in manifests:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") in (ref, ref.rsplit(":", 1)[-1]):
            return m.get("digest")
    return manifests[0].get("digest") if len(manifests) == 1 else None


def import_images(node: Node, manifest: dict[str, dict]) -> None:
    """Import every archive of the images manifest into containerd's k8s.io namespace, skipping
    those already there with the same ref and digest."""
    present = {}
    for line in _ctr(node, "images", "ls").stdout.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 3:
            present[cols[0]] = cols[2]
    for name, entry in sorted(manifest.items()):
        ref, archive = entry["ref"], Path(entry["archive"])
        digest = archive_digest(archive, ref)
        if digest and present.get(ref) == digest:
            log(f"image {name}: {ref} already imported")
            continue
        size = archive.stat().st_size / 2**20
        t0 = time.monotonic()
        log(f"image {name}: importing {ref} from {archive} ({size:.0f} MiB)")
        r = _ctr(node, "images", "import", str(archive))
        if r.returncode != 0:
            raise NodeError(f"ctr images import {archive} failed: {r.stderr.strip()[-1000:]}")
        refs = {ln.split()[0] for ln in _ctr(node, "images", "ls").stdout.splitlines()[1:] if ln.strip()}
        if ref not in refs:
            raise NodeError(f"importing {archive} did not give image {ref} (containerd has: {sorted(refs)})")
        log(f"image {name}: imported in {time.monotonic() - t0:.1f}s")


def dns_query(name: str, server: str = CLUSTER_DNS, timeout: float = 2) -> list[str]:
    """A records for `name` from `server` (UDP 53): the host asks the cluster DNS through its
    ClusterIP, which kube-proxy maps onto the CoreDNS pod."""
    qid = os.getpid() & 0xFFFF
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    packet += (
        b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, 53))
        data = s.recv(4096)
    _, flags, qd, an, _, _ = struct.unpack_from("!HHHHHH", data)
    if flags & 0xF:
        raise NodeError(f"DNS {name}: rcode {flags & 0xF}")
    off = 12
    for _ in range(qd):
        while data[off]:
            off += data[off] + 1
        off += 5
    found = []
    for _ in range(an):
        off += 2 if data[off] & 0xC0 == 0xC0 else len(data[off:].split(b"\0", 1)[0]) + 1
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", data, off)
        off += 10
        if rtype == 1 and rdlen == 4:
            found.append(socket.inet_ntoa(data[off : off + 4]))
        off += rdlen
    return found


# --------------------------------------------------------------------------------------------
# up / down


def _check_preconditions(plane_state: dict) -> None:
    if os.geteuid() != 0:
        raise NodeError("the node needs root (containerd, runc, iptables, mounts, cgroups)")
    for tool in ("containerd", "ctr", "runc", "iptables", "ip6tables", "ip", "umount"):
        if not shutil.which(tool):
            raise NodeError(f"{tool} not found (hack/setup.sh installs containerd runc iptables ...)")
    if not Path("/usr/lib/cni/bridge").exists():
        raise NodeError("/usr/lib/cni/bridge not found (apt-get install containernetworking-plugins)")
    if not plane_state.get("real_node"):
        raise NodeError("the plane was not started for a real node: hack/cluster.py up --real-node")
    if not all(cluster.alive(p) for p in plane_state.get("pids", {}).values()) or not plane_state.get("pids"):
        raise NodeError("the plane is not running (hack/cluster.py up --real-node)")
    if not cluster.link_exists(BRIDGE):
        raise NodeError(f"bridge {BRIDGE} missing: the plane creates it (hack/cluster.py up --real-node)")
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex((NODE_IP, KUBELET_PORT)) == 0:
            raise NodeError(f"something already listens on {NODE_IP}:{KUBELET_PORT}: another node runs here")


def up(
    node: Node,
    plane: cluster.Plane | Path,
    images: Path | dict = DEFAULT_MANIFEST,
    timeout: float = 180,
    dns_check: bool = True,
) -> dict[str, float]:
    """Start containerd, kubelet, kube-proxy and CoreDNS beside the running plane (a Plane or its
    directory; started with real_node=True), import every image of the manifest (its path, or the
    dict hack/images.py's build() returns), and wait until the node is Ready, CoreDNS is Ready and
    a pod resolves kubernetes.default.svc.cluster.local. Returns timings in seconds since
    containerd's start (containerd_ready, node_ready, coredns_ready), images (import) and total."""
    t0 = time.monotonic()
    cluster_dir = Path(getattr(plane, "dir", plane)).resolve()
    state = node.load()
    if state.get("pids") and all(cluster.alive(p) for p in state["pids"].values()):
        log(f"already running ({node.dir})")
        return state.get("timings", {})
    if state.get("before"):
        log("cleaning up an earlier node that was not stopped")
        down(node)
    plane_state = cluster.Plane(cluster_dir).load()
    _check_preconditions(plane_state)
    manifest = images if isinstance(images, dict) else json.loads(Path(images).read_text())
    for required in ("pause", "coredns"):
        if required not in manifest:
            raise NodeError(f"the images manifest has no {required!r} image ({images})")
    bins = cluster.binaries(extra=("kubelet", "kube-proxy"))
    pki = cluster_dir / "pki"
    cluster.make_node_pki(pki)
    d = node.dir
    d.mkdir(parents=True, exist_ok=True)
    state = {
        "cluster_dir": str(cluster_dir),
        "kubectl": str(bins["kubectl"]),
        "before": snapshot(),
        "pids": {},
        # if the plane stops first, the tables it could not delete (the node's rules were in them)
        # are the node's to delete: those that did not exist before the plane
        "plane_tables_before": plane_state.get("bridge", {}).get("tables_before"),
    }
    state["sysctls"] = state["before"]["sysctls"]
    node.save(state)
    timings: dict[str, float] = {}
    try:
        _start(node, state, bins, manifest, pki, plane_state, timeout, timings, dns_check)
    except BaseException:
        log(f"start-up failed; logs stay in {d / 'logs'}; cleaning up")
        down(node)
        raise
    timings["total"] = round(time.monotonic() - t0, 1)
    state["timings"] = timings
    node.save(state)
    log(f"node {NODE_NAME} up in {timings['total']}s: {timings}")
    return timings


def _start(
    node: Node,
    state: dict,
    bins: dict[str, Path],
    manifest: dict,
    pki: Path,
    plane_state: dict,
    timeout: float,
    timings: dict[str, float],
    dns_check: bool,
) -> None:
    """up()'s steps: configs, network, containerd, kubelet + kube-proxy, images, CoreDNS, DNS checks."""
    d = node.dir
    server = f"https://{plane_state['host']}:{plane_state['ports']['apiserver']}"
    for sub in ("containerd/root", "containerd/state", "cni/conf", "cni/ipam", "kubelet/root", "kubelet/pki"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("kubelet/pod-logs", "kubelet/volume-plugins"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for stale in (d / "cni" / "conf").iterdir():
        stale.unlink()
    _render(
        "containerd.toml",
        d / "containerd" / "config.toml",
        ROOT=d / "containerd" / "root",
        STATE=d / "containerd" / "state",
        SOCKET=node.sock,
        PAUSE_IMAGE=manifest["pause"]["ref"],
        CNI_CONF_DIR=d / "cni" / "conf",
    )
    _render(
        "10-kms.conflist",
        d / "cni" / "conf" / "10-kms.conflist",
        BRIDGE=BRIDGE,
        POD_CIDR=POD_CIDR,
        NODE_IP=NODE_IP,
        SERVICE_CIDR=SERVICE_CIDR,
        IPAM_DIR=d / "cni" / "ipam",
    )
    resolv = d / "kubelet" / "resolv.conf"
    resolv.write_text("# kube-mapserver node: no upstream DNS (no egress)\n")
    _render(
        "kubelet.yaml",
        d / "kubelet" / "config.yaml",
        NODE_IP=NODE_IP,
        KUBELET_PORT=KUBELET_PORT,
        HEALTHZ_PORT=KUBELET_HEALTHZ_PORT,
        PKI=pki,
        SOCKET=node.sock,
        CLUSTER_DNS=CLUSTER_DNS,
        RESOLV_CONF=resolv,
        POD_LOGS_DIR=d / "kubelet" / "pod-logs",
        VOLUME_PLUGIN_DIR=d / "kubelet" / "volume-plugins",
    )
    ports = {"proxy_healthz": cluster.free_port(), "proxy_metrics": cluster.free_port()}
    state["ports"] = ports
    cluster.write_kubeconfig(d / "kubelet.kubeconfig", server, pki, "kubelet")
    cluster.write_kubeconfig(d / "kube-proxy.kubeconfig", server, pki, "kube-proxy")
    _render(
        "kube-proxy.yaml",
        d / "kube-proxy" / "config.yaml",
        KUBECONFIG=d / "kube-proxy.kubeconfig",
        NODE_NAME=NODE_NAME,
        POD_CIDR=POD_CIDR,
        HEALTHZ_PORT=ports["proxy_healthz"],
        METRICS_PORT=ports["proxy_metrics"],
        NODE_IP=NODE_IP,
    )

    # network: the service CIDR stays on our bridge, nothing is forwarded off it
    if not any(r.get("dst") == SERVICE_CIDR for r in _ip_json("route", "show", SERVICE_CIDR)):
        _run("ip", "route", "add", SERVICE_CIDR, "dev", BRIDGE, "src", NODE_IP, check=True)
        state["route"] = True
        node.save(state)
    for cmd in ("iptables", "ip6tables"):
        for rule in reversed(FORWARD_RULES):
            _run(cmd, "-w", "-t", "mangle", "-I", "FORWARD", *rule, check=True)

    # containerd
    t_containerd = time.monotonic()
    containerd = shutil.which("containerd") or "containerd"
    cluster.start_process(
        node, state, "containerd", [containerd, "--config", str(d / "containerd" / "config.toml")]
    )

    def cri_ok() -> bool:
        out = _run("ctr", "--address", str(node.sock), "plugins", "ls").stdout
        return bool(re.search(r"io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok", out))

    cluster.wait_for("containerd's CRI plugin (ctr plugins ls)", cri_ok, node, state, timeout, "containerd")
    timings["containerd_ready"] = round(time.monotonic() - t_containerd, 1)
    log(f"containerd ready in {timings['containerd_ready']}s")

    # kubelet and kube-proxy; the images are imported meanwhile (the node registers without them)
    kubelet_argv = [
        str(bins["kubelet"]),
        f"--config={d / 'kubelet' / 'config.yaml'}",
        f"--kubeconfig={d / 'kubelet.kubeconfig'}",
        f"--root-dir={d / 'kubelet' / 'root'}",
        f"--cert-dir={d / 'kubelet' / 'pki'}",
        f"--node-ip={NODE_IP}",
        f"--hostname-override={NODE_NAME}",
        f"--node-labels={NODE_LABEL[0]}={NODE_LABEL[1]}",
        "--v=2",
    ]
    cluster.start_process(node, state, "kubelet", kubelet_argv)
    cluster.start_process(
        node,
        state,
        "kube-proxy",
        [str(bins["kube-proxy"]), f"--config={d / 'kube-proxy' / 'config.yaml'}", "--v=1"],
    )

    def node_ready() -> bool:
        return _condition(_api_json(node, f"/api/v1/nodes/{NODE_NAME}"), "Ready")

    # the node registers while the images CoreDNS needs are imported (its Ready time is watched)
    node_ready_at = _watch(node_ready, timeout)
    t_images = time.monotonic()
    first = ("pause", "coredns")
    import_images(node, {k: v for k, v in manifest.items() if k in first})
    cluster.wait_for(f"node {NODE_NAME} Ready", node_ready, node, state, timeout, "kubelet")
    timings["node_ready"] = round(node_ready_at(time.monotonic()) - t_containerd, 1)
    log(f"node {NODE_NAME} Ready {timings['node_ready']}s after containerd started")

    def proxy_synced() -> bool:
        url = f"http://127.0.0.1:{ports['proxy_healthz']}/healthz"
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2) as r:
            return r.status == 200

    cluster.wait_for(
        "kube-proxy /healthz (first iptables sync)", proxy_synced, node, state, timeout, "kube-proxy"
    )

    # CoreDNS starts while the other images are imported
    coredns = _render(
        "coredns.yaml", d / "coredns.yaml", COREDNS_IMAGE=manifest["coredns"]["ref"], CLUSTER_DNS=CLUSTER_DNS
    )
    r = _kubectl(node, "apply", "-f", str(coredns))
    if r.returncode != 0:
        raise NodeError(f"kubectl apply {coredns} failed: {r.stderr.strip()}")

    def coredns_ready() -> bool:
        dep = _api_json(node, "/apis/apps/v1/namespaces/kube-system/deployments/coredns")
        return dep.get("status", {}).get("readyReplicas", 0) >= 1

    coredns_ready_at = _watch(coredns_ready, timeout)
    import_images(node, {k: v for k, v in manifest.items() if k not in first})
    timings["images"] = round(time.monotonic() - t_images, 1)
    try:
        cluster.wait_for(
            "CoreDNS Ready (deployment kube-system/coredns)", coredns_ready, node, state, timeout, "kubelet"
        )
    except cluster.ClusterError as e:
        pods = _kubectl(node, "-n", "kube-system", "get", "pods", "-o", "wide").stdout
        logs = _kubectl(node, "-n", "kube-system", "logs", "deploy/coredns", "--tail=30").stdout
        raise NodeError(f"{e}\nkube-system pods:\n{pods}\ncoredns log:\n{logs}") from None
    timings["coredns_ready"] = round(coredns_ready_at(time.monotonic()) - t_containerd, 1)
    log(f"CoreDNS Ready {timings['coredns_ready']}s after containerd started")

    name = "kubernetes.default.svc.cluster.local"
    cluster.wait_for(
        f"{name} from the host through the DNS Service {CLUSTER_DNS}",
        lambda: dns_query(name) == [KUBERNETES_SVC_IP],
        node,
        state,
        timeout,
        "kube-proxy",
    )
    if dns_check:
        if "debian" in manifest:
            _pod_resolves(node, manifest["debian"]["ref"], name, timeout)
        else:
            log("no 'debian' image in the manifest: the in-pod DNS check is skipped")


def _watch(probe: Callable[[], object], timeout: float) -> Callable[[float], float]:
    """Poll probe() in a thread; the returned function gives the monotonic time it first held
    (or its argument when it has not held yet)."""
    at: list[float] = []
    threading.Thread(
        target=lambda: _wait(probe, timeout, 0.1) and at.append(time.monotonic()), daemon=True
    ).start()
    return lambda default: at[0] if at else default


def _pod_resolves(node: Node, image: str, name: str, timeout: float) -> None:
    """A short-lived pod resolves `name` through the cluster DNS (getent in the debian image)."""
    pod = "kms-node-dns-check"
    spec = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod, "namespace": "kube-system"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {NODE_LABEL[0]: NODE_LABEL[1]},
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534},
            "containers": [
                {
                    "name": "check",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["getent", "hosts", name],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }
    _kubectl(node, "-n", "kube-system", "delete", "pod", pod, "--ignore-not-found", "--wait=true")
    r = _kubectl(node, "create", "-f", "-", stdin=json.dumps(spec))
    if r.returncode != 0:
        raise NodeError(f"creating pod {pod} failed: {r.stderr.strip()}")
    phase = ""

    def finished() -> bool:
        nonlocal phase
        phase = (
            _api_json(node, f"/api/v1/namespaces/kube-system/pods/{pod}").get("status", {}).get("phase", "")
        )
        return phase in ("Succeeded", "Failed")

    state = node.load()
    cluster.wait_for(f"pod kube-system/{pod} to finish", finished, node, state, timeout, "kubelet")
    out = _kubectl(node, "-n", "kube-system", "logs", pod)
    _kubectl(node, "-n", "kube-system", "delete", "pod", pod, "--wait=true")
    if phase != "Succeeded" or KUBERNETES_SVC_IP not in out.stdout:
        raise NodeError(f"a pod could not resolve {name} (phase {phase}): {out.stdout}{out.stderr}")
    log(f"a pod resolves {name}: {out.stdout.strip()}")


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


def alive(node: Node) -> bool:
    """Whether every process of the node runs."""
    pids = node.load().get("pids", {})
    return bool(pids) and all(cluster.alive(p) for p in pids.values())


def status(node: Node) -> int:
    state = node.load()
    pids = state.get("pids", {})
    if not pids:
        print("not running")
        return 1
    ok = True
    for name, pid in pids.items():
        a = cluster.alive(pid)
        ok &= a
        print(f"{name:12} pid {pid:<8} {'running' if a else 'DEAD'}")
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
