"""Operator benchmarks: bulk apply -> Ready (100, 1,000, 10,000 datasets), memory at its peak and
idle after each burst, single apply latency, re-renders on one change, and a restart with every
dataset in scope: time back to idle, API writes (the apiserver's own count) and mapfile builds."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from kubernetes import client

from bench.common import Operator, Plane, dataset_body, log, peak_mb, rss_mb, service_body, summary, wait
from kms_operator.builders import mapfile_from_configmap

OUR_RESOURCES = {
    "mapdatasets",
    "mapservices",
    "mapjobs",
    "configmaps",
    "deployments",
    "services",
    "events",
    "ingresses",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
    "jobs",
    "networkpolicies",
}
TRIM_PERIOD = 10  # seconds between the operator's malloc_trim calls (handlers.py)


def wait_idle(operator: Operator, timeout: float) -> float:
    """Until nothing is queued or running in the operator (its kms_queued_reconciles gauge at 0,
    twice a second apart); the seconds it took."""
    t0 = time.monotonic()
    quiet = []

    def idle() -> bool:
        quiet.append(operator.metric("kms_queued_reconciles") == 0)
        return len(quiet) >= 2 and quiet[-1] and quiet[-2]

    wait(idle, "operator idle (no reconcile queued or running)", timeout, interval=0.5)
    return time.monotonic() - t0


def ready_count(plane: Plane, ns: str) -> int:
    """Ready datasets by a LIST (one-off checks; waits use Plane.ready_counter, a watch)."""
    n = 0
    for d in plane.list(ns, "mapdatasets"):
        for c in (d.get("status") or {}).get("conditions") or []:
            if c["type"] == "Ready" and c["status"] == "True":
                n += 1
    return n


def wait_ready(plane: Plane, ns: str, n: int, timeout: float) -> None:
    """Until n datasets of ns are Ready (counted from a watch; LIST-checked once at the end)."""
    counter = plane.ready_counter(ns)
    try:
        wait(lambda: counter.count >= n, f"{n} datasets Ready", timeout=timeout, interval=0.1)
    finally:
        counter.close()
    got = ready_count(plane, ns)
    if got < n:
        raise AssertionError(f"the watch counted {n} Ready datasets, a LIST {got}")


def mapfile_layers(plane: Plane, ns: str, service: str, counted: dict[str, int] | None = None) -> int:
    """Layers of the mapfile the service's status names (-1: none yet). `counted`: layer counts of
    ConfigMaps read before (immutable: a poll reads each one once)."""
    svc = plane.get(ns, "mapservices", service)
    cm_name = (svc.get("status") or {}).get("configMap")
    if not cm_name:
        return -1
    if counted is not None and cm_name in counted:
        return counted[cm_name]
    try:
        cm = plane.core.read_namespaced_config_map(cm_name, ns)
    except client.ApiException as e:  # replaced and pruned since the status was read
        if e.status == 404:
            return -1
        raise
    layers = mapfile_from_configmap(cm.data, cm.binary_data).count("\n  LAYER\n")
    if counted is not None:
        counted[cm_name] = layers
    return layers


def cpu_seconds(plane: Plane, operator: Operator) -> dict[str, float]:
    """CPU seconds (user + system) so far of the control plane's processes, the operator and
    this benchmark process: where a bulk apply's time goes on a shared machine."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = {**plane.plane.load()["pids"], "operator": operator.proc.pid}
    out = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    t = os.times()
    out["bench"] = t.user + t.system
    return out


class Timeline:
    """Every `every` seconds while a bulk apply runs: datasets created so far (by this process),
    Ready (the watch's count) and reconciled by the operator (its kms_dataset_passes_total)."""

    def __init__(self, operator: Operator, ns: str, counter, every: float = 5.0):
        self.operator, self.ns, self.counter, self.every = operator, ns, counter, every
        self.created = 0
        self.rows: list[tuple[float, int, int, int]] = []
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                passes = int(self.operator.metric("kms_dataset_passes_total", namespace=self.ns))
            except OSError:
                passes = -1
            row = (round(time.monotonic() - self.t0, 1), self.created, self.counter.count, passes)
            self.rows.append(row)
            log(f"  t={row[0]:.0f}s created {row[1]}, Ready (watch) {row[2]}, reconciled (operator) {row[3]}")

    def close(self) -> list[tuple[float, int, int, int]]:
        self.stop.set()
        return self.rows


