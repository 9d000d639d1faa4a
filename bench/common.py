"""Shared pieces of the benchmarks: a fresh local plane, the operator as a process, API helpers,
apiserver write counters and process memory."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml
from kubernetes import client, config

from kms_crds.kube import Kube, cr_path
from kms_crds.kube_async import AsyncKube

REPO = Path(__file__).resolve().parents[1]
PY = str(REPO / ".venv" / "bin" / "python")
GROUP, VERSION = "maps.kube-mapserver.io", "v1alpha1"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


cluster_mod = _load("kms_bench_cluster", REPO / "hack" / "cluster.py")
sample_data = _load("kms_bench_samples", REPO / "hack" / "sample_data.py")


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "mean": statistics.fmean(values),
    }


def wait(probe: Callable[[], object], what: str, timeout: float, interval: float = 0.25):
    deadline, last, start = time.monotonic() + timeout, None, time.monotonic()
    next_report = start + 10
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        if time.monotonic() > next_report:
            log(f"  ... still waiting for {what} ({time.monotonic() - start:.0f}s)")
            next_report += 10
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


RBAC_GROUP = "rbac.authorization.k8s.io"


class Plane:
    """A local control plane in a temp dir, plus API clients and the CRDs."""

    def __init__(self, workdir: Path):
        self.plane = cluster_mod.Plane(workdir / "plane")
        cluster_mod.up(self.plane, port=None, timeout=120)
        self.kubeconfig = self.plane.kubeconfig
        self.api = config.new_client_from_config(config_file=str(self.kubeconfig))
        self.api.configuration.connection_pool_maxsize = 32
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        # the product's own client for the hot paths (bulk creates, the Ready watch): the bench
        # shares the 2 cores with what it measures, so its client is the lean one too
        self.kube = Kube.from_environment(timeout=60, kubeconfig=str(self.kubeconfig), max_pending=64)
        kubectl = cluster_mod.binaries()["kubectl"]
        subprocess.run(
            [
                str(kubectl),
                f"--kubeconfig={self.kubeconfig}",
                "apply",
                "--server-side",
                "-f",
                str(REPO / "crds"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [
                str(kubectl),
                f"--kubeconfig={self.kubeconfig}",
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
                "--timeout=60s",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def down(self) -> None:
        cluster_mod.down(self.plane)

    def namespace(self, name: str) -> str:
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return name

    def create(self, ns: str, plural: str, body: dict) -> dict:
        return self.kube.call("POST", cr_path(ns, plural), body)

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig that authenticates as a ServiceAccount (bound to cluster-admin), with a
        TokenRequest token: the operator runs in the bench as it does in a pod, on a token the
        apiserver caches, not on the admin client certificate it verifies on every request
        (~0.17 ms of apiserver CPU per call; the chart's own RBAC is tested in test_chart.py)."""
        self.kube.call("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
        sa_path = f"/api/v1/namespaces/{namespace}/serviceaccounts"
        self.kube.call("POST", sa_path, {"metadata": {"name": name}})
        binding = {
            "metadata": {"name": f"{namespace}-{name}"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }
        self.kube.call("POST", f"/apis/{RBAC_GROUP}/v1/clusterrolebindings", binding)
        request = {"spec": {"expirationSeconds": 4 * 3600}}
        token = self.kube.call("POST", f"{sa_path}/{name}/token", request)["status"]["token"]
        admin = yaml.safe_load(self.kubeconfig.read_text())
        cluster = admin["clusters"][0]
        config_ = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": cluster["name"], "user": name}}],
            "current-context": name,
        }
        path = self.kubeconfig.parent / f"{name}.kubeconfig"
        path.write_text(json.dumps(config_))  # (JSON is YAML)
        path.chmod(0o600)
        return path

    def create_all(
        self,
        ns: str,
        plural: str,
        bodies: list[dict],
        concurrency: int = 8,
        done: Callable[[], None] = lambda: None,
    ) -> None:
        """Create `bodies`, `concurrency` at a time, from one event loop (the product's async
        transport, kms_crds.kube_async): the bench shares the 2 cores with what it measures, and
        a urllib3 call from a thread costs ~0.4 ms more CPU (a real user's client is elsewhere)."""

        async def main() -> None:
            aio = AsyncKube(self.kube.conn, timeout=60, limit=concurrency)
            todo = iter(bodies)

            async def worker() -> None:
                for body in todo:
                    await aio.call("POST", cr_path(ns, plural), body)
                    done()

            try:
                await asyncio.gather(*(worker() for _ in range(concurrency)))
            finally:
                await aio.close()

        asyncio.run(main())

    def list(self, ns: str, plural: str) -> list[dict]:
        return [item for page in self.kube.list_pages(cr_path(ns, plural)) for item in page["items"]]

    def get(self, ns: str, plural: str, name: str) -> dict:
        return self.kube.call("GET", cr_path(ns, plural, name))

    def ready_counter(self, ns: str) -> ReadyCounter:
        return ReadyCounter(self, ns)

    def apiserver_metrics(self) -> str:
        import ssl

        pki = self.plane.dir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        port = self.plane.load()["ports"]["apiserver"]
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=ctx, timeout=30) as r:
            return r.read().decode()

    def writes(self, resources: set[str]) -> dict[str, int]:
        """apiserver_request_total of write verbs per resource (the apiserver's own count)."""
        out: dict[str, int] = {}
        pat = re.compile(r"^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$")
        for line in self.apiserver_metrics().splitlines():
            m = pat.match(line)
            if not m:
                continue
            labels = dict(kv.split("=", 1) for kv in re.findall(r'(\w+="[^"]*")', m.group(1)))
            labels = {k: v.strip('"') for k, v in labels.items()}
            if (
                labels.get("verb") in ("POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE")
                and labels.get("resource") in resources
            ):
                key = f"{labels['verb']} {labels['resource']}" + (
                    f"/{labels['subresource']}" if labels.get("subresource") else ""
                )
                out[key] = out.get(key, 0) + int(float(m.group(2)))
        return out


