#!/usr/bin/env python3
"""`make dev`: bring the local control plane up, then run the product's processes in the
foreground (each added here as the product grows); Ctrl-C stops everything, plane included."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster

REPO = Path(__file__).resolve().parent.parent


DATA_ROOT = REPO / ".kms" / "data"
PY = str(REPO / ".venv" / "bin" / "python")
MAPSERVER_PORT = 8088
TILES_PORT = 8089
FACADE_PORT = 8000
ADMIN_PASSWORD_FILE = REPO / ".kms" / "admin-password"


def product_processes(kubeconfig: Path) -> list[tuple[str, list[str]]]:
    """(name, argv) of the product's own processes, all on loopback."""
    return [
        ("operator", [PY, "-m", "kms_operator", "--liveness", "http://127.0.0.1:8081/healthz"]),
        ("facade", [PY, "-m", "kms_api", "--host", "127.0.0.1", "--port", str(FACADE_PORT)]),
        ("local-runner", [PY, str(REPO / "hack" / "local_runner.py"), "--kubeconfig", str(kubeconfig)]),
        (
            "local-mapserver",
            [
                PY,
                str(REPO / "hack" / "local_mapserver.py"),
                "--kubeconfig",
                str(kubeconfig),
                "--port",
                str(MAPSERVER_PORT),
            ],
        ),
        (
            "local-tilecache",
            [
                PY,
                str(REPO / "hack" / "local_tilecache.py"),
                "--kubeconfig",
                str(kubeconfig),
                "--port",
                str(TILES_PORT),
            ],
        ),
    ]


def ensure_admin(env: dict) -> str:
    """An `admin` user for the facade, with a generated password kept in .kms/admin-password."""
    if ADMIN_PASSWORD_FILE.exists():
        password = ADMIN_PASSWORD_FILE.read_text().strip()
    else:
        password = secrets.token_urlsafe(18)
        ADMIN_PASSWORD_FILE.parent.mkdir(parents=True, exist_ok=True)
        ADMIN_PASSWORD_FILE.write_text(password + "\n")
        ADMIN_PASSWORD_FILE.chmod(0o600)
    for verb in ("add", "reset"):  # reset when it exists (a fresh plane has no users Secret)
        r = subprocess.run(
            [PY, "-m", "kms_api", "user", verb, "admin", "--role", "admin", "--password-stdin"],
            input=password,
            text=True,
            env=env,
            capture_output=True,
        )
        if r.returncode == 0:
            return password
    raise RuntimeError(f"could not create the facade's admin user: {r.stderr.strip()[-500:]}")


def _host_volume(owner: str, claim: str, path: Path) -> str:
    """A hostPath PV bound to PVC `claim` in `default` (pods of the local plane never really run:
    the local servers and job runner map the PVC to `path`)."""
    return f"""
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {owner}-{claim}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {{path: {path}}}
  claimRef: {{namespace: default, name: {claim}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {claim}, namespace: default}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  volumeName: {owner}-{claim}
  resources: {{requests: {{storage: 1Gi}}}}
"""


def install(kubeconfig: Path, data_root: Path = DATA_ROOT, owner: str = "kms-dev") -> None:
    """CRDs, the sample data and hostPath volumes `map-data` (the data) and `tile-cache` (next to
    it) in `default` for the examples."""
    kubectl = [str(cluster.binaries()["kubectl"]), f"--kubeconfig={kubeconfig}"]
    subprocess.run(
        [*kubectl, "apply", "--server-side", "-f", str(REPO / "crds")], check=True, stdout=subprocess.DEVNULL
    )
    subprocess.run(
        [*kubectl, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"], check=True
    )
    subprocess.run(
        [PY, str(REPO / "hack" / "sample_data.py"), str(data_root)], check=True, stdout=subprocess.DEVNULL
    )
    tile_cache = data_root.parent / "tile-cache"
    tile_cache.mkdir(parents=True, exist_ok=True)
    volumes = (("map-data", data_root), ("tile-cache", tile_cache))
    pv = "---".join(_host_volume(owner, claim, path) for claim, path in volumes)
    subprocess.run(
        [*kubectl, "apply", "--server-side", f"--field-manager={owner}", "-f", "-"],
        input=pv,
        text=True,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", type=Path, default=cluster.DEFAULT_DIR)
    a = p.parse_args()
    plane = cluster.Plane(a.dir.resolve())
    # SIGTERM (kill, timeout, an IDE's stop button) cleans up like Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        cluster.up(plane, port=None, timeout=120)
    except cluster.ClusterError as e:
        cluster.log(f"ERROR: {e}")
        return 1
    procs: list[tuple[str, subprocess.Popen]] = []
    env_kube = {
        "KUBECONFIG": str(plane.kubeconfig),
        "KMS_DATA_ROOT": str(DATA_ROOT),
        "KMS_METRICS_PORT": "9090",
        "KMS_METRICS_ADDR": "127.0.0.1",
        "KMS_SERVICE_URL_TEMPLATE": f"http://127.0.0.1:{MAPSERVER_PORT}/{{namespace}}/{{name}}/",
        "KMS_TILES_URL_TEMPLATE": f"http://127.0.0.1:{TILES_PORT}/{{namespace}}/{{name}}/",
        "KMS_NAMESPACE": "default",
        "KMS_DATA_PVC": "map-data",
        "KMS_OPERATOR_HEALTH_URL": "http://127.0.0.1:8081/healthz",
    }
    try:
        install(plane.kubeconfig)
        ensure_admin({**os.environ, **env_kube})
        for name, argv in product_processes(plane.kubeconfig):
            procs.append((name, subprocess.Popen(argv, env={**os.environ, **env_kube}, cwd=REPO)))
            cluster.log(f"started {name}")
        print(
            f"\nkube-mapserver dev is up.\n"
            f"  export KUBECONFIG={plane.kubeconfig}\n"
            f"  kubectl: {cluster.binaries()['kubectl']} get nodes\n"
            f"  try:     kubectl apply -f examples/ && kubectl get mapdatasets,mapservices\n"
            f"  map:     http://127.0.0.1:{MAPSERVER_PORT}/default/ocean/?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap"
            f"&LAYERS=kms_sst-sample,kms_zones-sample&STYLES=&CRS=EPSG:4326&BBOX=-90,-180,90,180"
            f"&WIDTH=512&HEIGHT=256&FORMAT=image/png&TRANSPARENT=TRUE\n"
            f"  data:    {DATA_ROOT} (the data volume of the examples)\n"
            f"  metrics: http://127.0.0.1:9090/metrics   liveness: http://127.0.0.1:8081/healthz\n"
            f"  facade:  http://127.0.0.1:{FACADE_PORT}/docs  (admin, password in .kms/admin-password)\n"
            f"Ctrl-C stops everything.\n",
            flush=True,
        )
        while True:
            for name, proc in procs:
                if proc.poll() is not None:
                    cluster.log(f"{name} exited with {proc.returncode}; stopping")
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        cluster.log("Ctrl-C: stopping")
        return 0
    finally:
        for _, proc in procs:
            proc.send_signal(signal.SIGTERM)
        for _, proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        cluster.down(plane)


if __name__ == "__main__":
    sys.exit(main())