def bulk_apply(plane: Plane, operator: Operator, n: int, path: str, timeout: float | None = None) -> dict:
    """Apply n datasets + one service selecting them; time until all Ready and n layers served."""
    ns = plane.namespace(f"bulk-{n}")
    timeout = timeout or max(120, n * 0.5)
    counter = plane.ready_counter(ns)  # from before the first create: no event is missed
    timeline = Timeline(operator, ns, counter)
    cpu0 = cpu_seconds(plane, operator)
    t0 = time.monotonic()
    plane.create(ns, "mapservices", service_body("svc", {"bulk": "yes"}))
    bodies = [dataset_body(f"d{i:05d}", path, {"bulk": "yes"}) for i in range(n)]

    def counted() -> None:
        timeline.created += 1

    plane.create_all(ns, "mapdatasets", bodies, concurrency=8, done=counted)
    t_created = time.monotonic() - t0
    log(f"  {n} datasets created in {t_created:.1f}s; waiting for Ready and {n} layers")
    try:
        wait(lambda: counter.count >= n, f"{n} datasets Ready", timeout=timeout - t_created, interval=0.1)
    finally:
        counter.close()
    t_ready = time.monotonic() - t0
    counted: dict[str, int] = {}  # mapfile ConfigMaps are immutable: each is counted once
    wait(
        lambda: mapfile_layers(plane, ns, "svc", counted) == n,
        f"mapfile with {n} layers",
        timeout=max(10, timeout - t_ready),
        interval=0.25,
    )
    t_served = time.monotonic() - t0
    assert ready_count(plane, ns) == n  # (the watch's count checked by a LIST, after the clock)
    cpu1 = cpu_seconds(plane, operator)
    cpu = {k: round(cpu1[k] - cpu0.get(k, 0.0), 1) for k in cpu1}
    log(f"  CPU seconds during it: {cpu}")
    return {
        "cpu_s": cpu,
        "n": n,
        "created_s": t_created,
        "all_ready_s": t_ready,
        "all_served_s": t_served,
        "namespace": ns,
        "timeline": timeline.close(),  # (s, created, Ready by the watch, reconciled by the operator)
    }


def single_apply(plane: Plane, ns: str, path: str, count: int = 20) -> dict:
    """Apply one dataset at a time into a namespace that already holds many; apply -> Ready."""
    lat = []
    for i in range(count):
        name = f"single-{i:03d}"
        t0 = time.monotonic()
        plane.create(ns, "mapdatasets", dataset_body(name, path, {"bulk": "yes"}))

        def ready(name=name):
            d = plane.get(ns, "mapdatasets", name)
            return any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (d.get("status") or {}).get("conditions") or []
            )

        wait(ready, f"{name} Ready", timeout=60, interval=0.02)
        lat.append(time.monotonic() - t0)
    return summary(lat)


def resync_writes(plane: Plane, operator: Operator, n: int, services: int) -> dict:
    """Restart the operator with n datasets and `services` MapServices in scope (a forced resync
    of everything): seconds from the start until it is idle again, the API writes it caused
    (apiserver_request_total) and the mapfiles it built."""
    time.sleep(3)
    before = plane.writes(OUR_RESOURCES)
    operator.stop()
    t0 = time.monotonic()
    operator.start()
    # back to idle: every dataset was reconciled again by the new process, every service had a
    # whole pass, and nothing is queued
    wait(
        lambda: operator.metric("kms_reconciles_total", kind="MapDataset") >= n,
        "resume of all datasets",
        timeout=max(120, n * 0.2),
    )
    wait(
        lambda: operator.metric("kms_service_passes_total") >= services,
        "a pass of every service",
        timeout=120,
    )
    wait_idle(operator, 120)
    resync_s = time.monotonic() - t0
    time.sleep(3)
    after = plane.writes(OUR_RESOURCES)
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    diff = {k: v for k, v in diff.items() if v}
    return {
        "n": n,
        "writes": sum(diff.values()),
        "by_verb_resource": diff,
        "resync_s": resync_s,
        "mapfile_builds": operator.metric("kms_mapfile_builds_total"),
        "operator_peak_mb": peak_mb(operator.proc.pid),
        "operator_rss_mb": rss_mb(operator.proc.pid),
    }