def _is_ready(obj: dict) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


class ReadyCounter:
    """How many MapDatasets of a namespace are Ready, kept from a watch: polling a LIST of 10,000
    objects several times a second would load the apiserver (and the 2 cores the operator runs
    on) far more than the operator under test."""

    def __init__(self, plane: Plane, ns: str):
        self.plane, self.ns = plane, ns
        self.ready: dict[str, bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"ready-{ns}")
        self._thread.start()

    @property
    def count(self) -> int:
        return sum(self.ready.values())

    def _run(self) -> None:
        kube, path = self.plane.kube, cr_path(self.ns, "mapdatasets")
        while not self._stop.is_set():
            try:
                ready, rv = {}, ""
                for page in kube.list_pages(path):
                    ready.update({d["metadata"]["name"]: _is_ready(d) for d in page["items"]})
                    rv = page["metadata"]["resourceVersion"]
                self.ready = ready
                while not self._stop.is_set():
                    for ev in kube.watch(path, {"resourceVersion": rv}, timeout_seconds=60):
                        obj = ev["object"]
                        if ev["type"] == "ERROR":
                            raise RuntimeError(obj)
                        rv = obj["metadata"]["resourceVersion"]
                        if ev["type"] == "DELETED":
                            self.ready.pop(obj["metadata"]["name"], None)
                        elif ev["type"] in ("ADDED", "MODIFIED"):
                            self.ready[obj["metadata"]["name"]] = _is_ready(obj)
                        if self._stop.is_set():
                            return
            except Exception as e:  # expired resourceVersion, dropped connection: list again
                if not self._stop.is_set():
                    log(f"  ready counter of {self.ns}: {type(e).__name__}, listing again")
                    time.sleep(1)

    def close(self) -> None:
        self._stop.set()  # (the watch ends at its next event or its server timeout)


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int) -> float:
    """Resident memory now."""
    return _status_mb(pid, "VmRSS")


def peak_mb(pid: int) -> float:
    """The most resident memory the process ever had (VmHWM)."""
    return _status_mb(pid, "VmHWM")


class Operator:
    def __init__(
        self, kubeconfig: Path, data_root: Path, logfile: Path, args: tuple[str, ...] = (), **env: str
    ):
        self.kubeconfig, self.data_root, self.logfile, self.env = kubeconfig, data_root, logfile, env
        self.args = list(args)
        self.proc: subprocess.Popen | None = None
        self.metrics_port = cluster_mod.free_port()
        self.liveness_port = cluster_mod.free_port()

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KMS_DATA_ROOT": str(self.data_root),
            "KMS_METRICS_PORT": str(self.metrics_port),
            "KMS_METRICS_ADDR": "127.0.0.1",
            **self.env,
        }
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    PY,
                    "-m",
                    "kms_operator",
                    "--liveness",
                    f"http://127.0.0.1:{self.liveness_port}/healthz",
                    *self.args,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )

        def alive():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2):
                    return True
            except OSError:
                return False

        wait(alive, "operator liveness", 60)

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(timeout=30)

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            named = line.startswith(name + "{") or line.startswith(name + " ")
            if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


def dataset_body(name: str, path: str, labels: dict[str, str], title: str | None = None) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MapDataset",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "type": "raster",
            "source": {"path": path},
            "identifier": f"bench:{name}",
            "title": title or f"Bench dataset {name}",
            "style": {"colorRamp": "viridis", "classes": 8, "range": {"min": 0, "max": 30}},
        },
    }


def service_body(name: str, selector: dict[str, str]) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MapService",
        "metadata": {"name": name},
        "spec": {"datasetSelector": {"matchLabels": selector}, "replicas": 1},
    }


def dump(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
