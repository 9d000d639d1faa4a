"""Restoring the machine to a snapshot (node_state.py) after the node: each step touches only
what the node created, by exact name (iptables rules and chains, mounts, cgroups, sysctls, paths)."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from node_common import NO_EGRESS, _run, _wait, cluster, log
from node_state import BUILDAH_PATHS, CGROUP_ROOT, _cgroup_dirs, _mounts, _sysctl_path, read_sysctls

OUR_CHAIN = re.compile(r"^(KUBE-|CNI-)")


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