def rerenders(plane: Plane, operator: Operator, ns: str) -> dict:
    """One dataset changes among many: how often is each service's mapfile built?"""
    plane.create(ns, "mapservices", service_body("other", {"bulk": "no"}))
    plane.create(ns, "mapdatasets", dataset_body("other-1", "ocean/sst-sample.tif", {"bulk": "no"}))
    wait(lambda: mapfile_layers(plane, ns, "other") == 1, "second service serving its dataset", 60)
    time.sleep(3)
    before = {s: operator.metric("kms_mapfile_builds_total", service=s) for s in ("svc", "other")}
    old_hash = plane.get(ns, "mapservices", "svc")["status"]["mapfileHash"]
    plane.custom.patch_namespaced_custom_object(
        "maps.kube-mapserver.io", "v1alpha1", ns, "mapdatasets", "d00007", {"spec": {"title": "A new title"}}
    )
    wait(lambda: plane.get(ns, "mapservices", "svc")["status"]["mapfileHash"] != old_hash, "re-render", 60)
    time.sleep(3)
    after = {s: operator.metric("kms_mapfile_builds_total", service=s) for s in ("svc", "other")}
    return {s: after[s] - before[s] for s in after}


def run(
    plane: Plane, workdir, sizes: list[int], data_root, path: str, bulk_timeout: float | None = None
) -> dict:
    results: dict = {"bulk": [], "notes": []}
    # the operator's credentials as in a pod: a ServiceAccount token
    op_kubeconfig = plane.service_account_kubeconfig("kms-system", "kube-mapserver-operator")
    op = Operator(op_kubeconfig, data_root, workdir / "operator.log")
    op.start()
    try:
        big_ns = None
        for n in sizes:
            log(f"bulk apply of {n} datasets")
            r = bulk_apply(plane, op, n, path, bulk_timeout)
            r["operator_rss_mb"] = rss_mb(op.proc.pid)
            r["operator_peak_mb"] = peak_mb(op.proc.pid)  # since the start: the biggest burst so far
            r["idle_after_s"] = wait_idle(op, 300)
            time.sleep(TRIM_PERIOD + 2)  # freed memory goes back to the OS on the next trim
            r["operator_idle_mb"] = rss_mb(op.proc.pid)
            log(
                f"  all Ready {r['all_ready_s']:.1f}s, served {r['all_served_s']:.1f}s, "
                f"RSS {r['operator_rss_mb']:.0f} MB (peak {r['operator_peak_mb']:.0f}, "
                f"idle {r['operator_idle_mb']:.0f})"
            )
            results["bulk"].append(r)
            big_ns = r["namespace"] if n == 1000 or big_ns is None else big_ns
        ns = big_ns
        n_in_ns = next(r["n"] for r in results["bulk"] if r["namespace"] == ns)
        log(f"single dataset apply -> Ready with {n_in_ns} datasets in the namespace")
        results["single_apply"] = single_apply(plane, ns, path)
        log(f"  p50 {results['single_apply']['p50']:.2f}s p95 {results['single_apply']['p95']:.2f}s")
        log("re-renders when one dataset changes")
        results["rerenders"] = rerenders(plane, op, ns)
        log(f"  {results['rerenders']}")
        total = sum(r["n"] for r in results["bulk"]) + 20 + 1
        log(f"forced resync (operator restart) over {total} datasets")
        results["resync"] = resync_writes(plane, op, total, len(results["bulk"]) + 1)
        rs = results["resync"]
        log(
            f"  idle after {rs['resync_s']:.1f}s; {rs['writes']} writes {rs['by_verb_resource']}; "
            f"{rs['mapfile_builds']:.0f} mapfile builds; peak RSS {rs['operator_peak_mb']:.0f} MB"
        )
        results["operator_rss_mb"] = rss_mb(op.proc.pid)
    finally:
        op.stop()
    return results


__all__ = ["client", "run"]
