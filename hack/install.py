#!/usr/bin/env python3
"""Install the product on the local plane's real node: the chart with the images built here
(`hack/images.py`), into a namespace labelled for the `restricted` Pod Security level, with the
data and tile-cache volumes as hostPath PersistentVolumes pre-bound to their claims.

`make dev` and the end-to-end tests (tests/e2e) install it the same way.

    hack/install.py up   --kubeconfig K [--namespace NS] [--data DIR] [--tiles DIR]
    hack/install.py down --kubeconfig K [--namespace NS]
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
sys.path.insert(0, str(HACK))
import chart  # noqa: E402
import cluster  # noqa: E402

RELEASE = "kube-mapserver"  # fullname = the chart name: kube-mapserver-operator, kube-mapserver-api
NAMESPACE = "kube-mapserver"
DATA_UID = 10001  # the product image's user: the facade uploads and job pods write here
# Claims the examples (examples/data-volume.yaml, tile-cache-volume.yaml) and the chart use.
VOLUMES = {"map-data": "1Gi", "tile-cache": "1Gi"}
PSA_LABELS = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")} | {
    f"pod-security.kubernetes.io/{mode}-version": "latest" for mode in ("enforce", "audit", "warn")
}


def log(msg: str) -> None:
    print(f"[install {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@functools.cache
def kubectl_path() -> Path:
    return cluster.binaries()["kubectl"]


@dataclass
class Kubectl:
    """The pinned kubectl against one kubeconfig."""

    kubeconfig: Path

    def run(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        kubectl = str(kubectl_path())
        r = subprocess.run(
            [kubectl, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and r.returncode:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({r.returncode}): {r.stderr or r.stdout}")
        return r

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, objs: Sequence[dict]) -> None:
        self.run(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}),
        )


def wait(what: str, probe: Callable[[], object], timeout: float = 300, interval: float = 0.5) -> object:
    """Poll probe() until truthy; raise naming what was waited for."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except Exception as e:
            last = f" (last error: {type(e).__name__}: {e})"
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{last}")


def prepare_dir(path: Path, uid: int = DATA_UID) -> None:
    """Make a hostPath volume folder usable by the product's non-root pods: the tree owned by uid
    10001 (facade uploads, job and tile-cache pods write), folders at least 0755 and files at least
    0644 (MapServer, uid 33, reads); links are left alone. Only the folder itself matters: a bind
    mount's parents need no permissions."""
    path.mkdir(parents=True, exist_ok=True)
    for top, _dirs, files in os.walk(path):
        os.chown(top, uid, uid)
        os.chmod(top, stat.S_IMODE(os.stat(top).st_mode) | 0o755)
        for name in files:
            file = os.path.join(top, name)
            if os.path.islink(file):
                continue
            os.chown(file, uid, uid)
            os.chmod(file, stat.S_IMODE(os.stat(file).st_mode) | 0o644)


def volume_objects(namespace: str, dirs: dict[str, Path]) -> list[dict]:
    """One hostPath PV per claim, pre-bound (claimRef) so that only that claim can take it, and the
    claim itself (the same spec as examples/*-volume.yaml, so applying those changes nothing)."""
    objs = []
    for claim, folder in dirs.items():
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        )
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": f"{namespace}-{claim}",
                    "labels": {"kube-mapserver.io/local": namespace},
                },
                "spec": {
                    "capacity": {"storage": VOLUMES.get(claim, "1Gi")},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": str(folder), "type": "Directory"},
                    "claimRef": {"namespace": namespace, "name": claim},
                },
            }
        )
    return objs


