"""The machine state the node's tools touch (snapshot) and the differences between two snapshots
(diff): links, addresses, routes, iptables, mounts, cgroups, sysctls, system-wide paths and
processes."""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from pathlib import Path

from node_common import BUILD_STORAGE, _ip_json, cluster

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
