"""Facade memory with N datasets the operator has processed (statuses and managed fields as in a
cluster): the objects as the cache holds them (with and without `slim`) and the facade's RSS.

    .venv/bin/python -m bench.facade_memory [N]     (default 10,000; a fresh local plane)
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import httpx

from bench.common import PY, REPO, Operator, Plane, cluster_mod, dataset_body, rss_mb, service_body, wait
from bench.operator_bench import wait_ready
from kms_api.cache import slim


def _samples(root: Path) -> None:
    spec = importlib.util.spec_from_file_location("sample_data", REPO / "hack" / "sample_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.write_samples(root)


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    work = Path(tempfile.mkdtemp(prefix="kms-facade-mem-"))
    data_root = work / "data"
    _samples(data_root)
    plane = Plane(work)
    try:
        ns = plane.namespace("mem")
        op = Operator(plane.kubeconfig, data_root, work / "operator.log", args=("--namespace", ns))
        op.start()
        plane.create(ns, "mapservices", service_body("svc", {"rss": "yes"}))
        bodies = [dataset_body(f"r{i:05d}", "ocean/sst-sample.tif", {"rss": "yes"}) for i in range(n)]
        plane.create_all(ns, "mapdatasets", bodies, concurrency=16)
        wait_ready(plane, ns, n, timeout=900)
        op.stop()
        raw = json.dumps({"items": plane.list(ns, "mapdatasets")})
        for label, keep in (("as listed", lambda o: o), ("slimmed", slim)):
            gc.collect()
            tracemalloc.start()
            held = [keep(o) for o in json.loads(raw)["items"]]
            size, _ = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(f"[facade-memory] {n} datasets held {label}: {size / 1e6:.1f} MB", flush=True)
            del held
        env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig), "KMS_NAMESPACE": ns}
        port = cluster_mod.free_port()
        with open(work / "facade.log", "ab") as out:
            proc = subprocess.Popen(
                [PY, "-m", "kms_api", "--host", "127.0.0.1", "--port", str(port)],
                env={**env, "KMS_DATA_ROOT": str(data_root)},
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:

            def synced() -> bool:
                try:
                    comps = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["components"]
                except (httpx.HTTPError, ValueError, KeyError):
                    return False
                return any(
                    c["name"] == "cache" and c["status"] == "ok" and str(n) in c["detail"] for c in comps
                )

            wait(synced, f"facade cache holding {n} datasets", 300)
            time.sleep(3)
            print(f"[facade-memory] facade RSS with {n} datasets: {rss_mb(proc.pid):.0f} MB (target 150)")
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    finally:
        plane.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