def namespace_object(namespace: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": PSA_LABELS}}


def image_sets(manifest: dict) -> list[str]:
    """helm --set flags naming the images built here (pulled never: they are on the node)."""

    def split(ref: str) -> tuple[str, str]:
        repo, _, tag = ref.rpartition(":")
        return repo, tag

    sets = []
    for key, name in (
        ("image", "kube-mapserver"),
        ("mapserverImage", "mapserver"),
        ("mapcacheImage", "mapcache"),
    ):
        repo, tag = split(manifest[name]["ref"])
        sets += ["--set", f"{key}.repository={repo}", "--set", f"{key}.tag={tag}"]
    return [*sets, "--set", "image.pullPolicy=IfNotPresent"]


def network_policy_sets(k: Kubectl) -> list[str]:
    """helm --set flags narrowing the chart's NetworkPolicies to this node (the README's recipe):
    the apiserver's own address and port (the plane picks a free port), and DNS on 1053 too (the
    node's CoreDNS listens there, non-root, behind the Service's 53; policies see the pod port).
    The node's bridge CNI does not enforce them, but they must be right where one does."""
    slices = k.json("get", "endpointslices", "-n", "default", "-l", "kubernetes.io/service-name=kubernetes")
    addrs = sorted({a for s in slices["items"] for e in s.get("endpoints") or [] for a in e["addresses"]})
    ports = sorted({p["port"] for s in slices["items"] for p in s.get("ports") or []})
    if not addrs or not ports:
        return []
    cidrs = ",".join(f"{a}/128" if ":" in a else f"{a}/32" for a in addrs)
    return [
        "--set", f"networkPolicy.apiServer.cidrs={{{cidrs}}}",
        "--set", f"networkPolicy.apiServer.ports={{{','.join(map(str, ports))}}}",
        "--set", "networkPolicy.dns.ports={53,1053}",
    ]  # fmt: skip


def install(
    kubeconfig: Path,
    manifest: dict,
    namespace: str = NAMESPACE,
    data_dir: Path | None = None,
    tiles_dir: Path | None = None,
    extra: Sequence[str] = (),
    timeout: str = "5m",
) -> None:
    """Namespace (restricted), volumes, `helm upgrade --install --wait` with values-local.yaml."""
    k = Kubectl(kubeconfig)
    started = time.monotonic()
    k.apply([namespace_object(namespace)])
    dirs = {}
    if data_dir:
        prepare_dir(data_dir)
        dirs["map-data"] = data_dir
    if tiles_dir:
        prepare_dir(tiles_dir)
        dirs["tile-cache"] = tiles_dir
    if dirs:
        k.apply(volume_objects(namespace, dirs))
    chart.ensure_helm()
    args = [
        "upgrade", "--install", RELEASE, str(chart.CHART),
        "--namespace", namespace,
        "-f", str(chart.CHART / "values-local.yaml"),
        *image_sets(manifest),
        *network_policy_sets(k),
        # the examples bring the data claim (examples/data-volume.yaml); the chart only names it
        "--set", "data.create=false",
        "--set", "data.persistentVolumeClaim=map-data",
        "--wait", "--timeout", timeout,
        f"--kubeconfig={kubeconfig}",
        *extra,
    ]  # fmt: skip
    log(f"helm {' '.join(args[:4])} (namespace {namespace})")
    r = chart.helm(*args, check=False, timeout=600)
    if r.returncode:
        pods = k.run("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
        events = k.run("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout
        raise RuntimeError(
            f"helm install failed:\n{r.stdout}{r.stderr}\npods:\n{pods}\nevents:\n{events[-4000:]}"
        )
    log(f"installed in {time.monotonic() - started:.1f}s")


def uninstall(kubeconfig: Path, namespace: str = NAMESPACE, timeout: float = 180) -> None:
    """Delete the product's resources (the operator still runs their finalizers), then the release,
    the namespace and its volumes."""
    k = Kubectl(kubeconfig)
    for kind in ("mapjobs", "mapservices", "mapdatasets"):
        k.run("delete", kind, "--all", "-n", namespace, "--wait=false", check=False)
    wait(
        f"the custom resources in {namespace} to be gone",
        lambda: not k.json("get", "mapjobs,mapservices,mapdatasets", "-n", namespace)["items"],
        timeout,
    )
    chart.helm("uninstall", RELEASE, "-n", namespace, "--wait", f"--kubeconfig={kubeconfig}", check=False)
    k.run("delete", "namespace", namespace, "--wait=true", "--timeout=180s", check=False)
    k.run("delete", "pv", "-l", f"kube-mapserver.io/local={namespace}", check=False)


def service_ip(kubeconfig: Path, namespace: str, name: str) -> str:
    return Kubectl(kubeconfig).json("get", "service", name, "-n", namespace)["spec"]["clusterIP"]


def browser_host_rules(kubeconfig: Path, namespace: str = NAMESPACE) -> str:
    """Chromium's --host-resolver-rules for the namespace's Services: each in-cluster name
    (NAME.NAMESPACE.svc.cluster.local, as the URLs in the resources' status say) to its ClusterIP,
    which this machine routes to the node's bridge, so a browser here opens the status URLs."""
    items = Kubectl(kubeconfig).json("get", "services", "-n", namespace)["items"]
    return ", ".join(
        f"MAP {s['metadata']['name']}.{namespace}.svc.cluster.local {s['spec']['clusterIP']}"
        for s in sorted(items, key=lambda s: s["metadata"]["name"])
        if s["spec"].get("clusterIP") not in (None, "", "None")
    )


def admin_password(kubeconfig: Path, namespace: str = NAMESPACE) -> str:
    secret = Kubectl(kubeconfig).json("get", "secret", f"{RELEASE}-admin", "-n", namespace)
    return base64.b64decode(secret["data"]["password"]).decode()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["up", "down"])
    p.add_argument("--kubeconfig", type=Path, required=True)
    p.add_argument("--namespace", default=NAMESPACE)
    p.add_argument("--data", type=Path)
    p.add_argument("--tiles", type=Path)
    a = p.parse_args()
    if a.command == "down":
        uninstall(a.kubeconfig, a.namespace)
        return 0
    import images

    install(a.kubeconfig, images.build(), a.namespace, a.data, a.tiles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
